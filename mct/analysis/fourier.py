"""The mod task (a + b mod P, the grokking task of Nanda et al. 2023, "Progress measures for grokking via
mechanistic interpretability"): key Fourier frequencies, and restricted / excluded loss over a run.

    grid = mod_grid(data_format, tokenizer, modulus)                 # all P*P problems, a-major
    spectrum = frequency_spectrum(model, grid, modulus)              # operands and neurons, per frequency
    curve = progress_measures(model, grid, modulus, spectrum.key_frequencies, train_rows)

mct models read operands either as zero-padded digits ("005+100=") or, with `data.residue_tokens`, as
one token per residue, as in the paper. So that both are studied alike, the operand representation is
the residual stream after the first block's attention at the position that writes the first answer
token, averaged over the other operand (R_a[a] = mean over b); its Fourier transform over a (and R_b
over b) is the "embedding" spectrum. Neurons are the MLP activations (`mlp.hook_post`) at the positions
that write the answer, as functions of (a, b) on the whole grid, in the 2-D Fourier basis: a frequency w
owns the terms cos/sin(w a), cos/sin(w b) and their four products.

With digit tokens the answer is several tokens, so the logits are not a sum of waves in a + b and
Nanda's logit-level ablation does not carry over; for both formats the ablation is done where the waves
live, on the neurons: restricted loss = the loss with every neuron kept to the constant and the key
frequencies' terms (on all pairs); excluded loss = the loss with the key frequencies' terms removed from
every neuron (on the training pairs). Both need every answer token at a fixed position: zero-padded
digits or residue tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mct.analysis.problems import ProblemSet, problem_set, score_problems
from mct.errors import MctError

KEY_SHARE = 0.5  # key frequencies: the fewest that hold this share of the neurons' variance...
MAX_KEY_FREQUENCIES = 8  # ...but no more than this many


def fourier_basis(size: int) -> tuple[torch.Tensor, list[int]]:
    """Orthonormal real Fourier basis [size, size] over 0..size-1 (rows: constant, then cos and sin of each
    frequency w = 1, 2, ...), and the frequency of each row (0 for the constant)."""
    x = torch.arange(size, dtype=torch.float64)
    rows, freqs = [torch.full((size,), 1.0 / math.sqrt(size), dtype=torch.float64)], [0]
    for w in range(1, size // 2 + 1):
        angle = 2 * math.pi * w * x / size
        if 2 * w == size:  # the Nyquist frequency of an even size has a cosine only
            rows.append(torch.cos(angle) / math.sqrt(size))
            freqs.append(w)
            continue
        rows += [torch.cos(angle) * math.sqrt(2.0 / size), torch.sin(angle) * math.sqrt(2.0 / size)]
        freqs += [w, w]
    return torch.stack(rows), freqs


def mod_grid(data_format, tokenizer, modulus: int, max_seq_len: int | None = None) -> ProblemSet:
    """Every (a, b) in [0, P)^2 laid out for analysis, row a * P + b; MctError unless every token sits at a
    fixed position (zero-padded digits or residue tokens)."""
    if data_format.task != "mod":
        raise MctError(f"the Fourier analysis is for the mod task, not {data_format.task}")
    if not (data_format.operand_width or data_format.residue_tokens):
        raise MctError("the Fourier analysis needs the zero-padded format (data.pad_operands = true) or one token "
                       "per residue (data.residue_tokens = true), where every answer token sits at a fixed position")
    return problem_set(data_format, tokenizer, [(a, b) for a in range(modulus) for b in range(modulus)], max_seq_len)


def answer_columns(grid: ProblemSet) -> torch.Tensor:
    """The positions that write the answer (marker, digits, <eos>): the same in every row of a padded grid."""
    return (grid.labels[0] != -100).nonzero().flatten()


@torch.no_grad()
def neuron_activations(model, grid: ProblemSet, batch_size: int = 1024) -> torch.Tensor:
    """[L, P, P, S, F]: `mlp.hook_post` of every layer at the S answer-writing positions, over the grid."""
    L, P = len(model.blocks), int(math.isqrt(len(grid)))
    columns = answer_columns(grid)
    names = [f"blocks.{i}.mlp.hook_post" for i in range(L)]
    parts = []
    for start in range(0, len(grid), batch_size):
        rows = slice(start, start + batch_size)
        _, cache = model.run_with_cache(grid.input_ids[rows], grid.attention_mask[rows], names_filter=names,
                                        no_grad=True)
        parts.append(torch.stack([cache[n][:, columns.to(cache[n].device)].float().cpu() for n in names]))
    acts = torch.cat(parts, 1)  # [L, P*P, S, F]
    return acts.reshape(L, P, P, *acts.shape[2:])


@torch.no_grad()
def operand_representations(model, grid: ProblemSet, batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """(R_a [P, D], R_b [P, D]): the first block's resid_mid at the first answer-writing position, averaged
    over the other operand."""
    P = int(math.isqrt(len(grid)))
    column = int(answer_columns(grid)[0])
    parts = []
    for start in range(0, len(grid), batch_size):
        rows = slice(start, start + batch_size)
        _, cache = model.run_with_cache(grid.input_ids[rows], grid.attention_mask[rows],
                                        names_filter="blocks.0.hook_resid_mid", no_grad=True)
        parts.append(cache["resid_mid", 0][:, column].float().cpu())
    resid = torch.cat(parts).reshape(P, P, -1)
    return resid.mean(1), resid.mean(0)


def _term_frequency(freqs: list[int]) -> torch.Tensor:
    """[R, R] long over 2-D basis pairs (row of a, row of b): the frequency w a term belongs to (the terms
    of w: (w, 0), (0, w) and (w, w)), 0 for the constant and for cross terms of two frequencies."""
    freq = torch.tensor(freqs)
    a, b = freq[:, None], freq[None, :]
    return torch.where(b == 0, a, torch.where((a == 0) | (a == b), b, 0))


def _key_mask(freqs: list[int], keys: list[int]) -> torch.Tensor:
    """[R, R] float: 1 on the terms of the key frequencies."""
    return torch.isin(_term_frequency(freqs), torch.tensor(keys or [-1])).float() * (
        _term_frequency(freqs) > 0).float()


@dataclass
class Spectrum:
    """Share of variance per frequency (index w - 1 for w = 1..P//2): of the neurons, all together
    (`neuron_share`), and of each operand's representation (`operand_a_share`, `operand_b_share`);
    `key_frequencies`, the share of the neurons' variance they hold (`key_share`), whether at most
    MAX_KEY_FREQUENCIES reach KEY_SHARE (`sparse`), and each neuron's dominant frequency and its share."""

    modulus: int
    neuron_share: torch.Tensor
    operand_a_share: torch.Tensor
    operand_b_share: torch.Tensor
    key_frequencies: list[int]
    key_share: float
    sparse: bool
    neuron_frequency: torch.Tensor
    neuron_frequency_share: torch.Tensor

    def to_dict(self) -> dict:
        top = lambda share: [int(i) + 1 for i in share.argsort(descending=True)[:5]]
        return {"modulus": self.modulus, "key_frequencies": self.key_frequencies, "key_share": self.key_share,
                "sparse": self.sparse, "top_operand_a_frequencies": top(self.operand_a_share),
                "top_operand_b_frequencies": top(self.operand_b_share),
                "neurons_dominated_by_a_key_frequency": float(
                    (torch.isin(self.neuron_frequency, torch.tensor(self.key_frequencies or [-1]))
                     & (self.neuron_frequency_share >= 0.5)).float().mean()),
                "neuron_share": [round(float(s), 5) for s in self.neuron_share],
                "operand_a_share": [round(float(s), 5) for s in self.operand_a_share],
                "operand_b_share": [round(float(s), 5) for s in self.operand_b_share]}


def _per_frequency(power: torch.Tensor, freqs: list[int], P: int) -> torch.Tensor:
    """Sum a power vector over basis rows [R, ...] into frequencies 1..P//2 -> [P//2, ...]."""
    out = torch.zeros(P // 2, *power.shape[1:], dtype=power.dtype)
    for row, w in enumerate(freqs):
        if w:
            out[w - 1] += power[row]
    return out


def neuron_spectrum(acts: torch.Tensor, modulus: int) -> tuple[torch.Tensor, torch.Tensor]:
    """acts [P, P, neurons] (a neuron as a function of (a, b)) -> (share of each frequency w = 1..P//2 in
    each neuron's variance [W, neurons], total variance [neurons])."""
    basis, freqs = fourier_basis(modulus)
    basis = basis.float()
    power = torch.einsum("ia,abn,jb->ijn", basis, acts.float(), basis).pow(2)  # [R, R, neurons]
    power[0, 0] = 0.0  # the constant is not variance
    total = power.sum((0, 1))
    term = _term_frequency(freqs).flatten()
    per_w = torch.zeros(modulus // 2 + 1, power.shape[-1]).index_add_(0, term, power.reshape(-1, power.shape[-1]))
    return per_w[1:] / total.clamp(min=1e-12), total


@torch.no_grad()
def frequency_spectrum(model, grid: ProblemSet, modulus: int) -> Spectrum:
    P = modulus
    acts = neuron_activations(model, grid)  # [L, P, P, S, F]
    acts = acts.permute(1, 2, 0, 3, 4).reshape(P, P, -1)  # [P, P, neurons], a neuron per (layer, position, unit)
    shares, total = neuron_spectrum(acts, P)
    neuron_share = (shares * total).sum(1) / total.sum().clamp(min=1e-12)
    keys, covered = [], 0.0
    for index in neuron_share.argsort(descending=True)[:MAX_KEY_FREQUENCIES].tolist():
        keys.append(index + 1)
        covered += float(neuron_share[index])
        if covered >= KEY_SHARE:
            break
    live = total > 1e-9  # dead neurons have no dominant frequency
    basis, freqs = fourier_basis(P)
    operand_shares = []
    for rep in operand_representations(model, grid):
        c = basis.float() @ (rep - rep.mean(0))
        operand_shares.append(_per_frequency(c.pow(2).sum(-1), freqs, P) / c.pow(2).sum().clamp(min=1e-12))
    return Spectrum(P, neuron_share, operand_shares[0], operand_shares[1], sorted(keys), covered,
                    covered >= KEY_SHARE, (shares.argmax(0) + 1)[live], shares.max(0).values[live])


@torch.no_grad()
def progress_measures(model, grid: ProblemSet, modulus: int, key_frequencies: list[int],
                      train_rows: torch.Tensor) -> dict:
    """Train and test loss and exact match, restricted loss (all pairs) and excluded loss (training pairs)
    of one model (see the module docstring). train_rows: bool [P*P]."""
    P, L = modulus, len(model.blocks)
    basis, freqs = fourier_basis(P)
    basis = basis.float()
    keys = _key_mask(freqs, key_frequencies)
    constant = torch.zeros_like(keys)
    constant[0, 0] = 1.0
    acts = neuron_activations(model, grid)  # [L, P, P, S, F]
    coeffs = torch.einsum("ia,lab...,jb->lij...", basis, acts, basis)

    def rebuild(mask: torch.Tensor) -> torch.Tensor:  # [L, P*P, S, F] from the kept terms
        kept = coeffs * mask[None, :, :, None, None]
        return torch.einsum("ia,lij...,jb->lab...", basis, kept, basis).reshape(L, P * P, *acts.shape[3:])

    restricted, excluded = rebuild(keys + constant), rebuild(1.0 - keys)
    del coeffs, acts
    columns = answer_columns(grid)

    def patch(values: torch.Tensor):
        def hooks(rows: torch.Tensor):
            def replace(post, hook):
                post = post.clone()
                post[:, columns.to(post.device)] = values[hook.layer(), rows].to(post.device, post.dtype)
                return post
            return [(f"blocks.{i}.mlp.hook_post", replace) for i in range(L)]
        return hooks

    clean = score_problems(model, grid)
    kept = score_problems(model, grid, fwd_hooks=patch(restricted))
    removed = score_problems(model, grid, fwd_hooks=patch(excluded))
    test_rows = ~train_rows
    return {"train_loss": float(clean.loss[train_rows].mean()), "test_loss": float(clean.loss[test_rows].mean()),
            "train_exact_match": float(clean.exact[train_rows].float().mean()),
            "test_exact_match": float(clean.exact[test_rows].float().mean()),
            "restricted_loss": float(kept.loss.mean()), "excluded_loss": float(removed.loss[train_rows].mean())}
