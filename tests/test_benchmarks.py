"""Benchmarks that need something mct does not ship say so in one line and exit 2; hard_cases.py's sets; knobs.py."""

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
    assert rows["random"]["n"] == rows["uniform"]["n"] == 40
    assert rows["stopping chains 3/1"]["n"] == 8  # four chains, each also swapped (a negative answer)
    assert set(rows) == {"random", "uniform", "stopping chains 3/1", "full chains 1", "full chains 2", "near ties 2",
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


def test_hard_cases_multiplication_sets_hold_edge_factors_and_inner_zeros():
    """mul: 0, 1, 10^k and 9..9 of every length in range, on either side, every 9..9 x 9..9 pair, and operands
    with a zero inside; every operand within the checkpoint's lengths."""
    from benchmark_script import load_benchmark

    hard_cases = load_benchmark("hard_cases")
    sets = hard_cases.problem_sets("mul", 1, 3, samples=0, chains=20, exhaustive=False, seed=1)
    assert set(sets) == {"edge factors", "inner zeros", "near powers of ten"}  # --samples 0: no random or uniform
    near = sets["near powers of ten"]  # 20 for each of the pairs of lengths 2-3 x 2-3
    assert len(near) == 80 and all(len(str(x)) >= 2 and str(x)[0] == "9" for pair in near for x in pair)
    assert {(len(str(a)), len(str(b))) for a, b in near} == {(2, 2), (2, 3), (3, 2), (3, 3)}
    assert sum(min(a, b) >= 990 for a, b in near) >= 5  # both factors 99x: 998 * 999
    uniform = hard_cases.problem_sets("mul", 1, 3, samples=4000, chains=0, exhaustive=False, seed=1)["uniform"]
    assert all(0 <= x <= 999 for pair in uniform for x in pair)
    assert 0.77 < sum(a >= 100 and b >= 100 for a, b in uniform) / len(uniform) < 0.85  # 81% are 3 x 3
    edges = sets["edge factors"]
    for edge in (0, 1, 10, 100, 9, 99, 999):
        assert sum(a == edge for a, _ in edges) >= 20 and sum(b == edge for _, b in edges) >= 20
    assert {(a, b) for a in (9, 99, 999) for b in (9, 99, 999)} <= set(edges)
    assert all(1 <= len(str(x)) <= 3 for pair in edges + sets["inner zeros"] for x in pair)
    assert all(str(x)[1] == "0" for pair in sets["inner zeros"] for x in pair)
    assert set(hard_cases.problem_sets("sub", 1, 3, samples=0, chains=0, exhaustive=True, seed=1)) == {
        "all problems", "full chains 1", "full chains 2"}  # no empty sets: --samples 0 --chains 0 --exhaustive
    two_digit = hard_cases.problem_sets("mul", 2, 2, samples=0, chains=5, exhaustive=False, seed=1)
    assert "inner zeros" not in two_digit and all(len(str(x)) == 2 for pair in two_digit["edge factors"] for x in pair)


def test_hard_cases_names_a_missing_checkpoint_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(HARD_CASES), str(tmp_path / "none.pt")], capture_output=True, text=True)
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


KNOBS = SCRIPT.parent / "knobs.py"


def test_knobs_trains_the_rows_asked_for_with_their_setting(tmp_path):
    import json

    proc = subprocess.run([sys.executable, str(KNOBS), "--only", "d_head", "--max-steps", "2", "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["rows"]
    assert [(r["knob"], r["arguments"], r["train_steps"]) for r in rows] == [("d_head 8", "--set model.d_head=8", 2)]
    assert 0 <= rows[0]["test_exact_match"] <= 1 and rows[0]["stopped"] == "max_steps"


def test_knobs_names_the_rows_when_none_matches():
    proc = subprocess.run([sys.executable, str(KNOBS), "--only", "nothing-like-it"], capture_output=True, text=True)
    assert proc.returncode == 2 and "no row matches; rows: default, --ffn geglu" in proc.stderr


@pytest.mark.parametrize("task", ["add", "sub"])
def test_length_shapes_have_their_lengths_and_pass_carries_through_the_middle(task):
    sys.path.insert(0, str(SCRIPT.parent))
    from length import long_shapes

    problems = long_shapes(task, 11, 40)
    assert len(problems) == 16 * 30 and len(set(problems)) > 400
    for index, (a, b) in enumerate(problems):
        length = 11 + index // 16
        assert max(len(str(a)), len(str(b))) == length
        if index % 16 in (4, 5, 6):  # a carry (borrow) passed on by the middle columns
            middle = [(int(x), int(y)) for x, y in zip(str(a)[-length + 1:-1], str(b)[-length + 1:-1])][-5:]
            assert all(x + y == 9 if task == "add" else x == y for x, y in middle)
        if index % 16 >= 10:  # repeated digits
            assert len(set(str(a))) == len(set(str(b))) == 1


def test_cli_latency_refuses_a_folder_that_is_not_a_checkout(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT.parent / "cli_latency.py"), "--trees", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"error: {tmp_path.resolve()} is not an mct checkout (no mct/__main__.py)"


def test_the_gpu_check_script_runs_its_stages_and_reports_each_run(tmp_path):
    """benchmarks/gpu_check.sh is run where device time is scarce: a CPU smoke run of every stage it can do
    here catches a broken script before it spends a lease."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "DEVICE": "cpu", "A1": "graph", "SKIP": "A1b A2 A3", "TRAIN_ARGS": "--max-steps 5",
           "CONFIGS": "default", "TESTS": "tests/test_tokenizer.py", "PYTHON": sys.executable, "DEADLINE": "300"}
    proc = subprocess.run(["bash", str(root / "benchmarks" / "gpu_check.sh"), str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=root, env=env)
    assert proc.returncode == 0, proc.stderr
    log = proc.stdout
    assert "k1000-graph: 5 steps" in log and "cfg-default: 5 steps" in log, log
    assert "tests exit 0" in log and "=== done" in log, log
    assert (tmp_path / "out" / "cfg-default.json").is_file() and (tmp_path / "out" / "tests.txt").is_file()
