"""Benchmarks that need something mct does not ship say so in one line and exit 2; hard_cases.py's sets."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

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


HARD_CASES = SCRIPT.parent / "hard_cases.py"


def test_hard_cases_prints_one_row_per_set_with_its_count(tmp_path):
    from tiny_checkpoint import make_checkpoint

    checkpoint = make_checkpoint(tmp_path / "tiny.pt", task="sub", pad_operands=True)
    proc = subprocess.run([sys.executable, str(HARD_CASES), str(checkpoint), "--samples", "40", "--chains", "4",
                           "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    import json

    rows = {row["set"]: row for row in json.loads(proc.stdout)["rows"]}
    assert rows["random"]["n"] == 40
    assert rows["stopping chains 3/1"]["n"] == 8  # four chains, each also swapped (a negative answer)
    assert set(rows) == {"random", "stopping chains 3/1", "full chains 1", "full chains 2", "near ties 2",
                         "near ties 3"}
    assert all(0 <= row["wrong"] <= row["n"] for row in rows.values())


@pytest.mark.parametrize("task", ["add", "sub"])
def test_hard_cases_near_ties_tie_down_to_the_last_columns(task):
    """sub: equal lengths, |a - b| <= 10 (the last columns decide the sign); add: equal lengths, a + b
    within 10 of 10^L - 1 (the last columns decide whether a carry reaches the top)."""
    from benchmark_script import load_benchmark

    hard_cases = load_benchmark("hard_cases")
    sets = hard_cases.problem_sets(task, 1, 5, samples=0, chains=300, exhaustive=False, seed=1)
    for length in range(2, 6):
        pairs = sets[f"near ties {length}"]
        assert len(pairs) > 250 and all(len(str(a)) == len(str(b)) == length for a, b in pairs)
        gaps = [b - a if task == "sub" else a + b - (10**length - 1) for a, b in pairs]
        assert all(-10 <= gap <= 10 for gap in gaps) and len(set(gaps)) == 21


def test_hard_cases_names_a_missing_checkpoint_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(HARD_CASES), str(tmp_path / "none.pt")], capture_output=True, text=True)
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
