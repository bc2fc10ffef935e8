"""Every ```python block of docs/interpretability.md runs, in order, in one namespace (the docs cannot rot).

The blocks run in a fresh folder holding a tiny trained checkpoint at runs/demo/best.pt, where
`make demo` writes the real one. A block preceded by the line `<!-- not-executed -->` is skipped; use it
sparingly. The README's Python example runs the same way.
"""

import contextlib
import io
import re
import shutil
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "interpretability.md"
README = ROOT / "README.md"
BLOCK = re.compile(r"^(?P<before>[^\n]*)\n```python\n(?P<code>.*?)^```", flags=re.S | re.M)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, code) of every executed ```python block."""
    blocks = []
    for match in BLOCK.finditer("\n" + text):
        if match.group("before").strip() == "<!-- not-executed -->":
            continue
        line = text[: match.start("code")].count("\n")
        blocks.append((line, match.group("code")))
    return blocks


def run_blocks(doc: Path) -> dict:
    namespace: dict = {"__name__": "docs_" + doc.stem}
    torch.manual_seed(0)
    for line, code in python_blocks(doc.read_text()):
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(code, f"{doc.name}:{line}", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the failure message is the point
            raise AssertionError(f"{doc.name} block at line {line} failed: {exc!r}") from exc
    return namespace


def demo_checkpoint_in(folder: Path, checkpoint: Path) -> None:
    """A folder laid out as after `make demo`: runs/demo/best.pt (here the tiny trained model)."""
    (folder / "runs" / "demo").mkdir(parents=True)
    shutil.copy(checkpoint, folder / "runs" / "demo" / "best.pt")


def test_docs_have_the_seed_examples():
    text = DOC.read_text()
    for needle in ("return_attention_weights=True", "register_hook", "generate_next_token", "forward_analysis",
                   "run_with_cache", "step_masking_mode", "mct train --config", "mct.load", "plt.savefig"):
        assert needle in text, needle
    assert len(python_blocks(text)) >= 7


def test_every_python_block_runs_in_order(tiny_trained_checkpoint, tmp_path, monkeypatch):
    demo_checkpoint_in(tmp_path, tiny_trained_checkpoint)
    monkeypatch.chdir(tmp_path)
    namespace = run_blocks(DOC)
    assert namespace["CHECKPOINT"] == "runs/demo/best.pt"
    assert (tmp_path / "attention.png").stat().st_size > 0  # the mct.load example's figure


def test_the_readme_python_example_runs(tiny_trained_checkpoint, tmp_path, monkeypatch):
    demo_checkpoint_in(tmp_path, tiny_trained_checkpoint)
    monkeypatch.chdir(tmp_path)
    namespace = run_blocks(README)
    assert namespace["cache"]["pattern", 0].shape == (1, 4, 8, 8)   # as the README says
