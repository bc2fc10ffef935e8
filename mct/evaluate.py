"""Evaluation: metrics that show the hard cases, not just the average, and `evaluate_records`, which
decodes records with `mct.generation` and scores them.

`score_completions` holds all metric logic (pure: records + completion strings in, report out), so it
is tested without a model. What is decoded and scored follows the model's `step_masking_mode` (see
`mct.generation.decoding_plan`): the answer (none, mask_steps: the reference steps are supplied) or the
steps (mask_answer).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch

from mct.data.dataset import canonical_answer, check_answers, record_place
from mct.errors import MctError
from mct.generation import (
    Progress,
    decode_batched,
    decoding_mode,
    decoding_plan,
    fit_context,
    max_new_tokens_for,
    written_steps,
)
from mct.tokenizer import STEP_SEP

CARRY_TASKS = ("add", "sub")
OPERATOR_TASKS = {"+": "add", "-": "sub", "*": "mul"}


# ---------------------------------------------------------------------------------------------
# metrics


@dataclass
class EvalReport:
    """What `mct eval` shows. Accuracies are shares in [0, 1]; keys of the grouped tables are strings.

    - `scored`: what `exact_match` (the primary metric, also the one training stops on) measures:
      "answer" (step_masking_mode none or mask_steps) or "steps" (mask_answer: every step right).
      `steps_supplied`: the reference steps were given to the model (mask_steps), so they are not scored.
    - `per_digit_accuracy[p]`: share of problems whose answer digit at position p (0 = units, counted
      over the expected answer's digits) is right; `per_digit_count[p]` problems have that digit (empty
      when the answer is not scored).
    - `by_digits["a,b"]`, `by_length["L"]` (L = the longer operand's digits), `by_carries["k"]`,
      `by_max_carry_chain["k"]`: `{"n", "exact_match"}`.
    - `steps` (when the model writes steps): `steps_correct` share and `steps_wrong_count`; under none
      also `right_answer_after_wrong_steps` count and its share of the problems whose steps were wrong,
      and `wrong_answer_after_right_steps`.
    - `malformed`: `{"count", "by_reason"}`; malformed outputs also count as wrong.
    - `errors`: every wrong problem as `{"prompt", "expected", "got", "completion", "malformed"}`.
    """

    n: int
    correct: int
    exact_match: float
    per_digit_accuracy: dict[int, float]
    per_digit_count: dict[int, int]
    by_digits: dict[str, dict]
    by_length: dict[str, dict]
    by_carries: dict[str, dict]
    by_max_carry_chain: dict[str, dict]
    steps: dict | None
    malformed: dict
    task: str
    answer_order: str
    errors: list[dict] = field(default_factory=list)
    step_masking_mode: str = "none"
    scored: str = "answer"
    steps_supplied: bool = False
    sub_complement: bool = False  # sub answers (and steps) in ten's complement, the sign last

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


def score_completions(data_format, records: Sequence, completions: Sequence[str],
                      step_masking_mode: str | None = "none") -> EvalReport:
    """All metrics of `completions[i]`: the text a model generated after `records[i].prompt` (after the
    supplied reference steps under mask_steps).

    `data_format` is the model's `DataFormat` (it parses completions and recomputes operands, carries
    and the expected steps); records need only `prompt` and `answer` (natural order); a record's
    `meta` digits/carries are used when present. `step_masking_mode` (the model's training) decides what
    is scored: the answer (none, mask_steps) or the steps (mask_answer). Raises MctError when there
    are no records or a prompt does not parse.
    """
    if len(records) != len(completions):
        raise ValueError(f"{len(records)} records but {len(completions)} completions")
    if not records:
        raise MctError("there are no records to evaluate; check the data file")
    tally = _Tally(data_format, decoding_mode(data_format, step_masking_mode))
    for record, completion in zip(records, completions):
        tally.add(record, completion)
    return tally.report()


@dataclass
class _Judgement:
    """One completion judged. `hit`: what is scored is right; `steps_ok`: the written steps are right
    (False when the model writes none); `expected` / `got`: what an error row shows."""

    hit: bool
    steps_ok: bool
    malformed: str | None
    expected: str | None
    got: str | None


class _Tally:
    """The counts behind an `EvalReport`, one judged completion at a time (`add`), then `report()`."""

    def __init__(self, data_format, mode: str):
        self.data_format, self.mode = data_format, mode
        self.steps_only = mode == "mask_answer"  # the steps are scored, no answer is written
        self.writes_steps = bool(getattr(data_format, "use_steps", False)) and mode != "mask_steps"
        self.n = self.correct = 0
        self.digit_hits: dict[int, int] = defaultdict(int)
        self.digit_total: dict[int, int] = defaultdict(int)
        self.groups: dict[str, dict[str, list[int]]] = {
            name: defaultdict(list) for name in ("by_digits", "by_length", "by_carries", "by_max_carry_chain")}
        self.malformed_reasons: dict[str, int] = defaultdict(int)
        self.steps_right = self.right_after_wrong = self.wrong_after_right = 0
        self.errors: list[dict] = []

    def add(self, record, completion: str) -> None:
        operands = self.data_format.operands_from_prompt(record.prompt)
        judged = self._judge(record, completion, operands)
        self.n += 1
        self.correct += judged.hit
        self._group(record, operands, judged.hit)
        if judged.malformed is not None:
            self.malformed_reasons[judged.malformed] += 1
        if self.writes_steps:
            self.steps_right += judged.steps_ok
            self.right_after_wrong += judged.hit and not judged.steps_ok
            self.wrong_after_right += judged.steps_ok and not judged.hit
        if not judged.hit:
            self.errors.append({"prompt": record.prompt, "expected": judged.expected,
                                "got": judged.got if judged.got is not None else completion,
                                "completion": completion, "malformed": judged.malformed})

    def _judge(self, record, completion: str, operands) -> _Judgement:
        expected_steps = _expected_steps(self.data_format, operands) if self.writes_steps else None
        if self.steps_only:
            steps, malformed = written_steps(completion)
            hit = steps == expected_steps
            return _Judgement(hit, hit, malformed, "".join(s + STEP_SEP for s in expected_steps), completion)
        parsed = self.data_format.parse_completion(completion)
        expected = canonical_answer(str(record.answer)) or str(record.answer)  # "046" is 46
        got = parsed.answer if parsed.malformed is None else None
        self._count_digits(expected, got)
        steps_ok = self.writes_steps and list(parsed.steps) == expected_steps
        return _Judgement(got is not None and got == expected, steps_ok, parsed.malformed, expected, got)

    def _count_digits(self, expected: str, got: str | None) -> None:
        """Per answer digit, counted from the least significant digit of the expected answer."""
        expected_digits = _answer_digits(expected)[::-1]
        got_digits = _answer_digits(got)[::-1] if got is not None else ""
        for position, digit in enumerate(expected_digits):
            self.digit_total[position] += 1
            self.digit_hits[position] += position < len(got_digits) and got_digits[position] == digit

    def _group(self, record, operands, hit: bool) -> None:
        meta = getattr(record, "meta", None) or {}
        digits = meta.get("digits")
        if not (isinstance(digits, (list, tuple)) and len(digits) == 2):
            digits = [len(str(abs(int(x)))) for x in operands]
        self.groups["by_digits"][f"{digits[0]},{digits[1]}"].append(hit)
        self.groups["by_length"][str(max(digits))].append(hit)
        if self.data_format.task in CARRY_TASKS:
            carries, chain = _meta_int(meta, "carries"), _meta_int(meta, "max_carry_chain")
            if carries is None or chain is None:
                carries, chain = self.data_format.carry_stats(operands)
            self.groups["by_carries"][str(carries)].append(hit)
            self.groups["by_max_carry_chain"][str(chain)].append(hit)

    def _steps_summary(self) -> dict | None:
        if not self.writes_steps:
            return None
        steps_wrong = self.n - self.steps_right
        steps = {"steps_correct": self.steps_right / self.n, "steps_wrong_count": steps_wrong}
        if not self.steps_only:  # the answer is scored too: how the two relate
            steps.update({
                "right_answer_after_wrong_steps": self.right_after_wrong,
                "right_answer_after_wrong_steps_share": self.right_after_wrong / steps_wrong if steps_wrong else 0.0,
                "wrong_answer_after_right_steps": self.wrong_after_right,
            })
        return steps

    def report(self) -> EvalReport:
        return EvalReport(
            n=self.n,
            correct=self.correct,
            exact_match=self.correct / self.n,
            per_digit_accuracy={p: self.digit_hits[p] / self.digit_total[p] for p in sorted(self.digit_total)},
            per_digit_count={p: self.digit_total[p] for p in sorted(self.digit_total)},
            **{name: _finish_groups(groups) for name, groups in self.groups.items()},
            steps=self._steps_summary(),
            malformed={"count": sum(self.malformed_reasons.values()),
                       "by_reason": dict(sorted(self.malformed_reasons.items()))},
            task=self.data_format.task,
            answer_order=getattr(self.data_format, "answer_order", ""),
            errors=self.errors,
            step_masking_mode=self.mode,
            scored="steps" if self.steps_only else "answer",
            steps_supplied=self.mode == "mask_steps",
            sub_complement=bool(getattr(self.data_format, "sub_complement", False)),
        )


# ---------------------------------------------------------------------------------------------
# the workflow


def check_task(data_format, records: Sequence) -> None:
    """MctError (one line) when a record is a problem of another task than the model's: its `meta.task`
    says so, or its prompt's operator belongs to another task."""
    task = data_format.task
    for number, record in enumerate(records, start=1):
        meta = getattr(record, "meta", None) or {}
        other = meta.get("task") if isinstance(meta.get("task"), str) else None
        if other is None:
            operator = next((ch for ch in record.prompt if ch in OPERATOR_TASKS), None)
            if operator is not None and operator != data_format.operator:
                other = OPERATOR_TASKS[operator]
        if other is not None and other != task:
            article = "an" if other[0] in "aeiou" else "a"
            raise MctError(f"{record_place(record, number)}: {record.prompt!r} is {article} {other} problem but the "
                           f"model was trained on {task}; evaluate it on {task} problems")


def evaluate_records(model, tokenizer, data_format, records: Sequence, batch_size: int = 256,
                     device: str | torch.device | None = None, limit: int | None = None, use_cache: bool = True,
                     progress: Progress | None = None, step_masking_mode: str | None = "none") -> EvalReport:
    """Greedy-decode every record's prompt with `model` and score the completions.

    `step_masking_mode` is the model's training (`config.data.step_masking_mode`): under mask_steps the
    reference steps are supplied after each prompt and the answer is decoded; under mask_answer the steps
    are decoded and scored. `limit` keeps the first N records; `device` (None = where the model is) moves
    the model there. MctError when a record is a problem of another task or its answer is not the
    problem's value in the model's task (checked before decoding). `progress(done, total)` is called
    after each batch.
    """
    if limit is not None:
        if limit < 1:
            raise MctError(f"limit must be at least 1, got {limit}")
        records = list(records)[:limit]
    if not records:
        raise MctError("there are no records to evaluate; check the data file")
    check_task(data_format, records)
    check_answers(records, data_format)  # '+' records without meta.task are add or mod: known only here
    if device is not None:
        model.to(torch.device(device))
    prompts = []
    for number, record in enumerate(records, start=1):
        try:
            data_format.operands_from_prompt(record.prompt)  # scoring reads the operands too
            prompts.append(data_format.model_prompt(record.prompt))
        except MctError as exc:  # a prompt the model cannot read: say which line of which file
            raise MctError(f"{record_place(record, number)}: {exc}") from None
    fit_context(model, data_format, tokenizer, prompts, step_masking_mode)  # a length-generalising model
    budget = max_new_tokens_for(data_format, tokenizer, prompts, model.config.max_seq_len, step_masking_mode)
    inputs = [p + decoding_plan(data_format, p, step_masking_mode).supplied for p in prompts]
    completions = decode_batched(model, tokenizer, inputs, budget, batch_size=batch_size, use_cache=use_cache,
                                 progress=progress)
    return score_completions(data_format, records, completions, step_masking_mode)
