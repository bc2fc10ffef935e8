"""Records on disk, examples in memory, padded batches, and an endless source of training problems.

    Record      one JSONL line: prompt, answer (natural order), target, steps, meta
    Example     token ids of prompt + target and the role of each token (0 prompt, 1 step, 2 answer)
    collate_fn  examples -> input_ids / attention_mask / labels [batch, seq] for the model

Training batches themselves are built on the device by `mct.data.stream` (generated problems, through
the batch path of the format) and from files through `collate_fn`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from mct.data.format import PROMPT, strip_zeros
from mct.data.tasks import OPERATOR, TASKS, solve
from mct.errors import MctError
from mct.tokenizer import ANSWER_MARK

ROLE_PROMPT, ROLE_STEP, ROLE_ANSWER = 0, 1, 2
STEP_MASKING_MODES = ("none", "mask_steps", "mask_answer")
IGNORE_INDEX = -100


@dataclass
class Record:
    """One problem as stored in a JSONL file. `target` is None for external test sets."""

    prompt: str
    answer: str
    target: str | None = None
    steps: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    source: str | None = field(default=None, compare=False, repr=False)  # "FILE:LINE" it was read from

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "answer": self.answer, "target": self.target,
                "steps": list(self.steps), "meta": dict(self.meta)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


_WHOLE_NUMBER = re.compile(r"\s*([+-]?[0-9]+)\s*", re.ASCII)
_CHECKED_DIGITS = 4000  # longer operands are refused when the prompt is read (format.MAX_OPERAND_DIGITS)


def canonical_answer(answer: str) -> str | None:
    """The answer as `str(int)` writes it ("046", "+46", " 46 " -> "46"; "-0" -> "0"); None when it is not
    a whole number."""
    match = _WHOLE_NUMBER.fullmatch(answer)
    if match is None:
        return None
    number = strip_zeros(match.group(1))
    return "0" if number == "-0" else number


def _task_of(meta: dict, operator: str, data_format) -> tuple[str, int | None] | None:
    """(task, modulus) a record's answer is checked against: the model's format when given, else the
    record's meta.task, else its operator; None when that cannot be told ('+' is add or mod)."""
    meta_task = meta.get("task") if isinstance(meta.get("task"), str) else None
    if data_format is not None:
        if OPERATOR.get(data_format.task) != operator or meta_task not in (None, data_format.task):
            return None  # a problem of another task: `mct.evaluate.check_task` names it
        return data_format.task, data_format.modulus
    if meta_task in TASKS and OPERATOR[meta_task] == operator:
        modulus = meta.get("modulus")
        if meta_task != "mod":
            return meta_task, None
        return ("mod", modulus) if isinstance(modulus, int) and not isinstance(modulus, bool) and modulus >= 2 else None
    return {"-": ("sub", None), "*": ("mul", None)}.get(operator)


def check_answer(record: Record, where: str, data_format=None) -> None:
    """MctError when the record's answer is not the true value of its problem (see `_task_of` for which
    problem); a prompt that is not `a OP b=` is left to the reader of the prompt."""
    problem = PROMPT.match(record.prompt.strip())
    if problem is None or max(len(problem.group(1)), len(problem.group(3))) > _CHECKED_DIGITS:
        return
    a, operator, b = problem.groups()
    task = _task_of(getattr(record, "meta", None) or {}, operator, data_format)
    if task is None:
        return
    try:
        true = solve(task[0], int(a), int(b), task[1])
    except ValueError:  # a product too long for str(int): nothing a model reads, left unchecked
        return
    answer = str(record.answer).strip()
    if answer != true and canonical_answer(answer) != true:
        mod = f" mod {task[1]}" if task[0] == "mod" else ""
        raise MctError(f"{where}: answer {answer} is not {a}{operator}{b}{mod} ({true}); "
                       "fix the answer or remove the line")


def record_place(record, number: int) -> str:
    """Where an error about a record points: the file and line it was read from, else "record N"."""
    return getattr(record, "source", None) or f"record {number}"


def check_answers(records, data_format) -> None:
    """`check_answer` of every record against the model's format, naming each by `record_place`."""
    for number, record in enumerate(records, start=1):
        check_answer(record, record_place(record, number), data_format)


