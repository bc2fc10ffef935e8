"""Which heads compute which answer digit: attention to the aligned operand digits (correlation), zero and
mean ablation of every head (causation), a causal check of the heads named for each digit, and direct
logit attribution of every head and MLP.

    share = attention_share(model, problems)          # [L, H, K]
    sweep = ablation_sweep(model, problems)           # every head, zero and mean ablated
    checks = [check_digit(model, problems, sweep, share, place) for place in range(problems.num_places)]
    dla, labels = direct_logit_attribution(model, problems)   # [components, K]

Shapes: L layers, H heads, K answer places (0 = units), Dh head size, D d_model.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field

import torch

from mct.analysis.interventions import head_ablation_hooks
from mct.analysis.problems import ProblemSet, Score, score_problems

# A digit is explained by a set of heads when ablating them together drops its accuracy by at least
# EXPLAINED_DROP (absolute), at least FAR_MORE times the mean drop of ablating as many other heads, and
# EXPLAINED_MARGIN more than the largest such drop. The other sets (CONTROL_SETS of them): the next heads
# by single-ablation effect (the strongest rivals), then random sets.
EXPLAINED_DROP = 0.25
FAR_MORE = 3.0
EXPLAINED_MARGIN = 0.2
CONTROL_SETS = 6


def heads_of(model) -> list[tuple[int, int]]:
    return [(layer, head) for layer in range(len(model.blocks)) for head in range(model.config.num_heads)]


def aligned_places(task: str, place: int) -> list[int]:
    """Operand digit places an answer place reads first: its own column and the one below (where its carry
    comes from); for mul every column up to it (the partial products a_i * b_j with i + j <= place)."""
    if task == "mul":
        return list(range(place + 1))
    return [p for p in (place - 1, place) if p >= 0]


@torch.no_grad()
def attention_share(model, problems: ProblemSet, task: str, batch_size: int = 256) -> torch.Tensor:
    """[L, H, K]: for answer place k, the attention weight each head gives, from the position that writes
    that digit, to the aligned operand digits of both operands (`aligned_places`), averaged over problems."""
    L, H, K = len(model.blocks), model.config.num_heads, problems.num_places
    total = torch.zeros(L, H, K)
    count = torch.zeros(K)
    names = [f"blocks.{i}.attn.hook_pattern" for i in range(L)]
    for start in range(0, len(problems), batch_size):
        rows = slice(start, start + batch_size)
        ids, mask = problems.input_ids[rows], problems.attention_mask[rows]
        _, cache = model.run_with_cache(ids, mask, names_filter=names, no_grad=True)
        patterns = torch.stack([cache[name].float().cpu() for name in names], 1)  # [b, L, H, T, T]
        queries = problems.answer_positions[rows]  # [b, K]
        operands = problems.operand_positions[rows]  # [b, 2, P]
        for place in range(K):
            present = queries[:, place] >= 0
            keys = torch.zeros(len(queries), ids.shape[1], dtype=torch.bool)
            for p in aligned_places(task, place):
                if p < operands.shape[2]:
                    for side in range(2):
                        where = operands[:, side, p]
                        keys[torch.arange(len(keys))[where >= 0], where[where >= 0]] = True
            rows_idx = torch.arange(len(queries))[present]
            rows_patterns = patterns[rows_idx, :, :, queries[present, place]]  # [n, L, H, T]
            total[:, :, place] += (rows_patterns * keys[present][:, None, None]).sum(-1).sum(0)
            count[place] += len(rows_idx)
    return total / count.clamp(min=1)


@torch.no_grad()
def head_means(model, problems: ProblemSet, batch_size: int = 256) -> dict[int, torch.Tensor]:
    """{layer: [T, H, Dh]}: each head's mean output z at each position over the problems (real tokens)."""
    L = len(model.blocks)
    sums, counts = None, torch.zeros(problems.input_ids.shape[1])
    names = [f"blocks.{i}.attn.hook_z" for i in range(L)]
    for start in range(0, len(problems), batch_size):
        rows = slice(start, start + batch_size)
        mask = problems.attention_mask[rows]
        _, cache = model.run_with_cache(problems.input_ids[rows], mask, names_filter=names, no_grad=True)
        z = torch.stack([cache[name].float().cpu() for name in names])  # [L, b, T, H, Dh]
        part = (z * mask[None, :, :, None, None]).sum(1)  # [L, T, H, Dh]
        sums = part if sums is None else sums + part
        counts += mask.sum(0)
    means = sums / counts.clamp(min=1)[None, :, None, None]
    return {layer: means[layer].to(model.device) for layer in range(L)}


