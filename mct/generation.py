"""Decoding: the KV cache, sampling, `generate` / `generate_next_token`, batched left-padded decoding,
what a model is asked and how many tokens it may write (the token budget).

Shapes (B = batch, T = sequence, n = new tokens, H = heads, Dh = head size, V = vocab):

    generate(model, input_ids [B, T], max_new_tokens, attention_mask [B, T] | None, ...) -> [B, T + n]
    generate_next_token(model, input_ids [B, T], attention_mask [B, T] | None, ...) -> [B, 1]

The model has one forward path; decoding passes it a `KVCache` (`model(new_ids, new_mask, cache=cache)`),
which keeps the keys, values and padding mask of the positions already seen. Inputs may sit on any
device: the model moves them to its own, and these functions return tokens on the device `input_ids`
came from, so a loop that concatenates them works whatever the model's device.

What the model is asked depends on how it was trained (`step_masking_mode`, for formats with steps):
`none` writes steps and answer; `mask_steps` (loss on the answer only) is given the reference steps after
the prompt and writes the answer; `mask_answer` (loss on the steps only) writes the steps, which are all
that is scored. `decoding_plan` says, for one prompt, what is supplied and what the model should write.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from mct.errors import MctError
from mct.tokenizer import ANSWER_MARK, EOS, PAD, STEP_SEP

Progress = Callable[[int, int], None]  # progress(done, total)

STEP_MASKING_MODES = ("none", "mask_steps", "mask_answer")
# Extra tokens past the longest expected completion, so an over-long answer shows as wrong, not cut to fit.
DECODE_SLACK = 1


# ---------------------------------------------------------------------------------------------
# the cache and the device


class KVCache:
    """Keys, values and padding mask of the positions decoded so far, for every layer.

    keys[i], values[i]: [B, H, max_len, Dh] (keys already rotated by RoPE); mask: [B, max_len] bool
    (True = real token). Positions `[0, length)` are filled. Each buffer is allocated once, on its first
    write (keys and values with their layer's dtype, so autocast works), and a decoding step then writes
    one slot instead of copying the whole cache.
    """

    def __init__(self, num_layers: int, max_len: int):
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.mask: torch.Tensor | None = None
        self.tokens: torch.Tensor | None = None  # [B, length] the ids so far (place-value positions need them)
        self.places: torch.Tensor | None = None  # [B, length] their place ids (relative place codes need them)
        self.max_len = max_len
        self.length = 0

    def extend_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The token ids of every position so far, cached and the new `input_ids` [B, T]: [B, length + T]."""
        tokens = input_ids if self.tokens is None else torch.cat([self.tokens[:, :self.length], input_ids], 1)
        self.tokens = tokens
        return tokens

    def extend_places(self, places: torch.Tensor) -> torch.Tensor:
        """The place ids of every position so far, cached and the new `places` [B, T]: [B, length + T]."""
        self.places = places if self.places is None else torch.cat([self.places[:, :self.length], places], 1)
        return self.places

    def extend_mask(self, attention_mask: torch.Tensor | None, batch: int, new: int,
                    device: torch.device) -> torch.Tensor:
        """Record the padding mask [B, new] of the next `new` tokens (None = all real); return the mask of
        every position so far, cached and new: [B, length + new]."""
        end = self.length + new
        if end > self.max_len:
            raise MctError(f"the KV cache holds {self.max_len} positions but {end} were asked for")
        if self.mask is None:
            self.mask = torch.ones(batch, self.max_len, dtype=torch.bool, device=device)
        if attention_mask is not None:
            self.mask[:, self.length:end] = attention_mask
        return self.mask[:, :end]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v [B, H, T_new, Dh] after the filled part; return all keys/values so far [B, H, L, Dh]."""
        start, end = self.length, self.length + k.shape[2]
        if self.keys[layer] is None:
            B, H, _, Dh = k.shape
            self.keys[layer] = k.new_zeros(B, H, self.max_len, Dh)
            self.values[layer] = v.new_zeros(B, H, self.max_len, Dh)
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, new: int) -> None:
        """Mark `new` more positions as filled (after every layer has stored them)."""
        self.length += new


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's parameters (the CPU for a model without any)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def to_device(tensor: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """`tensor` on `device` (itself when it is there already); None stays None."""
    if tensor is None or tensor.device == device:
        return tensor
    return tensor.to(device)


# ---------------------------------------------------------------------------------------------
# sampling and generation


def sample(logits: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    """logits [B, V] -> token ids [B, 1]; temperature 0 = greedy (argmax), top_k keeps the k most likely."""
    if temperature < 0:
        raise MctError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None:
        if top_k < 1:
            raise MctError(f"top_k must be at least 1, got {top_k}")
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)


@torch.no_grad()
@contextlib.contextmanager
def eval_mode(model):
    """`model.eval()` inside the block; after it, every submodule's own mode back as it was (a part the caller
    had put in eval mode inside a training model stays in eval mode)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def _check_prompt(input_ids: torch.Tensor) -> None:
    if input_ids.ndim != 2 or input_ids.shape[1] == 0:
        raise MctError(f"prompts must be [batch, tokens] with at least one token, got shape {tuple(input_ids.shape)}")