def _read_line(data, where: str, require_target: bool) -> Record:
    if not isinstance(data, dict):
        kind = "null" if data is None else type(data).__name__
        raise MctError(f"{where}: a record must be a JSON object, got {kind}")
    for key in ("prompt", "answer") + (("target",) if require_target else ()):
        if data.get(key) is None:
            what = f"the record's '{key}' is null" if key in data else f"the record has no '{key}' field"
            raise MctError(f"{where}: {what} (records need prompt, answer{', target' if require_target else ''}); "
                           "fix the line or regenerate with `mct gen`")
    prompt, answer, target = data["prompt"], data["answer"], data.get("target")
    if isinstance(answer, int) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(prompt, str) or not isinstance(answer, str):
        raise MctError(f"{where}: 'prompt' and 'answer' must be strings")
    number = canonical_answer(answer)
    if number is None:
        raise MctError(f"{where}: answer {answer!r} is not a whole number; write the problem's value, e.g. \"46\"")
    if target is not None and not isinstance(target, str):
        raise MctError(f"{where}: 'target' must be a string")
    if target is not None and ANSWER_MARK not in target:
        raise MctError(f"{where}: target {target!r} has no answer marker '{ANSWER_MARK}'")
    steps = data.get("steps") or []
    if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
        raise MctError(f"{where}: 'steps' must be a list of strings")
    meta = data.get("meta") or {}
    if not isinstance(meta, dict):
        raise MctError(f"{where}: 'meta' must be an object")
    return Record(prompt, number, target, steps, meta, source=where)


_BLANK = object()  # a blank line (JSON null is a line, and not a record)


def _parse_json(raw: bytes, path: Path, number: int):
    """The JSON value of one line (`_BLANK` for a blank line); a byte-order mark before it is skipped."""
    where = f"{path}:{number}"
    try:
        line = raw.decode("utf-8").removeprefix("\ufeff")  # Windows editors start a UTF-8 file with one
    except UnicodeDecodeError:
        raise MctError(f"{where} (line {number}) is not UTF-8 text; data files are JSONL written by `mct gen` (was a "
                       "checkpoint or another binary file given as data?)") from None
    if not line.strip():
        return _BLANK
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise MctError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise MctError(f"{where}: not valid JSON (nested too deeply for a record)") from None
    except ValueError:  # a number of more than 4,300 digits
        raise MctError(f"{where}: not valid JSON (a number too long to read; write answers as strings)") from None


def read_records(path: str | Path, tokenizer=None, require_target: bool = False, data_format=None) -> list[Record]:
    """Records of a JSONL file (blank lines and a byte-order mark skipped). Errors name the file and line
    number: a line that is not JSON, a missing field, (with `tokenizer`) a character outside its
    vocabulary, or an answer that is not the problem's value. Answers are read as numbers ("046" is 46).

    An answer is checked against the task of `data_format` (a model's format) when given, else of the
    record's meta.task (and meta.modulus), else of its operator; a '+' problem without either could be
    add or mod and is checked by `mct.evaluate.evaluate_records` against the model's format."""
    path = Path(path)
    if not path.is_file():
        raise MctError(f"data file {path} does not exist; create it with `mct gen` or fix the path")
    records = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            data = _parse_json(raw, path, number)
            if data is _BLANK:
                continue
            record = _read_line(data, where, require_target)
            if tokenizer is not None:
                for name in ("prompt", "target"):
                    text = getattr(record, name)
                    if text is None:
                        continue
                    try:
                        tokenizer.encode(text)
                    except MctError as exc:
                        raise MctError(f"{where}: {name}: {exc}") from None
            check_answer(record, where, data_format)
            records.append(record)
    if not records:
        raise MctError(f"data file {path} holds no records")
    return records


@dataclass
class Example:
    """Token ids of prompt + target, and each token's role: 0 prompt, 1 step (incl. '|'), 2 answer
    ('#', the answer characters and <eos>)."""

    input_ids: list[int]
    roles: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


