"""Evaluation: batched greedy decoding and metrics that show the hard cases, not just the average.

`score_completions` holds all metric logic (pure: records + completion strings in, report out), so it
is tested without a model. `decode_batched` turns prompts into completions with a model, and
`evaluate_records` joins the two.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch

from mct.errors import MctError

Progress = Callable[[int, int], None]  # progress(done, total)

CARRY_TASKS = ("add", "sub")
# Extra tokens past the longest expected target, so an over-long answer shows as wrong, not cut to fit.
DECODE_SLACK = 1


# ---------------------------------------------------------------------------------------------
# decoding


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


def _decode_completion(tokenizer, ids: list[int]) -> str:
    """Text of generated ids, up to and including the first `<eos>`; pads dropped."""
    if tokenizer.eos_id in ids:
        ids = ids[: ids.index(tokenizer.eos_id) + 1]
    return tokenizer.decode(ids)


@torch.no_grad()
def decode_batched(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 256,
                   device: str | torch.device = "cpu", use_cache: bool = True,
                   progress: Progress | None = None, temperature: float = 0.0,
                   top_k: int | None = None) -> list[str]:
    """Completion text after each prompt, in the order of `prompts` (greedy unless temperature > 0).

    Prompts are sorted by length and left-padded per batch (`input_ids [B, T]`, `attention_mask [B, T]`
    bool), so little compute goes to padding; position ids come from the mask, so a padded prompt
    decodes exactly as it would alone. `max_new_tokens` is cut to what the context leaves. A completion
    ends at the first `<eos>` (included in the text). `progress(done, total)` is called after each batch.
    """
    if batch_size < 1:
        raise MctError(f"--batch-size must be at least 1, got {batch_size}")
    if max_new_tokens < 1:
        raise MctError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    device = torch.device(device)
    max_seq_len = model.config.max_seq_len
    encoded = [encode_prompt(tokenizer, p, max_seq_len) for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    completions: list[str] = [""] * len(encoded)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            width = max(len(encoded[i]) for i in chunk)
            input_ids = torch.full((len(chunk), width), tokenizer.pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(chunk), width), dtype=torch.bool)
            for row, i in enumerate(chunk):
                ids = encoded[i]
                input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
                attention_mask[row, width - len(ids):] = True
            new_tokens = min(max_new_tokens, max_seq_len - width)
            output = model.generate(
                input_ids.to(device), new_tokens, attention_mask=attention_mask.to(device),
                temperature=temperature, top_k=top_k, eos_token_id=tokenizer.eos_id,
                pad_token_id=tokenizer.pad_id, use_cache=use_cache,
            )
            generated = output[:, width:].tolist()
            for row, i in enumerate(chunk):
                completions[i] = _decode_completion(tokenizer, generated[row])
            if progress is not None:
                progress(min(start + batch_size, len(order)), len(order))
    finally:
        model.train(was_training)
    return completions


# ---------------------------------------------------------------------------------------------
# metrics


@dataclass
class EvalReport:
    """What `mct eval` shows. Accuracies are shares in [0, 1]; keys of the grouped tables are strings.

    - `per_digit_accuracy[p]`: share of problems whose answer digit at position p (0 = units, counted
      over the expected answer's digits) is right; `per_digit_count[p]` problems have that digit.
    - `by_digits["a,b"]`, `by_carries["k"]`, `by_max_carry_chain["k"]`: `{"n", "exact_match"}`.
    - `steps` (step-trained formats only): `steps_correct` share, `right_answer_after_wrong_steps`
      count and its share of the problems whose steps were wrong, `wrong_answer_after_right_steps`.
    - `malformed`: `{"count", "by_reason"}`; malformed outputs also count as wrong.
    - `errors`: every wrong problem as `{"prompt", "expected", "got", "completion", "malformed"}`.
    """

    n: int
    correct: int
    exact_match: float
    per_digit_accuracy: dict[int, float]
    per_digit_count: dict[int, int]
    by_digits: dict[str, dict]
    by_carries: dict[str, dict]
    by_max_carry_chain: dict[str, dict]
    steps: dict | None
    malformed: dict
    task: str
    answer_order: str
    errors: list[dict] = field(default_factory=list)

    def to_dict(self, include_errors: bool = False) -> dict:
        """Plain JSON-able data; the (possibly long) error list only when asked."""
        data = asdict(self)
        data["per_digit_accuracy"] = {str(k): v for k, v in self.per_digit_accuracy.items()}
        data["per_digit_count"] = {str(k): v for k, v in self.per_digit_count.items()}
        data["n_errors"] = len(self.errors)
        if not include_errors:
            del data["errors"]
        return data


def _answer_digits(answer: str) -> str:
    """The digits of a natural answer without its sign ("-123" -> "123")."""
    return answer.lstrip("-+")


def _group_key_sort(key: str):
    return tuple(int(part) if part.lstrip("-").isdigit() else part for part in key.split(","))


def _finish_groups(groups: dict[str, list[int]]) -> dict[str, dict]:
    return {
        key: {"n": len(hits), "exact_match": sum(hits) / len(hits)}
        for key, hits in sorted(groups.items(), key=lambda kv: _group_key_sort(kv[0]))
    }


def _expected_steps(data_format, operands) -> list[str]:
    """The steps the model's own format writes for `operands` (a data set's steps may use another format)."""
    return list(data_format.parse_completion(data_format.target(operands)).steps)


def _meta_int(meta: dict, key: str):
    value = meta.get(key) if meta else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def score_completions(data_format, records: Sequence, completions: Sequence[str]) -> EvalReport:
    """All metrics of `completions[i]` (the text a model generated after `records[i].prompt`).

    `data_format` is the model's `DataFormat` (it parses completions and recomputes operands, carries
    and the expected steps); records need only `prompt` and `answer` (natural order); a record's
    `meta` digits/carries are used when present. Raises MctError when there
    are no records or a prompt does not parse.
    """
    if len(records) != len(completions):
        raise ValueError(f"{len(records)} records but {len(completions)} completions")
    if not records:
        raise MctError("there are no records to evaluate; check the data file")
    task = data_format.task
    use_steps = bool(getattr(data_format, "use_steps", False))

    correct = 0
    digit_hits: dict[int, int] = defaultdict(int)
    digit_total: dict[int, int] = defaultdict(int)
    by_digits: dict[str, list[int]] = defaultdict(list)
    by_carries: dict[str, list[int]] = defaultdict(list)
    by_chain: dict[str, list[int]] = defaultdict(list)
    malformed_reasons: dict[str, int] = defaultdict(int)
    steps_right = right_after_wrong = wrong_after_right = 0
    errors: list[dict] = []

    for record, completion in zip(records, completions):
        expected = str(record.answer)
        operands = data_format.operands_from_prompt(record.prompt)
        meta = getattr(record, "meta", None) or {}
        parsed = data_format.parse_completion(completion)
        got = parsed.answer if parsed.malformed is None else None
        hit = got is not None and got == expected
        correct += hit

        # per digit, from the least significant digit of the expected answer
        expected_digits = _answer_digits(expected)[::-1]
        got_digits = _answer_digits(got)[::-1] if got is not None else ""
        for position, digit in enumerate(expected_digits):
            digit_total[position] += 1
            digit_hits[position] += position < len(got_digits) and got_digits[position] == digit

        digits = meta.get("digits") if meta else None
        if not (isinstance(digits, (list, tuple)) and len(digits) == 2):
            digits = [len(str(abs(int(x)))) for x in operands]
        by_digits[f"{digits[0]},{digits[1]}"].append(hit)

        if task in CARRY_TASKS:
            carries, chain = _meta_int(meta, "carries"), _meta_int(meta, "max_carry_chain")
            if carries is None or chain is None:
                carries, chain = data_format.carry_stats(operands)
            by_carries[str(carries)].append(hit)
            by_chain[str(chain)].append(hit)

        if parsed.malformed is not None:
            malformed_reasons[parsed.malformed] += 1

        if use_steps:
            steps_ok = list(parsed.steps) == _expected_steps(data_format, operands)
            steps_right += steps_ok
            right_after_wrong += hit and not steps_ok
            wrong_after_right += steps_ok and not hit

        if not hit:
            errors.append({
                "prompt": record.prompt, "expected": expected,
                "got": got if got is not None else completion,
                "completion": completion, "malformed": parsed.malformed,
            })

    n = len(records)
    steps = None
    if use_steps:
        steps_wrong = n - steps_right
        steps = {
            "steps_correct": steps_right / n,
            "steps_wrong_count": steps_wrong,
            "right_answer_after_wrong_steps": right_after_wrong,
            "right_answer_after_wrong_steps_share": right_after_wrong / steps_wrong if steps_wrong else 0.0,
            "wrong_answer_after_right_steps": wrong_after_right,
        }
    return EvalReport(
        n=n,
        correct=correct,
        exact_match=correct / n,
        per_digit_accuracy={p: digit_hits[p] / digit_total[p] for p in sorted(digit_total)},
        per_digit_count={p: digit_total[p] for p in sorted(digit_total)},
        by_digits=_finish_groups(by_digits),
        by_carries=_finish_groups(by_carries),
        by_max_carry_chain=_finish_groups(by_chain),
        steps=steps,
        malformed={"count": sum(malformed_reasons.values()), "by_reason": dict(sorted(malformed_reasons.items()))},
        task=task,
        answer_order=getattr(data_format, "answer_order", ""),
        errors=errors,
    )


# ---------------------------------------------------------------------------------------------
# the workflow


def max_new_tokens_for(data_format, tokenizer, records: Sequence, max_seq_len: int) -> int:
    """Enough new tokens for the longest target of `records` in the model's format (plus a little slack),
    within the context. Targets stored in the records are not used: they may be in another format."""
    longest = max(len(tokenizer.encode(data_format.target(data_format.operands_from_prompt(r.prompt))))
                  for r in records)
    return max(1, min(longest + DECODE_SLACK, max_seq_len - 1))


def _model_prompt(data_format, prompt: str) -> str:
    """A record's prompt as the model reads it: external sets write "12+34=", padded models read "012+034="."""
    return data_format.render_prompt(prompt) if data_format.operand_width else prompt


def evaluate_records(model, tokenizer, data_format, records: Sequence, batch_size: int = 256,
                     device: str | torch.device = "cpu", limit: int | None = None, use_cache: bool = True,
                     progress: Progress | None = None) -> EvalReport:
    """Greedy-decode every record's prompt with `model` and score the completions.

    `limit` keeps the first N records; the model is moved to `device`. `progress(done, total)` is
    called after each batch.
    """
    if limit is not None:
        if limit < 1:
            raise MctError(f"--limit must be at least 1, got {limit}")
        records = list(records)[:limit]
    if not records:
        raise MctError("there are no records to evaluate; check the data file")
    device = torch.device(device)
    model.to(device)
    max_seq_len = model.config.max_seq_len
    max_new_tokens = max_new_tokens_for(data_format, tokenizer, records, max_seq_len)
    completions = decode_batched(
        model, tokenizer, [_model_prompt(data_format, r.prompt) for r in records], max_new_tokens, batch_size=batch_size,
        device=device, use_cache=use_cache, progress=progress,
    )
    return score_completions(data_format, records, completions)
