"""Every ```python block of docs/interpretability.md runs, in order, in one namespace (the docs cannot rot).

The blocks run in a fresh folder holding a tiny trained checkpoint at runs/demo/best.pt, where
`make demo` writes the real one, and a tiny mod run at runs/mod113 (with checkpoints along the way). A
block preceded by the line `<!-- not-executed -->` is skipped; use it sparingly. A block preceded by
`<!-- needs transformer_lens -->` runs when the tl extra is installed (always under .ci/run, which sets
REQUIRE_TRANSFORMER_LENS=1). The README's Python example runs the same way.
"""

import contextlib
import importlib.util
import io
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from analysis_runs import train_mod_run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "interpretability.md"
README = ROOT / "README.md"
BLOCK = re.compile(r"^(?P<before>[^\n]*)\n```python\n(?P<code>.*?)^```", flags=re.S | re.M)


HAVE_TL = importlib.util.find_spec("transformer_lens") is not None or os.environ.get("REQUIRE_TRANSFORMER_LENS") == "1"


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, code) of every executed ```python block."""
    blocks = []
    for match in BLOCK.finditer("\n" + text):
        before = match.group("before").strip()
        if before == "<!-- not-executed -->" or (before == "<!-- needs transformer_lens -->" and not HAVE_TL):
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


@pytest.fixture(scope="module")
def tiny_mod_run(tmp_path_factory):
    """runs/mod113 of the docs: here a tiny mod run with checkpoints along the way."""
    run = tmp_path_factory.mktemp("mod") / "mod113"
    train_mod_run(run)
    return run


def test_docs_have_the_seed_examples():
    text = DOC.read_text()
    for needle in ("return_attention_weights=True", "register_hook", "generate_next_token", "forward_analysis",
                   "run_with_cache", "step_masking_mode", "mct train --config", "mct.load", "plt.savefig"):
        assert needle in text, needle
    assert len(python_blocks(text)) >= 7


def test_every_python_block_runs_in_order(tiny_trained_checkpoint, tiny_mod_run, tmp_path, monkeypatch):
    demo_checkpoint_in(tmp_path, tiny_trained_checkpoint)
    shutil.copytree(tiny_mod_run, tmp_path / "runs" / "mod113")
    monkeypatch.chdir(tmp_path)
    namespace = run_blocks(DOC)
    assert namespace["CHECKPOINT"] == "runs/demo/best.pt"
    assert (tmp_path / "attention.png").stat().st_size > 0  # the mct.load example's figure
    assert (tmp_path / "runs" / "demo" / "analysis" / "index.html").is_file()
    assert (tmp_path / "runs" / "mod113" / "analysis" / "grokking.png").is_file()
    if HAVE_TL:
        assert (tmp_path / "demo_tl.pt").is_file()


def test_every_figure_the_doc_shows_is_in_the_repository():
    for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", DOC.read_text()):
        assert (DOC.parent / target).is_file(), target


def test_the_readme_python_example_runs(tiny_trained_checkpoint, tmp_path, monkeypatch):
    demo_checkpoint_in(tmp_path, tiny_trained_checkpoint)
    monkeypatch.chdir(tmp_path)
    namespace = run_blocks(README)
    assert namespace["cache"]["pattern", 0].shape == (1, 4, 8, 8)   # as the README says
