"""Benchmarks that need something mct does not ship say so in one line and exit 2."""

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "nanogpt_parity.py"


def run_parity(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MCT_NANOGPT"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env)


def test_nanogpt_parity_without_nanogpt_names_the_flag():
    proc = run_parity()
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: nanoGPT's model.py is not given: pass --nanogpt PATH or set MCT_NANOGPT"]


def test_nanogpt_parity_with_a_missing_file_names_it(tmp_path):
    proc = run_parity("--nanogpt", str(tmp_path / "model.py"))
    assert proc.returncode == 2
    assert "model.py is not a file" in proc.stderr and "Traceback" not in proc.stderr