def generate_next_token(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                        temperature: float = 1.0, top_k: int | None = None, return_logits: bool = False):
    """One decoding step without cache (no_grad; mode unchanged, call `model.eval()` first).

    input_ids [B, T]; attention_mask [B, T] bool or None. The next token follows each row's last real
    token (left or right padding both work). Returns next_token [B, 1], and with return_logits also the
    raw logits [B, V] it was chosen from, on the device of `input_ids`."""
    _check_prompt(input_ids)
    logits, _, _ = model(input_ids, attention_mask)  # [B, T, V] on the model's device
    if attention_mask is None:
        last = logits[:, -1]
    else:
        T = input_ids.shape[1]
        mask = attention_mask.to(logits.device).long()
        index = (mask * torch.arange(1, T + 1, device=logits.device)).argmax(-1)  # last real position
        last = logits[torch.arange(input_ids.shape[0], device=logits.device), index]
    next_token = sample(last, temperature, top_k).to(input_ids.device)
    return (next_token, last.to(input_ids.device)) if return_logits else next_token


@torch.no_grad()
def generate(model, input_ids: torch.Tensor, max_new_tokens: int, attention_mask: torch.Tensor | None = None,
             temperature: float = 0.0, top_k: int | None = None, eos_token_id: int | None = None,
             pad_token_id: int = 0, use_cache: bool = True, return_logits: bool = False):
    """Autoregressive decoding (no_grad; mode unchanged, call `model.eval()` first).

    input_ids [B, T] LEFT-padded prompts with attention_mask [B, T] bool (None = no padding). Returns
    tokens [B, T + n], n <= max_new_tokens, on the device of `input_ids`: decoding stops once every row has
    emitted eos_token_id, and after its eos a row is filled with pad_token_id. temperature 0 = greedy.
    use_cache: reuse the keys/values of earlier positions (the same tokens as recomputing everything, much
    faster for long answers). return_logits: also return the raw logits [B, n, V] each token was chosen from.
    """
    _check_prompt(input_ids)
    B, T = input_ids.shape
    if max_new_tokens < 0:
        raise MctError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    max_seq_len = model.config.max_seq_len
    if T + max_new_tokens > max_seq_len:
        raise MctError(f"prompt of {T} tokens + {max_new_tokens} new tokens exceeds the model's max_seq_len "
                       f"({max_seq_len}); ask for at most {max_seq_len - T} new tokens")
    device = model_device(model)
    if attention_mask is None:
        attention_mask = torch.ones(B, T, dtype=torch.bool, device=device)
    attention_mask = to_device(attention_mask, device).bool()
    if not bool(attention_mask[:, -1].all()):
        raise MctError("generate needs left-padded prompts: the last column of attention_mask must be all True")
    total = T + max_new_tokens
    tokens = torch.full((B, total), pad_token_id, dtype=torch.long, device=device)
    tokens[:, :T] = to_device(input_ids, device)
    mask = torch.ones(B, total, dtype=torch.bool, device=device)
    mask[:, :T] = attention_mask
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    cache = KVCache(model.config.num_layers, total) if use_cache and max_new_tokens > 0 else None
    step_logits = []
    length = T
    for _ in range(max_new_tokens):
        # with a cache only the tokens it has not seen yet: the whole prompt first, then one at a time
        start = cache.length if cache is not None else 0
        logits, _, _ = model(tokens[:, start:length], mask[:, start:length], cache=cache)
        logits = logits[:, -1]  # [B, V]
        if return_logits:
            step_logits.append(logits)
        next_token = sample(logits, temperature, top_k).squeeze(1)
        next_token = torch.where(finished, torch.full_like(next_token, pad_token_id), next_token)
        tokens[:, length] = next_token
        length += 1
        if eos_token_id is not None:
            finished |= next_token == eos_token_id
            if bool(finished.all()):
                break
    tokens = tokens[:, :length].to(input_ids.device)
    if not return_logits:
        return tokens
    vocab = model.config.vocab_size
    logits = torch.stack(step_logits, dim=1) if step_logits else torch.zeros(B, 0, vocab, device=device)
    return tokens, logits.to(input_ids.device)