@dataclass
class AblationSweep:
    """Clean scores and, for each head, the scores with it zero- and mean-ablated."""

    heads: list[tuple[int, int]]
    clean: Score
    zero: dict[tuple[int, int], Score]
    mean: dict[tuple[int, int], Score]
    means: dict[int, torch.Tensor] = field(repr=False)

    def drop(self, mode: str, head: tuple[int, int], place: int | None = None) -> float:
        """Accuracy lost when `head` is ablated: of answer place `place`, or exact match (None)."""
        scores = (self.zero if mode == "zero" else self.mean)[head]
        if place is None:
            return self.clean.exact_match - scores.exact_match
        return self.clean.digit_accuracy[place] - scores.digit_accuracy[place]


def ablate(model, problems: ProblemSet, heads, means: dict | None) -> Score:
    """Scores with `heads` ablated together: zeros (means None) or the per-position means."""
    return score_problems(model, problems, fwd_hooks=head_ablation_hooks(model, heads, means))


def ablation_sweep(model, problems: ProblemSet) -> AblationSweep:
    heads = heads_of(model)
    means = head_means(model, problems)
    return AblationSweep(heads, score_problems(model, problems),
                         {head: ablate(model, problems, [head], None) for head in heads},
                         {head: ablate(model, problems, [head], means) for head in heads}, means)


@dataclass
class DigitCheck:
    """The causal check of one answer place: the heads named for it (`named`, by single-head mean-ablation
    effect, then attention share), the accuracy drop when they are mean-ablated together (`named_drop`),
    the drops of `control_sets` of as many other heads (the strongest others first), and whether the named
    set explains the digit (`explains`)."""

    place: int
    clean_accuracy: float
    named: list[tuple[int, int]]
    named_drop: float
    named_exact_match_drop: float
    control_sets: list[list[tuple[int, int]]]
    control_drops: list[float]
    explained: bool

    @property
    def control_drop(self) -> float:
        return sum(self.control_drops) / len(self.control_drops) if self.control_drops else 0.0

    @property
    def control_drop_max(self) -> float:
        return max(self.control_drops, default=0.0)

    def to_dict(self) -> dict:
        return {"place": self.place, "clean_accuracy": self.clean_accuracy,
                "named_heads": [list(h) for h in self.named], "named_drop": self.named_drop,
                "named_exact_match_drop": self.named_exact_match_drop,
                "control_heads": [[list(h) for h in s] for s in self.control_sets],
                "control_drops": self.control_drops, "control_drop_mean": self.control_drop,
                "control_drop_max": self.control_drop_max,
                "explained": self.explained}


def explains(drop: float, control_drops: list[float]) -> bool:
    if not control_drops:
        return False
    mean = sum(control_drops) / len(control_drops)
    return drop >= EXPLAINED_DROP and drop >= FAR_MORE * mean and drop >= max(control_drops) + EXPLAINED_MARGIN


