"""Attention patterns of a prompt plus the model's own completion: data, terminal heatmaps, figures.

    maps = attention_maps(model, tokenizer, "12+34=")   # greedy completion, then forward_analysis
    maps.tokens                                          # ['1', '2', '+', '3', '4', '=', '#', '6', '4', '<eos>']
    maps.weights.shape                                   # [layers, heads, T, T]; row = query, column = key
    save_attention_figure(maps.tokens, maps.weights, "attn.png")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from mct.errors import MctError
from mct.fileio import atomic_path
from mct.generation import decode_batched, encode_prompt

FIGURE_FORMATS = ("png", "svg", "pdf")
# Short column labels for the specials, so a heatmap column stays one character wide.
SHORT_LABELS = {"<eos>": "E", "<pad>": "P"}
# Shading by weight (also readable without colour) and a viridis-like colour ramp.
SHADES = ((0.05, "·"), (0.25, "░"), (0.5, "▒"), (0.75, "▓"), (1.01, "█"))
RAMP = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))


@dataclass
class AttentionMaps:
    """`weights [layers, heads, T, T]` (float, CPU; row = query position, column = key position) over
    `tokens` (T labels: the prompt's tokens, then the completion's, `<eos>` included when generated)."""

    prompt: str
    completion: str
    tokens: list[str]
    weights: torch.Tensor
    num_prompt_tokens: int

    @property
    def num_layers(self) -> int:
        return self.weights.shape[0]

    @property
    def num_heads(self) -> int:
        return self.weights.shape[1]

    def to_dict(self, layers: Sequence[int] | None = None, heads: Sequence[int] | None = None,
                decimals: int = 6) -> dict:
        """Plain data: `weights[i][j]` is the `[T][T]` map of layer `layers[i]`, head `heads[j]`."""
        layers, heads = select_heads(self.num_layers, self.num_heads, layers, heads)
        chosen = self.weights[layers][:, heads]
        return {
            "prompt": self.prompt, "completion": self.completion, "tokens": self.tokens,
            "num_prompt_tokens": self.num_prompt_tokens, "layers": layers, "heads": heads,
            "weights": [[[[round(w, decimals) for w in row] for row in head] for head in layer]
                        for layer in chosen.tolist()],
        }


def _as_indices(value, name: str) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return [value]
    values = list(value)
    if not values:
        raise MctError(f"no {name}s were chosen; pass at least one {name} index")
    return [int(v) for v in values]


def select_heads(num_layers: int, num_heads: int, layers=None, heads=None) -> tuple[list[int], list[int]]:
    """Validated layer and head indices (an int, a list, or None for all); MctError when out of range."""
    layers = _as_indices(layers, "layer")
    heads = _as_indices(heads, "head")
    for name, chosen, count in (("layer", layers, num_layers), ("head", heads, num_heads)):
        for index in chosen or ():
            if not 0 <= index < count:
                raise MctError(f"{name} {index} is out of range: the model has {count} {name}s "
                               f"(0..{count - 1})")
    return (layers if layers is not None else list(range(num_layers)),
            heads if heads is not None else list(range(num_heads)))


@torch.no_grad()
def attention_maps(model, tokenizer, prompt: str, max_new_tokens: int | None = None) -> AttentionMaps:
    """Greedy-complete `prompt`, then run prompt + completion through `model.forward_analysis` (on the
    model's device; the weights come back on the CPU).

    `max_new_tokens` None = until `<eos>` or the context is full. MctError for a character outside the
    vocabulary or a prompt that does not fit the context.
    """
    max_seq_len = model.config.max_seq_len
    prompt_ids = encode_prompt(tokenizer, prompt, max_seq_len)
    budget = max_seq_len - len(prompt_ids)
    max_new_tokens = budget if max_new_tokens is None else max(1, min(max_new_tokens, budget))
    completion = decode_batched(model, tokenizer, [prompt], max_new_tokens, batch_size=1)[0]
    ids = prompt_ids + tokenizer.encode(completion)
    _, attention = model.forward_analysis(torch.tensor([ids], dtype=torch.long))  # [1, T] -> per layer [1, H, T, T]
    weights = torch.stack([layer[0] for layer in attention]).float().cpu()  # [layers, heads, T, T]
    return AttentionMaps(prompt=prompt, completion=completion, tokens=[tokenizer.token_text(i) for i in ids],
                         weights=weights, num_prompt_tokens=len(prompt_ids))


def _as_array(weights):
    import numpy as np

    if isinstance(weights, torch.Tensor):
        return weights.detach().float().cpu().numpy()
    return np.asarray(weights, dtype=float)


def _colour(weight: float) -> str:
    position = min(max(weight, 0.0), 1.0) * (len(RAMP) - 1)
    low = min(int(position), len(RAMP) - 2)
    frac = position - low
    r, g, b = (round(a + (c - a) * frac) for a, c in zip(RAMP[low], RAMP[low + 1]))
    return f"rgb({r},{g},{b})"


def _cell(weight: float, causal_future: bool) -> tuple[str, str]:
    if causal_future:
        return "  ", ""
    shade = next(char for limit, char in SHADES if weight < limit)
    return shade * 2, _colour(weight)


def render_attention(tokens: Sequence[str], weights, layers=None, heads=None) -> list:
    """One rich Table per chosen head: rows are query tokens, columns key tokens, cells shaded and
    coloured by weight (`·` < 0.05 <= `░` < 0.25 <= `▒` < 0.5 <= `▓` < 0.75 <= `█`).

    `weights [layers, heads, T, T]` (tensor or nested lists). Returns renderables; the caller prints.
    """
    from rich.table import Table
    from rich.text import Text

    array = _as_array(weights)
    layers, heads = select_heads(array.shape[0], array.shape[1], layers, heads)
    column_labels = [SHORT_LABELS.get(tok, tok) for tok in tokens]
    tables = []
    for layer in layers:
        for head in heads:
            table = Table(title=f"layer {layer} head {head}", box=None, padding=(0, 0),
                          show_edge=False, title_justify="left", pad_edge=False)
            table.add_column("query\\key │", justify="right", no_wrap=True)
            for label in column_labels:
                table.add_column(f"{label} ", justify="left", no_wrap=True, min_width=2)
            for query, token in enumerate(tokens):
                row = [Text(f"{query:>2} {token:>5} │")]
                for key in range(len(tokens)):
                    text, style = _cell(float(array[layer, head, query, key]), key > query)
                    row.append(Text(text, style=style))
                table.add_row(*row)
            tables.append(table)
    return tables


def save_attention_figure(tokens: Sequence[str], weights, path: str | Path, layers=None,
                          heads=None, title: str | None = None) -> Path:
    """Save a grid (rows = layers, columns = heads) of attention maps with token labels and a colour
    bar; the format (.png, .svg, .pdf) follows the suffix. Written atomically. Returns the path."""
    from matplotlib.figure import Figure

    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FIGURE_FORMATS:
        raise MctError(f"cannot save a figure as {path.name!r}: use a .png, .svg or .pdf file name")
    array = _as_array(weights)
    layers, heads = select_heads(array.shape[0], array.shape[1], layers, heads)
    size = len(tokens)
    cell = max(1.6, 0.22 * size + 0.8)
    figure = Figure(figsize=(cell * len(heads) + 1.2, cell * len(layers) + 0.6), layout="constrained")
    axes = figure.subplots(len(layers), len(heads), squeeze=False)
    image = None
    for row, layer in enumerate(layers):
        for col, head in enumerate(heads):
            ax = axes[row][col]
            image = ax.imshow(array[layer, head], vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest")
            ax.set_title(f"L{layer} H{head}", fontsize=9)
            ax.set_xticks(range(size), labels=list(tokens), fontsize=7, rotation=90)
            ax.set_yticks(range(size), labels=list(tokens), fontsize=7)
            if col == 0:
                ax.set_ylabel("query", fontsize=8)
            if row == len(layers) - 1:
                ax.set_xlabel("key", fontsize=8)
    figure.colorbar(image, ax=axes, shrink=0.8, label="attention weight")
    if title:
        figure.suptitle(title)
    try:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format=fmt, dpi=120)
    except OSError as exc:
        raise MctError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