# ---------------------------------------------------------------------------------------------
# what the model is asked, by step masking mode, and the token budget


def decoding_mode(data_format, step_masking_mode: str | None) -> str:
    """The step masking mode that decides what a model of `data_format` is asked: as trained for formats
    with steps, "none" without steps (there is nothing to supply or to score apart). None = "none"."""
    mode = step_masking_mode or "none"
    if mode not in STEP_MASKING_MODES:
        raise MctError(f"unknown step_masking_mode {mode!r}; use one of {', '.join(STEP_MASKING_MODES)}")
    return mode if getattr(data_format, "use_steps", False) else "none"


@dataclass(frozen=True)
class DecodingPlan:
    """One problem under a step masking mode: `supplied` is the text given after the prompt (the reference
    steps "s1|s2|" under mask_steps, else ""); `expected` is what the model should write after it (steps
    and answer under none, "#answer<eos>" under mask_steps, the steps "s1|s2|" under mask_answer)."""

    supplied: str
    expected: str


def decoding_plan(data_format, prompt: str, step_masking_mode: str | None = "none") -> DecodingPlan:
    """What is supplied and what is expected after `prompt` (a problem of the format's task, natural or
    padded); MctError when the prompt is not such a problem."""
    target = data_format.target(data_format.operands_from_prompt(prompt))
    # the target is steps + "#" + answer + "<eos>"; steps never hold the answer marker
    steps, answer = target[:target.index(ANSWER_MARK)], target[target.index(ANSWER_MARK):]
    mode = decoding_mode(data_format, step_masking_mode)
    if mode == "mask_steps":
        return DecodingPlan(supplied=steps, expected=answer)
    if mode == "mask_answer":
        return DecodingPlan(supplied="", expected=steps)
    return DecodingPlan(supplied="", expected=target)


def written_steps(completion: str) -> tuple[list[str], str | None]:
    """(steps, malformed reason | None) of a completion that should hold the steps only ("s1|s2|", what a
    mask_answer model is asked to write)."""
    text = completion.replace(PAD, "")
    stops = [i for i in (text.find(ANSWER_MARK), text.find(EOS)) if i >= 0]
    if stops:
        return text[:min(stops)].split(STEP_SEP)[:-1], "answer marker or <eos> before the steps end"
    pieces = text.split(STEP_SEP)
    return pieces[:-1], None if pieces[-1] == "" else "unfinished step"


def fit_context(model, data_format, tokenizer, prompts: Sequence[str], step_masking_mode: str | None = "none") -> None:
    """Give a model that reads any length (`reads_any_length`: relative place codes, Abacus ids, no
    positions) the context its longest problem needs: the prompt as the model reads it, the supplied
    steps and the expected completion with slack. A length-generalising model then answers numbers
    longer than its configured context allows; other models, and prompts that are not problems of the
    task (free text), are left to the usual context checks."""
    if not getattr(model, "reads_any_length", False):
        return
    needed = 0
    for prompt in prompts:
        try:
            rendered = data_format.model_prompt(prompt)
            plan = decoding_plan(data_format, rendered, step_masking_mode)
        except MctError:
            continue
        text = rendered + plan.supplied
        needed = max(needed, len(tokenizer.encode(text)) + len(tokenizer.encode(plan.expected)) + DECODE_SLACK)
    model.fit_context(needed)


