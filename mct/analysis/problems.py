"""Problems of a model's own task laid out for analysis, and how the model does on them under any hooks.

    problems = problem_set(data_format, tokenizer, sample_operands(data_format, data_config, 512, seed=0))
    problems.input_ids                   # [N, T] prompt + target, teacher-forced (right-padded)
    problems.answer_positions[:, 0]      # [N] the position whose logits write the units digit
    problems.operand_positions[:, 0, 1]  # [N] the position of the tens digit of a
    score = score_problems(model, problems)          # exact match, accuracy per answer digit, loss
    with_hooks = score_problems(model, problems, fwd_hooks=[("blocks.0.attn.hook_z", fn)])

Answer digits are counted by place value (place 0 = units), whatever order the format writes them in;
a residue token (`data.residue_tokens`) is one place, 0.
Scores are teacher-forced: the model reads the prompt, the reference steps (if any) and the answer so
far, and a token counts as right when it is the model's most likely next token. A problem's answer is
right when every token from the answer marker to `<eos>` is; that is exactly when greedy decoding
writes it, so exact match here equals `mct eval`'s on the same problems.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from mct.data import sampling
from mct.errors import MctError
from mct.tokenizer import ANSWER_MARK

FwdHooks = Sequence[tuple] | Callable[[torch.Tensor], Sequence[tuple]]


@dataclass
class ProblemSet:
    """N problems as token rows. T = longest row, K = answer places, P = operand places.

    input_ids [N, T] (right-padded with <pad>), attention_mask [N, T] bool, labels [N, T] (at t the token
    t + 1 of the answer the model writes: marker, sign, digits, <eos>; -100 elsewhere), answer_positions
    [N, K] (the position whose logits predict place k, -1 where the answer has no such digit),
    answer_tokens [N, K] (the right token there, -1 where absent), operand_positions [N, 2, P] (where digit
    place p of operand a (row 0) and b (row 1) sits, -1 where absent), operands: the (a, b) pairs."""

    operands: list[tuple[int, int]]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    answer_positions: torch.Tensor
    answer_tokens: torch.Tensor
    operand_positions: torch.Tensor

    def __len__(self) -> int:
        return len(self.operands)

    @property
    def num_places(self) -> int:
        return self.answer_positions.shape[1]

    @property
    def operand_places(self) -> int:
        return self.operand_positions.shape[2]

    def roles(self, tokenizer, row: int = 0) -> list[str]:
        """A label per position of `row`: "a2" / "b0" for operand digit places, "c1" for answer digits (the
        token itself), the token for everything else ("+", "=", "#", "<eos>")."""
        labels = [tokenizer.token_text(i) for i in self.input_ids[row].tolist()]
        for side, name in enumerate("ab"):
            for place, position in enumerate(self.operand_positions[row, side].tolist()):
                if position >= 0:
                    labels[position] = f"{name}{place}"
        for place, position in enumerate(self.answer_positions[row].tolist()):
            if position >= 0:
                labels[position + 1] = f"c{place}"
        return labels

    def subset(self, rows) -> "ProblemSet":
        """The problems at `rows` (indices or a bool mask)."""
        rows = torch.as_tensor(rows)
        if rows.dtype == torch.bool:
            rows = rows.nonzero().flatten()
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values = {name: [value[i] for i in rows.tolist()] if name == "operands" else value[rows]
                  for name, value in values.items()}
        return ProblemSet(**values)


def sample_operands(data_format, data_config, count: int, seed: int = 0, split: str = "test") -> list[tuple[int, int]]:
    """Up to `count` distinct problems of the model's task: for mod, pairs of the run's own `split` of the
    partition ("train", "val", "test"; "all" = every pair); else drawn like `mct gen`'s, balanced over
    operand lengths and carry counts, from the digit range the model was trained on."""
    task = data_format.task
    if task == "mod":
        parts = sampling.mod_partition(data_config.modulus, data_config.train_fraction, data_config.seed)
        if split == "all":
            return [(a, b) for a in range(data_config.modulus) for b in range(data_config.modulus)]
        pairs = dict(zip(("train", "val", "test"), parts))[split]
        return pairs[:count]
    buckets = sampling.space_buckets(task, sampling.length_pairs(data_config.min_digits, data_config.max_digits))
    count = min(count, sampling.capacity(buckets))
    a, b = sampling.draw(sampling.make_rng(seed, f"{task}:analyze"), buckets, count, "analysis problems")
    return list(zip(a, b))


def problem_set(data_format, tokenizer, operands: Sequence[tuple[int, int]], max_seq_len: int | None = None) -> ProblemSet:
    """Lay out `operands` as the model reads them: prompt + target (steps, marker, answer, <eos>)."""
    if not operands:
        raise MctError("no problems to analyse")
    rows, label_rows, answers, operand_rows = [], [], [], []
    for a, b in operands:
        prompt = data_format.prompt((a, b))
        target = data_format.target((a, b))
        ids = tokenizer.encode(prompt + target)
        if max_seq_len is not None and len(ids) > max_seq_len:
            raise MctError(f"{prompt}{target} has {len(ids)} tokens, more than the model's {max_seq_len}")
        pieces = [tokenizer.token_text(i) for i in ids]  # positions are token indices (a residue is one token)
        mark = len(pieces) - 1 - pieces[::-1].index(ANSWER_MARK)
        eos = len(ids) - 1
        labels = [-100] * len(ids)
        for t in range(mark - 1, eos):
            labels[t] = ids[t + 1]
        sign_first = pieces[mark + 1] in ("+", "-")
        sign_last = pieces[eos - 1] in ("+", "-")  # sub_complement: the digits, then the sign
        digits = range(mark + 1 + sign_first, eos - sign_last)
        places = {(i if data_format.answer_order == "reversed" else len(digits) - 1 - i): j
                  for i, j in enumerate(digits)}
        answers.append({place: (j - 1, ids[j]) for place, j in places.items()})
        operator = pieces.index(data_format.operator)
        equals = pieces.index("=")
        operand_rows.append([{operator - 1 - i: i for i in range(operator)},
                             {equals - operator - 2 - i: operator + 1 + i for i in range(equals - operator - 1)}])
        rows.append(ids)
        label_rows.append(labels)
    N, T = len(rows), max(len(r) for r in rows)
    K = max(max(places) for places in answers) + 1
    P = max(max(max(side) for side in pair) for pair in operand_rows) + 1
    input_ids = torch.full((N, T), tokenizer.pad_id, dtype=torch.long)
    attention_mask = torch.zeros(N, T, dtype=torch.bool)
    labels = torch.full((N, T), -100, dtype=torch.long)
    answer_positions = torch.full((N, K), -1, dtype=torch.long)
    answer_tokens = torch.full((N, K), -1, dtype=torch.long)
    operand_positions = torch.full((N, 2, P), -1, dtype=torch.long)
    for n, (ids, row_labels, places, sides) in enumerate(zip(rows, label_rows, answers, operand_rows)):
        input_ids[n, :len(ids)] = torch.tensor(ids)
        attention_mask[n, :len(ids)] = True
        labels[n, :len(ids)] = torch.tensor(row_labels)
        for place, (position, token) in places.items():
            answer_positions[n, place], answer_tokens[n, place] = position, token
        for side, positions in enumerate(sides):
            for place, position in positions.items():
                operand_positions[n, side, place] = position
    return ProblemSet(list(map(tuple, operands)), input_ids, attention_mask, labels, answer_positions,
                      answer_tokens, operand_positions)


@dataclass
class Score:
    """How the model does on a ProblemSet: per problem `exact` [N] bool, `digit_correct` [N, K] bool (False
    where the place is absent; `problems.answer_tokens >= 0` says where it is present), `loss` [N] (mean
    cross-entropy over the problem's answer tokens)."""

    exact: torch.Tensor
    digit_correct: torch.Tensor
    loss: torch.Tensor
    present: torch.Tensor

    @property
    def exact_match(self) -> float:
        return float(self.exact.float().mean())

    @property
    def digit_accuracy(self) -> list[float]:
        """Accuracy of each answer place over the problems that have it."""
        counts = self.present.sum(0).clamp(min=1)
        return ((self.digit_correct & self.present).sum(0) / counts).tolist()

    @property
    def mean_loss(self) -> float:
        return float(self.loss.mean())


@torch.no_grad()
def score_problems(model, problems: ProblemSet, fwd_hooks: FwdHooks = (), batch_size: int = 512) -> Score:
    """Run every problem (in batches, under no_grad, the model's mode unchanged) with `fwd_hooks` active:
    a list of (hook name or predicate, fn(activation, hook)), or a function of the batch's row indices
    [b] returning such a list (for hooks that patch in per-problem values)."""
    exact, digits, losses = [], [], []
    device = model.device
    for start in range(0, len(problems), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(problems)))
        hooks = fwd_hooks(rows) if callable(fwd_hooks) else fwd_hooks
        ids, mask = problems.input_ids[rows].to(device), problems.attention_mask[rows].to(device)
        logits = model.run_with_hooks(ids, mask, fwd_hooks=hooks).float()  # [b, T, V]
        labels = problems.labels[rows].to(device)
        labelled = labels != -100
        right = (logits.argmax(-1) == labels) | ~labelled
        exact.append(right.all(-1).cpu())
        token_loss = F.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")  # [b, T]
        losses.append(((token_loss * labelled).sum(-1) / labelled.sum(-1).clamp(min=1)).cpu())
        positions = problems.answer_positions[rows].to(device).clamp(min=0)  # [b, K]
        predicted = logits.argmax(-1).gather(1, positions)
        digits.append((predicted == problems.answer_tokens[rows].to(device)).cpu())
    return Score(torch.cat(exact), torch.cat(digits), torch.cat(losses), problems.answer_tokens >= 0)


def carry_into(task: str, a: int, b: int, column: int, complement: bool = False) -> int:
    """The carry (borrow) into `column` (0 = units) of the column arithmetic behind the answer: add and mod
    (before the reduction) a + b; sub |a - b| computed as larger - smaller, or in ten's complement
    (`complement`, a format's `sub_complement`) a - b as written; mul the long multiplication, whose carry
    may exceed 1 (the sum of all partial products below the column, divided by 10^column)."""
    scale = 10**column
    if task in ("add", "mod"):
        return int(a % scale + b % scale >= scale)
    if task == "sub" and complement:
        return int(a % scale < b % scale)
    if task == "sub":
        larger, smaller = max(a, b), min(a, b)
        return int(larger % scale < smaller % scale)
    if task == "mul":
        a_digits = [int(c) for c in reversed(str(a))]
        b_digits = [int(c) for c in reversed(str(b))]
        below = sum(x * y * 10 ** (i + j) for i, x in enumerate(a_digits) for j, y in enumerate(b_digits)
                    if i + j < column)
        return below // scale
    raise MctError(f"unknown task {task!r}")