class _FastEncoder:
    """Character -> id without the tokenizer's per-character special-token check (targets end in <eos>)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids = {tok: i for i, tok in enumerate(tokenizer.vocab) if len(tok) == 1}
        self.mark = tokenizer.token_to_id.get(ANSWER_MARK)
        self.eos = tokenizer.eos_id

    def chars(self, text: str) -> list[int]:
        if self.tokenizer.numbers:  # a run of digits is one number token: the tokenizer reads it
            return self.tokenizer.encode(text)
        try:
            return [self.ids[ch] for ch in text]
        except KeyError:
            return self.tokenizer.encode(text)  # raises MctError naming the character

    def example(self, prompt: str, steps_text: str, ordered_answer: str) -> Example:
        """Example of prompt + steps_text + '#' + ordered_answer + '<eos>'."""
        p = self.chars(prompt)
        s = self.chars(steps_text)
        a = self.chars(ANSWER_MARK + ordered_answer)
        a.append(self.eos)
        return Example(p + s + a, [ROLE_PROMPT] * len(p) + [ROLE_STEP] * len(s) + [ROLE_ANSWER] * len(a))


_ENCODERS: dict[int, _FastEncoder] = {}


def _encoder(tokenizer) -> _FastEncoder:
    enc = _ENCODERS.get(id(tokenizer))
    if enc is None or enc.tokenizer is not tokenizer:
        enc = _ENCODERS[id(tokenizer)] = _FastEncoder(tokenizer)
    return enc


def encode_example(record, tokenizer) -> Example:
    """Example of a Record (with a target) or of a (prompt, target) pair; MctError when there is no target,
    no answer marker, or a character outside the vocabulary."""
    if isinstance(record, Record):
        prompt, target = record.prompt, record.target
    else:
        prompt, target = record
    if not target:
        raise MctError(f"record {prompt!r} has no target, so it cannot be trained on; regenerate it with `mct gen`")
    mark = target.find(ANSWER_MARK)
    if mark < 0:
        raise MctError(f"target {target!r} of {prompt!r} has no answer marker '{ANSWER_MARK}'")
    enc = _encoder(tokenizer)
    p = enc.chars(prompt)
    s = enc.chars(target[:mark])
    a = tokenizer.encode(target[mark:])
    return Example(p + s + a, [ROLE_PROMPT] * len(p) + [ROLE_STEP] * len(s) + [ROLE_ANSWER] * len(a))


def collate_fn(examples: list[Example], pad_id: int = 0, step_masking_mode: str = "mask_steps",
               max_seq_len: int | None = None) -> dict:
    """Right-padded batch of examples.

    Returns `input_ids [B, T] long`, `attention_mask [B, T] bool` (True = attend, False = pad),
    `labels [B, T] long` aligned with input_ids (the model shifts): the token id where loss is taken,
    -100 elsewhere. `step_masking_mode`: "none" = every real token, "mask_steps" = the answer only
    ('#', answer, <eos>), "mask_answer" = the steps only. Examples longer than `max_seq_len` are dropped
    (never cut) and counted in `num_truncated`; MctError when none is left.
    """
    if step_masking_mode not in STEP_MASKING_MODES:
        raise MctError(f"unknown step_masking_mode {step_masking_mode!r}; use one of {', '.join(STEP_MASKING_MODES)}")
    kept = examples if max_seq_len is None else [e for e in examples if len(e.input_ids) <= max_seq_len]
    num_truncated = len(examples) - len(kept)
    if not kept:
        raise MctError(f"all {len(examples)} examples of the batch are longer than max_seq_len={max_seq_len}; "
                       "raise data.max_seq_len (and model.max_seq_len) or use shorter problems")
    if step_masking_mode == "mask_answer" and not any(ROLE_STEP in e.roles for e in kept):
        raise MctError("step_masking_mode 'mask_answer' scores the steps, and these examples have none: "
                       "use 'mask_steps' or 'none', or data with steps (data.use_steps = true)")
    import torch  # here, so that `mct gen` does not pay for importing torch

    width = max(len(e.input_ids) for e in kept)
    ids_rows, label_rows, mask_rows = [], [], []
    for e in kept:
        pad = width - len(e.input_ids)
        ids_rows.append(e.input_ids + [pad_id] * pad)
        mask_rows.append([True] * len(e.input_ids) + [False] * pad)
        if step_masking_mode == "none":
            labels = list(e.input_ids)
        else:
            wanted = ROLE_ANSWER if step_masking_mode == "mask_steps" else ROLE_STEP
            labels = [t if r == wanted else IGNORE_INDEX for t, r in zip(e.input_ids, e.roles)]
        label_rows.append(labels + [IGNORE_INDEX] * pad)
    return {
        "input_ids": torch.tensor(ids_rows, dtype=torch.long),
        "attention_mask": torch.tensor(mask_rows, dtype=torch.bool),
        "labels": torch.tensor(label_rows, dtype=torch.long),
        "num_truncated": num_truncated,
    }