def _prompt_text(prompt_or_record) -> str:
    return prompt_or_record if isinstance(prompt_or_record, str) else prompt_or_record.prompt


def max_new_tokens_for(data_format, tokenizer, prompts: Sequence, max_seq_len: int,
                       step_masking_mode: str | None = "none") -> int | list[int]:
    """The token budget for decoding `prompts` (strings, or records with a `prompt`) in the model's
    format, as `decode_batched` takes it: one for all, the longest expected completion plus a little
    slack (so an over-long answer shows as wrong, not cut to fit); under mask_answer one per prompt,
    exactly its steps, because the model never learned what follows them. Within the context. Targets
    stored in records are not used: they may be in another format."""
    lengths = [len(tokenizer.encode(decoding_plan(data_format, _prompt_text(p), step_masking_mode).expected))
               for p in prompts]
    if decoding_mode(data_format, step_masking_mode) == "mask_answer":
        return [max(1, min(n, max_seq_len - 1)) for n in lengths]
    return max(1, min(max(lengths) + DECODE_SLACK, max_seq_len - 1))


# ---------------------------------------------------------------------------------------------
# batched decoding of text prompts


def encode_prompt(tokenizer, prompt: str, max_seq_len: int) -> list[int]:
    """Token ids of `prompt`; MctError if a character is not in the vocabulary or it leaves no room to answer."""
    ids = tokenizer.encode(prompt)
    if not ids:
        raise MctError("empty prompt; pass a problem such as '12+34='")
    if len(ids) >= max_seq_len:
        raise MctError(
            f"prompt {prompt!r} is {len(ids)} tokens but the model's context (max_seq_len) is {max_seq_len}, "
            "which leaves no room for an answer; use a shorter prompt or a model with a longer context"
        )
    return ids


def decode_completion(tokenizer, ids: list[int]) -> str:
    """Text of generated ids, up to and including the first `<eos>`; pads dropped."""
    if tokenizer.eos_id in ids:
        ids = ids[: ids.index(tokenizer.eos_id) + 1]
    return tokenizer.decode(ids)


@torch.no_grad()
def decode_batched(model, tokenizer, prompts: Sequence[str], max_new_tokens: int | Sequence[int],
                   batch_size: int = 256, use_cache: bool = True, progress: Progress | None = None,
                   temperature: float = 0.0, top_k: int | None = None) -> list[str]:
    """Completion text after each prompt, in the order of `prompts` (greedy unless temperature > 0).

    Prompts are sorted by length and left-padded per batch (`input_ids [B, T]`, `attention_mask [B, T]`
    bool), so little compute goes to padding; position ids come from the mask, so a padded prompt
    decodes exactly as it would alone. `max_new_tokens` is one budget for all, or one per prompt (a
    completion is cut at its own); it is cut to what the context leaves. A completion ends at the first
    `<eos>` (included in the text). The model runs in eval mode (restored after) on its own device.
    `progress(done, total)` is called after each batch.
    """
    if batch_size < 1:
        raise MctError(f"batch_size must be at least 1, got {batch_size}")
    budgets = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    if len(budgets) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(budgets)} token budgets")
    if any(budget < 1 for budget in budgets):
        raise MctError(f"max_new_tokens must be at least 1, got {min(budgets)}")
    max_seq_len = model.config.max_seq_len
    encoded = [encode_prompt(tokenizer, p, max_seq_len) for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    completions: list[str] = [""] * len(encoded)
    with eval_mode(model):
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            width = max(len(encoded[i]) for i in chunk)
            input_ids = torch.full((len(chunk), width), tokenizer.pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(chunk), width), dtype=torch.bool)
            for row, i in enumerate(chunk):
                ids = encoded[i]
                input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
                attention_mask[row, width - len(ids):] = True
            new_tokens = min(max(budgets[i] for i in chunk), max_seq_len - width)
            output = model.generate(
                input_ids, new_tokens, attention_mask=attention_mask, temperature=temperature, top_k=top_k,
                eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id, use_cache=use_cache,
            )
            generated = output[:, width:].tolist()
            for row, i in enumerate(chunk):
                completions[i] = decode_completion(tokenizer, generated[row][:budgets[i]])
            if progress is not None:
                progress(min(start + batch_size, len(order)), len(order))
    return completions
