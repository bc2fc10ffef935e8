"""The batch path of `DataFormat`: operand digits -> token ids, labels and masks, as tensor operations.

The text path (`DataFormat.prompt` / `DataFormat.target`, one problem at a time, Python strings) is the
reference; this module writes exactly the same tokens for a whole batch at once, on any device, so the
training loop never runs per-example Python (a property test checks the two agree for every task and
format). A sequence is a concatenation of *segments*: a number, an operator, a step, the answer. Each
segment is a `[N, W]` token matrix with a per-row length `[N]`, and `concat` packs them left to right
with one scatter per segment, so rows of different lengths need no loop.

Operands come as digit matrices, least significant digit first (`Digits.values [N, L]`, `lengths [N]`),
so add/sub work at any length (40-digit operands and beyond); mul and mod go through int64 and accept
operands of up to 9 digits (their answers then fit in int64).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mct.errors import MctError
from mct.tokenizer import ANSWER_MARK, STEP_SEP

ROLE_PROMPT, ROLE_STEP, ROLE_ANSWER = 0, 1, 2
IGNORE_INDEX = -100
INT64_DIGITS = 18  # int64 holds every number of up to 18 digits
MULMOD_MAX_DIGITS = 9  # a 9-digit x 9-digit product still fits in int64


@dataclass
class Digits:
    """Non-negative numbers as digits, least significant first: values [N, L] long, lengths [N] long
    (the number of digits, 1 for zero). Columns at and beyond a row's length hold 0."""

    values: torch.Tensor
    lengths: torch.Tensor

    @classmethod
    def from_ints(cls, numbers, device: torch.device | str = "cpu", width: int | None = None) -> "Digits":
        """Digits of Python ints or an int64 array (any size: long ints go through their text)."""
        array = numbers if isinstance(numbers, np.ndarray) else np.asarray(numbers)  # object dtype for long ints
        if array.dtype.kind in "iu" and len(array) and int(array.max()) < 10**INT64_DIGITS:
            array = array.astype(np.int64)
            longest = len(str(int(array.max()))) if len(array) else 1
            L = max(longest, width or 0, 1)
            powers = 10 ** np.arange(min(L, INT64_DIGITS), dtype=np.int64)
            values = np.zeros((len(array), L), dtype=np.int64)
            values[:, :len(powers)] = (array[:, None] // powers[None, :]) % 10
            lengths = 1 + (array[:, None] >= powers[None, 1:]).sum(1) if len(powers) > 1 else np.ones(len(array))
        else:
            texts = [str(int(v)) for v in numbers]  # the originals: numpy may have made long ints floats
            if any(t.startswith("-") for t in texts):
                raise ValueError("Digits holds non-negative numbers only")
            L = max([len(t) for t in texts] + [width or 0, 1])
            flat = "".join(t[::-1].ljust(L, "0") for t in texts).encode("ascii")
            values = (np.frombuffer(flat, dtype=np.uint8).reshape(len(texts), L) - 48).astype(np.int64)
            lengths = np.array([len(t) for t in texts], dtype=np.int64)
        return cls(torch.as_tensor(values, device=device), torch.as_tensor(lengths, dtype=torch.long, device=device))

    def to_ints(self) -> list[int]:
        """The numbers as Python ints (for tests and the text path)."""
        rows = self.values.tolist()
        return [int("".join(str(d) for d in reversed(row[:n])) or "0") for row, n in zip(rows, self.lengths.tolist())]

    def int64(self) -> torch.Tensor:
        """[N] int64 values; the caller ensures they fit (at most 18 digits)."""
        L = min(self.values.shape[1], INT64_DIGITS)
        powers = 10 ** torch.arange(L, device=self.values.device, dtype=torch.long)
        return (self.values[:, :L] * powers).sum(1)

    def to(self, device) -> "Digits":
        return Digits(self.values.to(device, non_blocking=True), self.lengths.to(device, non_blocking=True))


def int64_digits(values: torch.Tensor, width: int) -> Digits:
    """Digits of a non-negative int64 tensor [N] whose numbers have at most `width` (<= 18) digits."""
    powers = 10 ** torch.arange(min(width, INT64_DIGITS), device=values.device, dtype=torch.long)
    return Digits((values[:, None] // powers[None, :]) % 10, 1 + (values[:, None] >= powers[None, 1:]).sum(1))


class Segments:
    """Token segments of a batch, concatenated row by row (see the module docstring)."""

    def __init__(self, n: int, device):
        self.n = n
        self.device = device
        self.parts: list[tuple[torch.Tensor, torch.Tensor, int]] = []

    def add(self, tokens: torch.Tensor, lengths: torch.Tensor | int, role: int) -> None:
        """tokens [N, W] (or [N] / an int for one token); lengths [N] or an int (<= W)."""
        if not torch.is_tensor(tokens):
            tokens = torch.full((self.n, 1), tokens, dtype=torch.long, device=self.device)
        elif tokens.dim() == 1:
            tokens = tokens[:, None]
        if not torch.is_tensor(lengths):
            lengths = torch.full((self.n,), lengths, dtype=torch.long, device=self.device)
        self.parts.append((tokens, lengths, role))

    @property
    def max_width(self) -> int:
        return sum(t.shape[1] for t, _, _ in self.parts)

    def concat(self, pad_id: int, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids [N, T] right-padded with pad_id, roles [N, T] (-1 on padding), lengths [N]).

        T = `width` (rows must fit) or the sum of the segment widths. Entries past a row's segment
        length go to a scratch column that is cut off, so there is no per-row work and no host sync; the
        results are contiguous (torch.compile guards on strides: a view without the scratch column would
        make every batch sliced from it differ from any other [N, T] tensor and recompile)."""
        T = self.max_width if width is None else width
        ids = torch.full((self.n, T + 1), pad_id, dtype=torch.long, device=self.device)
        roles = torch.full((self.n, T + 1), -1, dtype=torch.long, device=self.device)
        offset = torch.zeros(self.n, dtype=torch.long, device=self.device)
        for tokens, lengths, role in self.parts:
            W = tokens.shape[1]
            span = torch.arange(W, device=self.device)[None, :]
            columns = torch.where(span < lengths[:, None], offset[:, None] + span, T).clamp_(max=T)
            ids.scatter_(1, columns, tokens)
            roles.scatter_(1, columns, torch.full_like(tokens, role))
            offset = offset + lengths
        return ids[:, :T].contiguous(), roles[:, :T].contiguous(), offset


Width = int | torch.Tensor  # one width for the batch, or one per row ([N], within the digit matrix's columns)


def _widened(digits: Digits, width: Width) -> tuple[torch.Tensor, torch.Tensor]:
    """(values with at least `width` columns, lengths raised to `width`)."""
    if torch.is_tensor(width):
        return digits.values, torch.maximum(digits.lengths, width)
    return _pad_to(digits.values, width), digits.lengths.clamp(min=width)


def natural_tokens(digits: Digits, digit_ids: torch.Tensor, width: Width = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Most significant digit first, zero-padded on the left to `width`: (tokens [N, L'], lengths [N])."""
    values, lengths = _widened(digits, width)
    index = (lengths[:, None] - 1 - torch.arange(values.shape[1], device=values.device)[None, :]).clamp(min=0)
    return digit_ids[values.gather(1, index)], lengths


def reversed_tokens(digits: Digits, digit_ids: torch.Tensor, width: Width = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Least significant digit first, zero-padded (on the right) to `width`: (tokens [N, L'], lengths [N])."""
    values, lengths = _widened(digits, width)
    return digit_ids[values], lengths


def _strip(values: torch.Tensor) -> Digits:
    """Digits of a digit matrix whose top columns may be zero: the length is up to the top non-zero digit."""
    L = values.shape[1]
    nonzero = (values != 0) * torch.arange(1, L + 1, device=values.device)[None, :]
    return Digits(values, nonzero.max(1).values.clamp(min=1))


def _pad_to(values: torch.Tensor, L: int) -> torch.Tensor:
    return torch.nn.functional.pad(values, (0, L - values.shape[1])) if values.shape[1] < L else values


@dataclass
class Columns:
    """Column-by-column add/sub of x and y (x >= y for sub): digits and carries per column [N, L]."""

    x: torch.Tensor
    y: torch.Tensor
    carry_in: torch.Tensor
    carry_out: torch.Tensor
    digit: torch.Tensor
    count: torch.Tensor  # [N] columns of the trace: max(len x, len y)


def column_trace(x: Digits, y: Digits, subtract: bool, width: int = 0) -> Columns:
    """The school method, one column at a time for the whole batch (L vector steps); at least `width`
    columns are counted (a zero-padded format writes a step for every padded column)."""
    L = max(x.values.shape[1], y.values.shape[1], width)
    xv, yv = _pad_to(x.values, L), _pad_to(y.values, L)
    carry = torch.zeros_like(xv[:, 0])
    carry_in, carry_out, digit = [], [], []
    for i in range(L):
        total = xv[:, i] - yv[:, i] - carry if subtract else xv[:, i] + yv[:, i] + carry
        out = (total < 0).long() if subtract else (total >= 10).long()
        carry_in.append(carry)
        carry_out.append(out)
        digit.append(total + 10 * out if subtract else total - 10 * out)
        carry = out
    stack = lambda cols: torch.stack(cols, 1)  # noqa: E731
    count = torch.maximum(x.lengths, y.lengths).clamp(min=width)
    return Columns(xv, yv, stack(carry_in), stack(carry_out), stack(digit), count)


def greater_or_equal(a: Digits, b: Digits) -> torch.Tensor:
    """[N] bool: a >= b, compared on the digits (any length)."""
    L = max(a.values.shape[1], b.values.shape[1])
    diff = _pad_to(a.values, L) - _pad_to(b.values, L)
    top = ((diff != 0) * torch.arange(1, L + 1, device=diff.device)[None, :]).argmax(1)  # highest differing column
    return diff.gather(1, top[:, None]).squeeze(1) >= 0


class BatchRenderer:
    """Token ids of `prompt + target` for a batch of operands in one `DataFormat`, on `device`.

    `render(a, b)` -> dict with `input_ids [N, T]`, `roles [N, T]` (0 prompt, 1 step, 2 answer, -1 pad),
    `lengths [N]`; `labels(...)` applies a step-masking mode. Tokens are looked up in the tokenizer's
    vocabulary, so any vocabulary holding the characters works."""

    def __init__(self, data_format, tokenizer, device: torch.device | str = "cpu"):
        self.format = data_format
        self.device = torch.device(device)
        self.pad_id = tokenizer.pad_id
        self.eos_id = tokenizer.eos_id
        ids = tokenizer.token_to_id
        needed = "0123456789" + data_format.operator + "=" + ANSWER_MARK + (STEP_SEP if data_format.use_steps else "")
        missing = [ch for ch in needed if ch not in ids]
        if missing:
            raise MctError(f"the tokenizer has no token for {missing[0]!r}, which this data format writes")
        self.digit_ids = torch.tensor([ids[str(d)] for d in range(10)], dtype=torch.long, device=self.device)
        self.ids = ids
        self.residue_base = tokenizer.number_id(0) if data_format.residue_tokens else None
        if data_format.residue_tokens and tokenizer.numbers < data_format.modulus:
            raise MctError(f"the tokenizer has {tokenizer.numbers} number tokens; this format writes residues "
                           f"up to {data_format.modulus - 1}")

    def tok(self, ch: str) -> int:
        return self.ids[ch]

    # --- answers -------------------------------------------------------------------------------------
    def _answer(self, a: Digits, b: Digits, segments: Segments):
        """Natural answer (digits, negative [N] bool) and, for step formats, the steps added to `segments`."""
        task, fmt = self.format.task, self.format
        if task == "add":
            cols = column_trace(a, b, subtract=False, width=fmt.operand_width)
            values = torch.cat([cols.digit, cols.carry_out[:, -1:]], 1)
            if fmt.use_steps:
                self._column_steps(cols, "+", segments)
            return _strip(values), torch.zeros_like(a.lengths, dtype=torch.bool)
        if task == "sub" and fmt.sub_complement:  # (a - b) mod 10^w and the top column's borrow, no swap
            cols = column_trace(a, b, subtract=True, width=fmt.operand_width)
            width = torch.maximum(a.lengths, b.lengths).clamp(min=fmt.operand_width)
            borrow = cols.carry_out.gather(1, (width - 1)[:, None]).squeeze(1)
            if fmt.use_steps:
                self._column_steps(cols, "-", segments)
            return Digits(cols.digit, width), borrow.bool()
        if task == "sub":
            a_ge = greater_or_equal(a, b)
            L = max(a.values.shape[1], b.values.shape[1])
            av, bv = _pad_to(a.values, L), _pad_to(b.values, L)
            x = Digits(torch.where(a_ge[:, None], av, bv), torch.where(a_ge, a.lengths, b.lengths))
            y = Digits(torch.where(a_ge[:, None], bv, av), torch.where(a_ge, b.lengths, a.lengths))
            cols = column_trace(x, y, subtract=True, width=fmt.operand_width)
            if fmt.use_steps:
                self._column_steps(cols, "-", segments)
            answer = _strip(cols.digit)
            zero = (answer.lengths == 1) & (answer.values[:, 0] == 0)
            return answer, ~a_ge & ~zero
        for operand in (a, b):
            if operand.values.shape[1] > MULMOD_MAX_DIGITS and bool((operand.lengths > MULMOD_MAX_DIGITS).any()):
                raise MctError(f"the batch path renders {task} operands of at most {MULMOD_MAX_DIGITS} digits")
        x, y = a.int64(), b.int64()
        La, Lb = a.values.shape[1], b.values.shape[1]
        if task == "mul":
            if fmt.use_steps:
                self._mul_steps(a, x, b, segments)
            return int64_digits(x * y, La + Lb), torch.zeros_like(x, dtype=torch.bool)
        modulus = fmt.modulus
        total, residue = x + y, (x + y) % modulus
        if fmt.use_steps:
            sum_digits = int64_digits(total, max(La, Lb) + 1)
            for part in (a, "+", b, "=", sum_digits, STEP_SEP, sum_digits, "%",
                         int64_digits(torch.full_like(x, modulus), len(str(modulus))), "=",
                         int64_digits(residue, len(str(modulus))), STEP_SEP):
                if isinstance(part, str):
                    segments.add(self.tok(part), 1, ROLE_STEP)
                else:
                    self._number(segments, part, ROLE_STEP)
        return int64_digits(residue, len(str(modulus))), torch.zeros_like(x, dtype=torch.bool)

    def _number(self, segments: Segments, digits: Digits, role: int, width: Width = 0) -> None:
        if self.residue_base is not None:  # one number token (residues fit in int64)
            segments.add(self.residue_base + digits.int64(), 1, role)
            return
        tokens, n = natural_tokens(digits, self.digit_ids, width)
        segments.add(tokens, n, role)

    def _column_steps(self, cols: Columns, op: str, segments: Segments) -> None:
        """"{x_i}{op}{y_i}{op}{c_in}={c_out}{d_i}|" for each column: 9 tokens a column, `count` columns."""
        N, L = cols.x.shape
        d = self.digit_ids
        op_id, eq, sep = self.tok(op), self.tok("="), self.tok(STEP_SEP)
        const = lambda v: torch.full((N, L), v, dtype=torch.long, device=self.device)  # noqa: E731
        step = torch.stack([d[cols.x], const(op_id), d[cols.y], const(op_id), d[cols.carry_in], const(eq),
                            d[cols.carry_out], d[cols.digit], const(sep)], 2)  # [N, L, 9]
        segments.add(step.reshape(N, L * 9), 9 * cols.count, ROLE_STEP)

    def _mul_steps(self, a: Digits, x: torch.Tensor, b: Digits, segments: Segments) -> None:
        """For digit j of b (zero-padded to the operand width): from j = 1 on the partial product a * b_j
        (len(a) + 1 digits), then the running sum a * (b mod 10^(j+1)) (len(a) + len(b) digits), each least
        significant digit first, zero-padded, and followed by "|"."""
        w = self.format.operand_width
        a_len, b_len = a.lengths.clamp(min=w), b.lengths.clamp(min=w)
        a_width = max(a.values.shape[1], w)
        sum_width = a_width + max(b.values.shape[1], w)
        b_values = _pad_to(b.values, max(b.values.shape[1], w))
        total = torch.zeros_like(x)
        sep = self.tok(STEP_SEP)
        for j in range(b_values.shape[1]):
            present = (b_len > j).long()  # rows whose (padded) b has a j-th digit write these steps
            partial = x * b_values[:, j]
            total = total + partial * 10**j
            numbers = [(partial, a_width + 1, a_len + 1)] if j else []
            for number, width, length in numbers + [(total, sum_width, a_len + b_len)]:
                segments.add(self.digit_ids[int64_digits(number, width).values], length * present, ROLE_STEP)
                segments.add(sep, present, ROLE_STEP)

    # --- the whole sequence ----------------------------------------------------------------------------
    def render(self, a: Digits, b: Digits, width: int | None = None) -> dict:
        """Prompt + target of every problem (a[i], b[i]): `input_ids [N, T]`, `roles [N, T]`, `lengths [N]`.

        T = `width` (every row must fit) or the longest possible row of this batch's digit widths."""
        fmt = self.format
        a, b = a.to(self.device), b.to(self.device)
        N = a.values.shape[0]
        operand_width, answer_width = fmt.operand_width, fmt.answer_width
        if fmt.pad_to_longer:  # each row's own width: the longer operand's digits
            L = max(a.values.shape[1], b.values.shape[1])
            a, b = Digits(_pad_to(a.values, L), a.lengths), Digits(_pad_to(b.values, L), b.lengths)
            operand_width = torch.maximum(a.lengths, b.lengths)
            answer_width = fmt.answer_width_for(operand_width)
        prompt = Segments(N, self.device)
        self._number(prompt, a, ROLE_PROMPT, operand_width)
        prompt.add(self.tok(fmt.operator), 1, ROLE_PROMPT)
        self._number(prompt, b, ROLE_PROMPT, operand_width)
        prompt.add(self.tok("="), 1, ROLE_PROMPT)
        answer, negative = self._answer(a, b, prompt)  # step segments, if any, follow the prompt
        prompt.add(self.tok(ANSWER_MARK), 1, ROLE_ANSWER)
        sign = torch.where(negative, self.tok("-"), self.tok("+"))
        if fmt.signed_answer and not fmt.sub_complement:
            prompt.add(sign, 1, ROLE_ANSWER)
        elif fmt.task == "sub" and not fmt.sub_complement:
            prompt.add(torch.full_like(negative, self.tok("-"), dtype=torch.long), negative.long(), ROLE_ANSWER)
        if fmt.residue_tokens:
            self._number(prompt, answer, ROLE_ANSWER)
        else:
            place = reversed_tokens if fmt.answer_order == "reversed" else natural_tokens
            tokens, n = place(answer, self.digit_ids, answer_width)
            prompt.add(tokens, n, ROLE_ANSWER)
        if fmt.sub_complement:  # the sign last: the borrow out of the top column
            prompt.add(sign, 1, ROLE_ANSWER)
        prompt.add(self.eos_id, 1, ROLE_ANSWER)
        ids, roles, lengths = prompt.concat(self.pad_id, width)
        return {"input_ids": ids, "roles": roles, "lengths": lengths}


def labels_for(input_ids: torch.Tensor, roles: torch.Tensor, step_masking_mode: str) -> torch.Tensor:
    """labels [N, T] aligned with input_ids (the model shifts): the token where loss is taken, -100
    elsewhere. "none" = every real token, "mask_steps" = the answer ('#', answer, <eos>) only,
    "mask_answer" = the steps only."""
    if step_masking_mode == "none":
        keep = roles >= 0
    elif step_masking_mode == "mask_steps":
        keep = roles == ROLE_ANSWER
    elif step_masking_mode == "mask_answer":
        keep = roles == ROLE_STEP
    else:
        raise MctError(f"unknown step_masking_mode {step_masking_mode!r}; use none, mask_steps or mask_answer")
    return torch.where(keep, input_ids, IGNORE_INDEX)