def check_digit(model, problems: ProblemSet, sweep: AblationSweep, share: torch.Tensor, place: int,
                max_heads: int | None = None, seed: int = 0) -> DigitCheck:
    """Name the fewest heads (at most `max_heads`, default half of all heads, at least 1 and at most 4)
    whose joint mean ablation explains answer place `place` (see `explains`), trying the heads in order
    of their single-ablation effect on that place; where no such set exists, the largest set tried is
    reported with `explained` False."""
    heads = sweep.heads
    max_heads = max_heads or max(1, min(4, len(heads) // 2))
    ranked = sorted(heads, key=lambda h: (-sweep.drop("mean", h, place), -float(share[h[0], h[1], place])))
    clean = sweep.clean.digit_accuracy[place]
    rng = random.Random(f"{seed}:{place}")
    tried = None
    for size in range(1, min(max_heads, len(heads) - 1) + 1):
        named = ranked[:size]
        scores = ablate(model, problems, named, sweep.means)
        controls = _control_sets(ranked[size:], size, rng)  # ranked[size:] are the others, strongest first
        control_drops = [clean - ablate(model, problems, c, sweep.means).digit_accuracy[place] for c in controls]
        drop = clean - scores.digit_accuracy[place]
        tried = DigitCheck(place, clean, named, drop, sweep.clean.exact_match - scores.exact_match, controls,
                           control_drops, explains(drop, control_drops))
        if tried.explained:
            break
    if tried is None:  # a model with a single head: nothing to compare it with
        tried = DigitCheck(place, clean, [], 0.0, 0.0, [], [], False)
    return tried


def _control_sets(others: list, size: int, rng: random.Random) -> list[list]:
    """Up to CONTROL_SETS distinct sets of `size` heads from `others` (strongest first): the first `size`
    of them, then random sets."""
    if math.comb(len(others), size) <= CONTROL_SETS:
        return [list(c) for c in itertools.combinations(others, size)]
    sets: list[list] = [sorted(others[:size])]
    while len(sets) < CONTROL_SETS:
        candidate = sorted(rng.sample(others, size))
        if candidate not in sets:
            sets.append(candidate)
    return sets


@torch.no_grad()
def direct_logit_attribution(model, problems: ProblemSet, answer_ids: list[int],
                             batch_size: int = 128) -> tuple[torch.Tensor, list[str]]:
    """[components, K]: what each head ("L0H1"), MLP ("L0 MLP") and the rest ("embeddings", "biases": the
    attention output biases and the final norm's bias) write, through the final norm, in the direction of
    the right token minus the mean over `answer_ids` (the ten digits, or every residue token), at the
    position that writes answer place k; averaged over the problems. The components of one problem sum to
    its logit difference."""
    L, K = len(model.blocks), problems.num_places
    total, count, labels = None, torch.zeros(K), None
    digits = torch.tensor(answer_ids, device=model.device)
    for start in range(0, len(problems), batch_size):
        rows = slice(start, start + batch_size)
        _, cache = model.run_with_cache(problems.input_ids[rows], problems.attention_mask[rows], no_grad=True)
        heads, head_labels = cache.stack_head_results(return_labels=True)  # [L*H, b, T, D]
        mlps = [cache["mlp_out", i] for i in range(L) if model.blocks[i].mlp is not None]
        embeds = cache["embed"] + (cache["pos_embed"] if "hook_pos_embed" in cache else 0)
        biases = sum(model.blocks[i].attn.b_O for i in range(L)).expand_as(embeds)
        stack = torch.cat([heads, *(m[None] for m in mlps), embeds[None], biases[None]])
        scaled = cache.apply_ln_to_stack(stack)  # [C, b, T, D]
        positions = problems.answer_positions[rows].to(model.device)  # [b, K]
        present = positions >= 0
        gathered = scaled.gather(2, positions.clamp(min=0)[None, :, :, None].expand(len(stack), -1, -1,
                                                                                   stack.shape[-1]))
        right = problems.answer_tokens[rows].to(model.device).clamp(min=0)  # [b, K]
        direction = model.tokens_to_residual_directions(right) - model.W_U[:, digits].mean(-1)  # [b, K, D]
        attribution = (gathered * direction).sum(-1)  # [C, b, K]
        if model.ln_final.bias is not None:
            attribution[-1] += (direction * model.ln_final.bias).sum(-1)
        part = (attribution * present).sum(1).cpu()  # [C, K]
        total = part if total is None else total + part
        count += present.sum(0).cpu()
        labels = head_labels + [f"L{i} MLP" for i in range(L) if model.blocks[i].mlp is not None] + ["embeddings", "biases"]
    return total / count.clamp(min=1), labels
