"""`mct.load("ckpt.pt")`: a trained model as a function from problems to answers, for notebooks and scripts.

    >>> predictor = mct.load("runs/add/best.pt")
    >>> predictor.answer("12+34=")          # natural order, whatever the training format
    '46'
    >>> predictor.answer(["1+1", "99+1"])   # batched; a missing '=' is added
    ['2', '101']
    >>> predictor.complete("12+34=")        # the raw text the model writes (here a reversed-answer model)
    '#64<eos>'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from mct.device import resolve_device
from mct.errors import MctError
from mct.generation import (
    decode_batched,
    decoding_mode,
    decoding_plan,
    encode_prompt,
    eval_mode,
    fit_context,
    max_new_tokens_for,
    model_device,
    written_steps,
)
from mct.tokenizer import STEP_SEP


@dataclass
class TokenChoice:
    """One generated token and the model's top candidates for that position (probabilities at T=1)."""

    token: str
    probability: float
    candidates: list[tuple[str, float]]

    def to_dict(self) -> dict:
        return {"token": self.token, "probability": self.probability,
                "candidates": [{"token": t, "probability": p} for t, p in self.candidates]}


class Predictor:
    """A model with its tokenizer, data format and config, ready to answer problems.

    Attributes: `model` (CompactTransformer, eval mode), `tokenizer`, `data_format` (DataFormat),
    `config` (Config), `device` (torch.device), `step_masking_mode` (how the model was trained, which
    decides what it is asked; see `mct.generation.decoding_plan`): under mask_steps the reference steps
    are supplied after each problem and the model writes the answer; under mask_answer it writes the
    steps only, and has no answer to give.
    """

    def __init__(self, model, tokenizer, data_format, config=None, device: str | torch.device | None = None,
                 step_masking_mode: str | None = None):
        from mct.data.format import DataFormat

        if isinstance(data_format, dict):
            data_format = DataFormat.from_dict(data_format)
        self.device = torch.device(device) if device is not None else model_device(model)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.data_format = data_format
        self.config = config
        if step_masking_mode is None and config is not None:
            step_masking_mode = config.data.step_masking_mode
        self.step_masking_mode = decoding_mode(data_format, step_masking_mode)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto") -> "Predictor":
        """Load a checkpoint written by `mct train`; errors (missing, truncated, foreign file) are MctError."""
        from mct.checkpoint import load_checkpoint

        resolved = resolve_device(device)
        checkpoint = load_checkpoint(path, device=resolved)
        return cls(checkpoint.model, checkpoint.tokenizer, checkpoint.data_format, checkpoint.config, resolved)

    def __repr__(self) -> str:
        return (f"Predictor(task={self.data_format.task!r}, answer_order={self.data_format.answer_order!r}, "
                f"use_steps={self.data_format.use_steps}, step_masking_mode={self.step_masking_mode!r}, "
                f"parameters={self.model.num_parameters()}, device={str(self.device)!r})")

    @property
    def max_seq_len(self) -> int:
        return self.model.config.max_seq_len

    def encode(self, prompt: str) -> list[int]:
        """Token ids of a prompt; MctError for a character outside the vocabulary or a too-long prompt."""
        return encode_prompt(self.tokenizer, prompt, self.max_seq_len)

    def to_tokens(self, text: str | Sequence[str], padding_side: str = "right") -> torch.Tensor:
        """Token ids of `text` exactly as written, as TransformerLens's `to_tokens` (no BOS: mct models have
        none): a string -> [1, T]; a list -> [B, T], shorter rows padded with `<pad>` on `padding_side`
        ("right", or "left" as `generate` wants); the attention mask is `tokens != tokenizer.pad_id`.
        On the model's device. `normalize_prompt` first for the text the model reads ("12+34=" -> "012+034=")."""
        if padding_side not in ("left", "right"):
            raise MctError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        rows = [self.encode(t) for t in ([text] if isinstance(text, str) else list(text))]
        if not rows:
            raise MctError("to_tokens needs at least one text")
        width = max(len(row) for row in rows)
        pad = [self.tokenizer.pad_id]
        padded = [row + pad * (width - len(row)) if padding_side == "right" else pad * (width - len(row)) + row
                  for row in rows]
        return torch.tensor(padded, dtype=torch.long, device=self.device)

    def to_str_tokens(self, tokens) -> list[str] | list[list[str]]:
        """The token strings of a text, of ids [T] / a list of ids, or of each row of ids [B, T] (pads kept):
        "12+34=#" -> ['1', '2', '+', '3', '4', '=', '#']."""
        if isinstance(tokens, str):
            tokens = self.encode(tokens)
        tokens = torch.as_tensor(tokens, dtype=torch.long)
        if tokens.ndim == 2 and tokens.shape[0] == 1:
            tokens = tokens[0]
        if tokens.ndim == 2:
            return [self.to_str_tokens(row) for row in tokens]
        if tokens.ndim != 1:
            raise MctError(f"to_str_tokens takes a text, ids [T] or [B, T]; got shape {tuple(tokens.shape)}")
        return [self.tokenizer.token_text(i) for i in tokens.tolist()]

    def supplied_steps(self, prompt: str) -> str:
        """The reference steps given to the model after `prompt` ("2+4+0=06|1+3+0=04|" under mask_steps,
        else ""). MctError under mask_steps when the prompt is not a problem of the model's task."""
        if self.step_masking_mode != "mask_steps":
            return ""
        return decoding_plan(self.data_format, prompt, self.step_masking_mode).supplied

    def _inputs_and_budget(self, prompts: list[str], max_new_tokens: int | None):
        """(what the model reads for each prompt, the token budget decode_batched takes)."""
        fit_context(self.model, self.data_format, self.tokenizer, prompts, self.step_masking_mode)
        inputs = [prompt + self.supplied_steps(prompt) for prompt in prompts]
        for prompt, text in zip(prompts, inputs):
            ids = self.encode(text)  # vocabulary and context errors first: they name the character or length
            self._check_answer_fits(prompt, len(ids))
        if max_new_tokens is not None:
            return inputs, max_new_tokens
        if self.step_masking_mode == "mask_answer":  # the steps only: the model never learned to stop
            return inputs, max_new_tokens_for(self.data_format, self.tokenizer, prompts, self.max_seq_len,
                                              self.step_masking_mode)
        return inputs, self.max_seq_len - min(len(self.encode(text)) for text in inputs)

    def _check_answer_fits(self, prompt: str, input_tokens: int) -> None:
        """MctError when a problem of the model's task leaves too little context for its full answer, so a
        long problem is refused with the limit instead of answered with a cut-off, malformed completion."""
        try:
            expected = decoding_plan(self.data_format, prompt, self.step_masking_mode).expected
        except MctError:
            return  # not a problem of this task: free text, decoded until <eos> or the context ends
        needed = input_tokens + len(self.tokenizer.encode(expected))
        if needed > self.max_seq_len:
            raise MctError(f"prompt {prompt[:40] + '...' if len(prompt) > 40 else prompt!r} needs {needed} tokens "
                           f"with its answer but the model's context (max_seq_len) is {self.max_seq_len}; use "
                           "shorter operands or a model with a longer context")

    def complete(self, prompts: str | Sequence[str], max_new_tokens: int | None = None,
                 temperature: float = 0.0, top_k: int | None = None, use_cache: bool = True,
                 batch_size: int = 256) -> str | list[str]:
        """The raw text the model writes after each prompt (steps, marker, answer in training order, `<eos>`).

        Under mask_steps the model reads the prompt plus the reference steps (`supplied_steps`), and the
        text it writes after them is returned ("#64<eos>"); under mask_answer it writes the steps only.
        Greedy unless `temperature` > 0. `max_new_tokens` None = until `<eos>` or the context is full
        (mask_answer: as many tokens as the reference steps have).
        """
        single = isinstance(prompts, str)
        prompt_list = [prompts] if single else list(prompts)
        if not prompt_list:
            return []
        inputs, budget = self._inputs_and_budget(prompt_list, max_new_tokens)
        completions = decode_batched(self.model, self.tokenizer, inputs, budget, batch_size=batch_size,
                                     use_cache=use_cache, temperature=temperature, top_k=top_k)
        return completions[0] if single else completions

    def answer(self, prompts: str | Sequence[str], batch_size: int = 256) -> str | list[str]:
        """The greedy answer to each problem in natural order ("46", "-8"); "" when the output is malformed.

        A prompt without the trailing "=" gets it appended. MctError for a prompt that is not a problem
        of the model's task, holds a character outside the vocabulary, or does not fit the context, and
        for a model trained with step_masking_mode mask_answer (it writes the steps, not the answer).
        """
        if self.step_masking_mode == "mask_answer":
            raise MctError("this model was trained with step_masking_mode 'mask_answer' (loss on the steps "
                           "only): it writes the steps, not the answer; complete() returns its steps")
        single = isinstance(prompts, str)
        prompt_list = [self.normalize_prompt(p) for p in ([prompts] if single else list(prompts))]
        if not prompt_list:
            return []
        budget = max_new_tokens_for(self.data_format, self.tokenizer, prompt_list, self.max_seq_len,
                                    self.step_masking_mode)
        completions = self.complete(prompt_list, max_new_tokens=budget, batch_size=batch_size)
        parsed = [self.parse(c) for c in completions]
        answers = [p.answer if p.malformed is None and p.answer else "" for p in parsed]
        return answers[0] if single else answers

    def normalize_prompt(self, prompt: str) -> str:
        """`" 12+34 "` -> the prompt as the model reads it: spaces removed, the trailing "=" added if
        missing (a prompt with "=" inside is left to the format's check), and operands zero-padded when the
        model was trained on a padded format ("012+034=", or "0007+1234=" when padded to the longer operand),
        or without leading zeros for a residue model ("060+060=" -> "60+60=")."""
        prompt = prompt.strip()
        if not prompt:
            raise MctError(f"the prompt is empty; write a problem like 12{self.data_format.operator}34=")
        prompt = prompt if "=" in prompt else prompt + "="  # "12+34=5" stays as typed, so its error quotes it
        fit_context(self.model, self.data_format, self.tokenizer, [prompt], self.step_masking_mode)
        if self.data_format.residue_tokens:  # "060" is no token of a residue model: render before encoding
            prompt = self.data_format.model_prompt(prompt)
        self.encode(prompt)  # vocabulary and context errors first: they name the character or length
        return self.data_format.model_prompt(prompt)

    def parse(self, completion: str):
        """`ParsedCompletion(answer (natural order) | None, steps, malformed reason | None)` of a completion."""
        return self.data_format.parse_completion(completion)

    def grade(self, prompt: str, completion: str) -> dict:
        """One completion of `prompt` judged as `mct generate` shows it: `{"prompt", "supplied", "completion",
        "scored", "answer", "steps", "malformed", "expected", "correct"}`. `scored` is "answer", or "steps"
        under mask_answer (then `expected` is the reference steps text and `answer` None); `supplied` the
        reference steps given under mask_steps. `expected` and `correct` are None for a prompt that is not a
        problem of the model's task."""
        try:
            plan = decoding_plan(self.data_format, prompt, self.step_masking_mode)
        except MctError:  # not a problem of the model's task: nothing to compare with
            plan = None
        supplied = plan.supplied if plan is not None else ""
        if self.step_masking_mode == "mask_answer":
            steps, malformed = written_steps(completion)
            answer, scored = None, "steps"
            expected = plan.expected if plan is not None else None
            correct = None if plan is None else "".join(s + STEP_SEP for s in steps) == expected
        else:
            parsed = self.parse(supplied + completion)
            steps, malformed, scored = parsed.steps, parsed.malformed, "answer"
            answer = parsed.answer if malformed is None else None
            expected = self.data_format.solve(self.data_format.operands_from_prompt(prompt)) if plan else None
            correct = None if plan is None else answer == expected
        return {"prompt": prompt, "supplied": supplied, "completion": completion, "scored": scored,
                "answer": answer, "steps": list(steps), "malformed": malformed, "expected": expected,
                "correct": correct, "note": self.beyond_training(prompt) if plan else None}

    def beyond_training(self, prompt: str) -> str | None:
        """A note when `prompt` has an operand longer than the model trained on and its positions are not
        place values (learned, RoPE, none), which do not carry over to longer numbers; else None."""
        from mct.data.format import longer_numbers_fix

        model, data = getattr(self.config, "model", None), getattr(self.config, "data", None)
        if model is None or data is None or self.data_format.task == "mod":
            return None
        if model.place_values:
            return None  # place values: longer numbers are what they are for
        longest = max(len(str(n)) for n in self.data_format.operands_from_prompt(prompt))
        if longest <= data.max_digits:
            return None
        return (f"{prompt} has an operand of {longest} digits; this model trained on {data.min_digits}-"
                f"{data.max_digits} and its positions do not carry over to longer numbers: for those, "
                f"{longer_numbers_fix(self.data_format.task)}")

    def explain(self, prompt: str, max_new_tokens: int | None = None, temperature: float = 0.0,
                top_k: int | None = None, top_n: int = 5) -> list[TokenChoice]:
        """Generate the completion `complete` gives and keep, for each token, the `top_n` candidates with
        probabilities: softmax(logits) at temperature 1, the model's own belief, whatever temperature
        picks the token."""
        inputs, budget = self._inputs_and_budget([prompt], max_new_tokens)
        ids = self.encode(inputs[0])
        budget = max(0, min(budget if isinstance(budget, int) else budget[0], self.max_seq_len - len(ids)))
        input_ids = torch.tensor([ids], dtype=torch.long)
        with eval_mode(self.model):  # as `complete` decodes
            tokens, logits = self.model.generate(input_ids, budget, temperature=temperature, top_k=top_k,
                                                 eos_token_id=self.tokenizer.eos_id, return_logits=True)
        top_n = max(1, min(top_n, self.tokenizer.vocab_size))
        choices: list[TokenChoice] = []
        for token_id, step_logits in zip(tokens[0, len(ids):].tolist(), logits[0]):  # step_logits [V]
            probs = torch.softmax(step_logits.float(), dim=-1)
            top_p, top_i = probs.topk(top_n)
            choices.append(TokenChoice(
                token=self.tokenizer.token_text(token_id), probability=float(probs[token_id]),
                candidates=[(self.tokenizer.token_text(i), float(p)) for p, i in zip(top_p.tolist(), top_i.tolist())],
            ))
        return choices

    def attention(self, prompt: str, max_new_tokens: int | None = None):
        """Attention maps of what the model reads (the prompt, plus the reference steps under mask_steps)
        and its own greedy completion (see mct.analysis.attention)."""
        from mct.analysis.attention import attention_maps

        inputs, budget = self._inputs_and_budget([prompt], max_new_tokens)
        return attention_maps(self.model, self.tokenizer, inputs[0],
                              max_new_tokens=budget if isinstance(budget, int) else budget[0])
