"""Figures that mct writes: training curves and accuracy by operand length.

Each is drawn on a `Figure` of its own (no pyplot), so a notebook's matplotlib backend is left alone,
and saved atomically."""

from __future__ import annotations

from pathlib import Path


def _figure(width: float, height: float, columns: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, columns)


def _save(fig, path: Path) -> None:
    from mct.fileio import atomic_path

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def plot_curves(metrics: list[dict], path: Path) -> None:
    """Training loss, validation loss and validation exact-match against steps, in one PNG."""
    train_rows = [r for r in metrics if "loss" in r]
    val_rows = [r for r in metrics if "val_exact_match" in r]
    fig, (ax_loss, ax_acc) = _figure(10, 3.8, columns=2)
    if train_rows:
        ax_loss.plot([r["step"] for r in train_rows], [r["loss"] for r in train_rows], label="train loss", lw=1)
    if val_rows:
        ax_loss.plot([r["step"] for r in val_rows], [r["val_loss"] for r in val_rows], "o-", label="val loss", ms=3)
        ax_acc.plot([r["step"] for r in val_rows], [r["val_exact_match"] for r in val_rows], "o-", ms=3)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss per labelled token")
    ax_loss.legend()
    ax_acc.set_xlabel("step")
    ax_acc.set_ylabel("validation exact match")
    ax_acc.set_ylim(-0.02, 1.02)
    ax_acc.grid(alpha=0.3)
    _save(fig, path)


def plot_by_length(by_length: dict[str, dict], path: Path, title: str = "", trained_up_to: int | None = None) -> None:
    """Exact match against operand length (the longer operand's digits), one point per length present."""
    lengths = sorted(int(k) for k in by_length)
    fig, ax = _figure(7, 3.8)
    ax.plot(lengths, [by_length[str(n)]["exact_match"] for n in lengths], "o-", ms=4)
    if trained_up_to is not None:
        ax.axvline(trained_up_to + 0.5, color="grey", ls="--", lw=1)
        ax.text(trained_up_to + 0.7, 0.05, "longer than training", color="grey", fontsize=8)
    ax.set_xlabel("operand length (digits of the longer operand)")
    ax.set_ylabel("exact match")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    _save(fig, path)
