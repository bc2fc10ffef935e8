"""Linear probes for the carry: can a linear read-out of the residual stream tell, at each layer and
position, the carry (borrow) into each answer column, on problems the probe was not trained on?

    result = probe_carries(model, problems, task="add")
    result.accuracy[layer, position, column]     # held-out accuracy; compare result.baseline[column]

The residual stream is read where each block starts (`{l}_pre`) and after the last (`final_post`). A probe
is multinomial logistic regression on standardised features (full batch, Adam, L2), one per layer,
position and column; carries of mul can exceed 1, so there a probe has one class per carry value.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mct.analysis.problems import ProblemSet, carry_into


@dataclass
class ProbeResult:
    """Held-out accuracy [layers, T, columns] of the probe for the carry into each of `columns`, at each of
    `layers` ("0_pre" ... "final_post") and positions 0..T-1 of `tokens` (the token layout the probed
    problems share), NaN after the position that writes the column's digit (teacher forcing shows the
    answer there); `baseline` [columns]: always guessing the most common training label."""

    columns: list[int]
    layers: list[str]
    tokens: list[str]
    accuracy: torch.Tensor
    baseline: torch.Tensor
    n_train: int
    n_test: int

    def best(self, column_index: int) -> tuple[str, int, float]:
        """(layer label, position, accuracy) of the best probe for one column."""
        scores = self.accuracy[:, :, column_index].nan_to_num(-1.0)
        flat = int(scores.argmax())
        layer, position = divmod(flat, scores.shape[1])
        return self.layers[layer], position, float(scores[layer, position])

    def to_dict(self) -> dict:
        rows = []
        for i, column in enumerate(self.columns):
            layer, position, accuracy = self.best(i)
            rows.append({"column": column, "baseline": float(self.baseline[i]), "best_accuracy": accuracy,
                         "best_layer": layer, "best_position": position, "best_token": self.tokens[position]})
        return {"columns": rows, "layers": self.layers, "tokens": self.tokens, "n_train": self.n_train,
                "n_test": self.n_test, "accuracy": [[[None if a != a else round(float(a), 4) for a in pos] for pos in layer]
                                                     for layer in self.accuracy]}


def _shared_layout(problems: ProblemSet) -> torch.Tensor:
    """Row indices of the problems laid out like the most common layout of full-length operands (same
    operand positions), so that a position means the same token role in every probed problem."""
    layouts = [tuple(row.flatten().tolist()) for row in problems.operand_positions]
    longest = max(sum(p >= 0 for p in layout) for layout in layouts)
    full = [layout for layout in layouts if sum(p >= 0 for p in layout) == longest]
    common = Counter(full).most_common(1)[0][0]
    return torch.tensor([i for i, layout in enumerate(layouts) if layout == common])


@torch.no_grad()
def residual_streams(model, problems: ProblemSet, length: int, batch_size: int = 256) -> tuple[torch.Tensor, list[str]]:
    """[layers + 1, N, length, D] float32 on the CPU: the residual stream before each block and at the end."""
    L = len(model.blocks)
    names = [f"blocks.{i}.hook_resid_pre" for i in range(L)] + [f"blocks.{L - 1}.hook_resid_post"]
    parts = []
    for start in range(0, len(problems), batch_size):
        rows = slice(start, start + batch_size)
        _, cache = model.run_with_cache(problems.input_ids[rows], problems.attention_mask[rows], names_filter=names,
                                        no_grad=True)
        parts.append(torch.stack([cache[name][:, :length].float().cpu() for name in names]))
    return torch.cat(parts, 1), [f"{i}_pre" for i in range(L)] + ["final_post"]


def train_probes(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 classes: int, steps: int = 150, lr: float = 0.05, weight_decay: float = 1e-3,
                 seed: int = 0) -> torch.Tensor:
    """Held-out accuracy [T, C] of one logistic-regression probe per position and column.

    train_x [N, T, D], train_y [N, C] (labels 0..classes-1); test_x [M, T, D], test_y [M, C]."""
    mean, std = train_x.mean(0), train_x.std(0).clamp(min=1e-5)
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    T, D, C = train_x.shape[1], train_x.shape[2], train_y.shape[1]
    generator = torch.Generator().manual_seed(seed)
    weight = (torch.randn(T, C, D, classes, generator=generator) * 0.01).requires_grad_(True)
    bias = torch.zeros(T, C, classes, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=lr)
    target = train_y[:, None, :].expand(-1, T, -1)  # [N, T, C]
    with torch.enable_grad():
        for _ in range(steps):
            logits = torch.einsum("ntd,tcdk->ntck", train_x, weight) + bias  # [N, T, C, classes]
            loss = F.cross_entropy(logits.reshape(-1, classes), target.reshape(-1))
            loss = loss + weight_decay * weight.pow(2).sum() / (T * C)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        predicted = (torch.einsum("ntd,tcdk->ntck", test_x, weight) + bias).argmax(-1)  # [M, T, C]
        return (predicted == test_y[:, None, :]).float().mean(0)


def probe_carries(model, problems: ProblemSet, task: str, tokenizer=None, max_problems: int = 800,
                  seed: int = 0, complement: bool = False) -> ProbeResult | None:
    """Probes for the carry into every answer column above the units (1..K-1); None when there are too few
    problems of one layout (fewer than 40). Half the problems train, the other half test. `complement`:
    the format writes subtraction in ten's complement (`sub_complement`), whose borrows are those of a - b."""
    rows = _shared_layout(problems)
    generator = torch.Generator().manual_seed(seed)
    rows = rows[torch.randperm(len(rows), generator=generator)][:max_problems]
    columns = list(range(1, problems.num_places))
    if len(rows) < 40 or not columns:
        return None
    probed = problems.subset(rows)
    length = int(probed.attention_mask.sum(1).min())
    streams, layers = residual_streams(model, probed, length)
    labels = torch.tensor([[carry_into(task, a, b, column, complement) for column in columns]
                           for a, b in probed.operands])
    classes = int(labels.max()) + 1
    half = len(rows) // 2
    accuracy = torch.stack([train_probes(stream[:half], labels[:half], stream[half:], labels[half:],
                                         max(classes, 2), seed=seed) for stream in streams])
    # Teacher forcing puts the answer itself in the input: from the position that writes column k's digit
    # on, the carry can be read off the written digits, so those probes are not reported (NaN).
    for i, column in enumerate(columns):
        written = probed.answer_positions[:, column]
        cutoff = int(written[written >= 0].min()) if bool((written >= 0).any()) else length - 1
        accuracy[:, cutoff + 1:, i] = float("nan")
    majority = torch.tensor([Counter(labels[:half, i].tolist()).most_common(1)[0][0] for i in range(len(columns))])
    baseline = (labels[half:] == majority).float().mean(0)
    tokens = probed.roles(tokenizer)[:length] if tokenizer else [str(i) for i in range(length)]
    return ProbeResult(columns, layers, tokens, accuracy, baseline, half, len(rows) - half)
