"""Ten-digit addition: train configs/add10.toml (optional) and measure it on uniformly random pairs.

    python benchmarks/add10.py --train            # train into runs/add10, then evaluate
    python benchmarks/add10.py --checkpoint runs/add10/best.pt [--json]

The test file holds 10,000 pairs drawn uniformly from [0, 9_999_999_999] (so most operands have 10
digits, unlike the length-balanced training data) plus edge cases, as plain external records
(`prompt`, `answer`): `mct eval` renders them into the model's zero-padded format itself.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 9_999_999_999
EDGE_CASES = [(0, 0), (0, 1), (LIMIT, 0), (LIMIT, 1), (LIMIT, LIMIT), (5_000_000_000, 5_000_000_000),
              (1_111_111_111, 8_888_888_889), (1, LIMIT)]


def test_pairs(n: int = 10_000, seed: int = 2026) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(rng.randint(0, LIMIT), rng.randint(0, LIMIT)) for _ in range(n)] + EDGE_CASES


def write_test_file(path: Path, pairs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"prompt": f"{a}+{b}=", "answer": str(a + b)}) + "\n" for a, b in pairs))


def mct(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "mct", *args, "--json"], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"mct {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", action="store_true", help="train configs/add10.toml into --run first")
    parser.add_argument("--run", default="runs/add10", help="run folder (default runs/add10)")
    parser.add_argument("--checkpoint", default=None, help="checkpoint to evaluate (default RUN/best.pt)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    run = ROOT / args.run
    train_summary = None
    if args.train:
        started = time.perf_counter()
        train_summary = mct("train", "--config", "configs/add10.toml", "--out", str(run), "--force")
        train_summary["process_wall_s"] = round(time.perf_counter() - started, 1)
    checkpoint = args.checkpoint or str(run / "best.pt")
    test_file = run / "add10_uniform_test.jsonl"
    pairs = test_pairs()
    write_test_file(test_file, pairs)
    report = mct("eval", checkpoint, str(test_file), "--errors", str(run / "add10_errors.jsonl"), "--force")
    edge_file = run / "add10_edge_cases.jsonl"
    write_test_file(edge_file, EDGE_CASES)
    edge = mct("eval", checkpoint, str(edge_file))
    result = {"benchmark": "add10", "checkpoint": checkpoint, "test_file": str(test_file), "n": report["n"],
              "exact_match": report["exact_match"], "edge_cases_right": round(edge["exact_match"] * len(EDGE_CASES)),
              "edge_cases": len(EDGE_CASES),
              "train_wall_s": train_summary["wall_s"] if train_summary else None,
              "train_steps": train_summary["steps"] if train_summary else None}
    if args.json:
        print(json.dumps(result))
        return
    print("ten-digit addition on uniformly random pairs in [0, 9999999999] plus edge cases")
    print(f"{'checkpoint':<28} {'n':>7} {'exact match':>12} {'edge cases':>11} {'train s':>8} {'steps':>6}")
    print(f"{checkpoint:<28} {result['n']:>7,} {result['exact_match']:>12.4%} "
          f"{result['edge_cases_right']:>5}/{result['edge_cases']:<5} {result['train_wall_s'] or '-':>8} "
          f"{result['train_steps'] or '-':>6}")


if __name__ == "__main__":
    main()
