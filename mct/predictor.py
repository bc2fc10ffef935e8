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
from mct.evaluate import DECODE_SLACK, decode_batched, encode_prompt


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
    `config` (Config), `device` (torch.device).
    """

    def __init__(self, model, tokenizer, data_format, config=None, device: str | torch.device | None = None):
        from mct.data.format import DataFormat

        if isinstance(data_format, dict):
            data_format = DataFormat.from_dict(data_format)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.data_format = data_format
        self.config = config

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto") -> "Predictor":
        """Load a checkpoint written by `mct train`; errors (missing, truncated, foreign file) are MctError."""
        from mct.checkpoint import load_checkpoint

        resolved = resolve_device(device)
        checkpoint = load_checkpoint(path, device=resolved)
        return cls(checkpoint.model, checkpoint.tokenizer, checkpoint.data_format, checkpoint.config, resolved)

    def __repr__(self) -> str:
        return (f"Predictor(task={self.data_format.task!r}, answer_order={self.data_format.answer_order!r}, "
                f"use_steps={self.data_format.use_steps}, parameters={self.model.num_parameters()}, "
                f"device={str(self.device)!r})")

    @property
    def max_seq_len(self) -> int:
        return self.model.config.max_seq_len

    def encode(self, prompt: str) -> list[int]:
        """Token ids of a prompt; MctError for a character outside the vocabulary or a too-long prompt."""
        return encode_prompt(self.tokenizer, prompt, self.max_seq_len)

    def complete(self, prompts: str | Sequence[str], max_new_tokens: int | None = None,
                 temperature: float = 0.0, top_k: int | None = None, use_cache: bool = True,
                 batch_size: int = 256) -> str | list[str]:
        """The raw text the model writes after each prompt (steps, marker, answer in training order, `<eos>`).

        Greedy unless `temperature` > 0. `max_new_tokens` None = until `<eos>` or the context is full.
        """
        single = isinstance(prompts, str)
        prompt_list = [prompts] if single else list(prompts)
        if not prompt_list:
            return []
        if max_new_tokens is None:
            max_new_tokens = self.max_seq_len - min(len(self.encode(p)) for p in prompt_list)
        completions = decode_batched(
            self.model, self.tokenizer, prompt_list, max_new_tokens, batch_size=batch_size,
            device=self.device, use_cache=use_cache, temperature=temperature, top_k=top_k,
        )
        return completions[0] if single else completions

    def answer(self, prompts: str | Sequence[str], batch_size: int = 256) -> str | list[str]:
        """The greedy answer to each problem in natural order ("46", "-8"); "" when the output is malformed.

        A prompt without the trailing "=" gets it appended. MctError for a prompt that is not a problem
        of the model's task, holds a character outside the vocabulary, or does not fit the context.
        """
        single = isinstance(prompts, str)
        prompt_list = [self.normalize_prompt(p) for p in ([prompts] if single else list(prompts))]
        if not prompt_list:
            return []
        for prompt in prompt_list:
            self.encode(prompt)  # vocabulary and context errors first: they name the character or length
        longest_target = max(
            len(self.tokenizer.encode(self.data_format.target(self.data_format.operands_from_prompt(p))))
            for p in prompt_list
        )
        completions = self.complete(prompt_list, max_new_tokens=longest_target + DECODE_SLACK,
                                    batch_size=batch_size)
        parsed = [self.parse(c) for c in completions]
        answers = [p.answer if p.malformed is None and p.answer else "" for p in parsed]
        return answers[0] if single else answers

    def normalize_prompt(self, prompt: str) -> str:
        """`" 12+34 "` -> the prompt as the model reads it: spaces removed, the trailing "=" added if
        missing, and operands zero-padded when the model was trained on a padded format ("012+034=")."""
        prompt = prompt.strip()
        prompt = prompt if prompt.endswith("=") else prompt + "="
        self.encode(prompt)  # vocabulary and context errors first: they name the character or length
        if self.data_format.operand_width:
            prompt = self.data_format.render_prompt(prompt)
        return prompt

    def parse(self, completion: str):
        """`ParsedCompletion(answer (natural order) | None, steps, malformed reason | None)` of a completion."""
        return self.data_format.parse_completion(completion)

    @torch.no_grad()
    def explain(self, prompt: str, max_new_tokens: int | None = None, temperature: float = 0.0,
                top_k: int | None = None, top_n: int = 5) -> list[TokenChoice]:
        """Generate one token at a time and keep, for each, the `top_n` candidates with probabilities.

        Uses `model.generate_next_token(..., return_logits=True)`; probabilities are softmax(logits)
        at temperature 1, the model's own belief, whatever temperature picks the token.
        """
        ids = self.encode(prompt)
        budget = self.max_seq_len - len(ids)
        max_new_tokens = budget if max_new_tokens is None else max(0, min(max_new_tokens, budget))
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)
        top_n = max(1, min(top_n, self.tokenizer.vocab_size))
        choices: list[TokenChoice] = []
        for _ in range(max_new_tokens):
            next_token, logits = self.model.generate_next_token(
                input_ids, temperature=temperature, top_k=top_k, return_logits=True)  # [1, 1], [1, V]
            probs = torch.softmax(logits[0].float(), dim=-1)  # [V]
            token_id = int(next_token[0, 0])
            top_p, top_i = probs.topk(top_n)
            choices.append(TokenChoice(
                token=self.tokenizer.vocab[token_id], probability=float(probs[token_id]),
                candidates=[(self.tokenizer.vocab[i], float(p)) for p, i in zip(top_p.tolist(), top_i.tolist())],
            ))
            if token_id == self.tokenizer.eos_id:
                break
            input_ids = torch.cat([input_ids, torch.tensor([[token_id]], device=self.device)], dim=1)
        return choices

    def attention(self, prompt: str, max_new_tokens: int | None = None):
        """Attention maps of the prompt plus the model's own greedy completion (see mct.analysis.attention)."""
        from mct.analysis.attention import attention_maps

        return attention_maps(self.model, self.tokenizer, prompt, max_new_tokens=max_new_tokens,
                              device=self.device)
