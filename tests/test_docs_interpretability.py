"""Every ```python block of docs/interpretability.md runs, in order, in one namespace (the docs cannot rot).

A block preceded by the line `<!-- not-executed -->` is skipped (for examples that need a trained
checkpoint); use it sparingly.
"""

import contextlib
import io
import re
from pathlib import Path

import torch

DOC = Path(__file__).resolve().parent.parent / "docs" / "interpretability.md"
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


def test_docs_have_the_seed_examples():
    text = DOC.read_text()
    for needle in ("return_attention_weights=True", "register_hook", "generate_next_token", "forward_analysis",
                   "run_with_cache", "step_masking_mode", "mct train --config"):
        assert needle in text, needle
    assert len(python_blocks(text)) >= 6


def test_every_python_block_runs_in_order():
    namespace: dict = {"__name__": "docs_interpretability"}
    torch.manual_seed(0)
    for line, code in python_blocks(DOC.read_text()):
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(code, f"{DOC.name}:{line}", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the failure message is the point
            raise AssertionError(f"docs/interpretability.md block at line {line} failed: {exc!r}") from exc
