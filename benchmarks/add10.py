"""Ten-digit addition, AdderBoard-style: train a config (optional) and check it on uniformly random pairs.

    python benchmarks/add10.py --train                                   # configs/add10.toml into runs/add10
    python benchmarks/add10.py --config configs/add10-tiny.toml --train  # into runs/add10-tiny
    python benchmarks/add10.py --checkpoint runs/add10/best.pt [--json]

The check follows AdderBoard (github.com/anadim/AdderBoard, verify.py): 10 edge cases plus 10,000 pairs
drawn uniformly from [0, 9_999_999_999] with `random.Random(2025)` (a, then b, per pair), exact match of
the whole sum, qualified at >= 99%; parameters are counted once per unique tensor (after tying). The
pairs are written as plain external records (`prompt`, `answer`) and scored by `mct eval`, which renders
them into the model's own format (here zero-padded operands, reversed answer) and decodes greedily.
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
# AdderBoard's verify.py edge cases, in its order (9999999999+9999999999 appears twice there too)
EDGE_CASES = [(0, 0), (0, 1), (LIMIT, 0), (LIMIT, 1), (LIMIT, LIMIT), (5_000_000_000, 5_000_000_000),
              (1_111_111_111, 8_888_888_889), (1_234_567_890, 9_876_543_210), (LIMIT, LIMIT), (1, LIMIT)]
QUALIFYING_ACCURACY = 0.99


def random_pairs(n: int = 10_000, seed: int = 2025) -> list[tuple[int, int]]:
    """AdderBoard's test pairs: `rng.randint(0, LIMIT)` for a, then for b, n times."""
    rng = random.Random(seed)
    return [(rng.randint(0, LIMIT), rng.randint(0, LIMIT)) for _ in range(n)]


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
    parser.add_argument("--config", default="configs/add10.toml", help="config to train (default configs/add10.toml)")
    parser.add_argument("--train", action="store_true", help="train --config into --run first (plain `mct train`)")
    parser.add_argument("--run", default=None, help="run folder (default runs/<config name>)")
    parser.add_argument("--checkpoint", default=None, help="checkpoint to check (default RUN/best.pt)")
    parser.add_argument("--n", type=int, default=10_000, help="random pairs (default 10,000)")
    parser.add_argument("--seed", type=int, default=2025, help="seed of the random pairs (AdderBoard: 2025)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    run = ROOT / (args.run or f"runs/{Path(args.config).stem}")
    train_summary = None
    if args.train:
        started = time.perf_counter()
        train_summary = mct("train", "--config", args.config, "--out", str(run), "--force")
        train_summary["process_wall_s"] = round(time.perf_counter() - started, 1)
    checkpoint = args.checkpoint or str(run / "best.pt")
    test_file = run / "add10_adderboard_test.jsonl"
    write_test_file(test_file, EDGE_CASES + random_pairs(args.n, args.seed))
    started = time.perf_counter()
    report = mct("eval", checkpoint, str(test_file), "--errors", str(run / "add10_errors.jsonl"), "--force")
    check_s = time.perf_counter() - started
    edge_file = run / "add10_edge_cases.jsonl"
    write_test_file(edge_file, EDGE_CASES)
    edge = mct("eval", checkpoint, str(edge_file))
    result = {"benchmark": "add10", "checkpoint": checkpoint, "test_file": str(test_file), "seed": args.seed,
              "n": report["n"], "exact_match": report["exact_match"], "correct": report["correct"],
              "qualified": report["exact_match"] >= QUALIFYING_ACCURACY,
              "unique_parameters": report.get("unique_parameters"),
              "edge_cases_right": round(edge["exact_match"] * len(EDGE_CASES)), "edge_cases": len(EDGE_CASES),
              "check_s": round(check_s, 1),
              "train_wall_s": train_summary["wall_s"] if train_summary else None,
              "train_steps": train_summary["steps"] if train_summary else None}
    if args.json:
        print(json.dumps(result))
        return
    print(f"ten-digit addition, AdderBoard-style: {len(EDGE_CASES)} edge cases + {args.n:,} uniformly random pairs "
          f"(seed {args.seed}), exact match, qualified at >= {QUALIFYING_ACCURACY:.0%}")
    print(f"{'checkpoint':<30} {'parameters':>10} {'n':>7} {'exact match':>12} {'edge cases':>11} "
          f"{'check s':>8} {'train s':>8} {'steps':>6}")
    params = result["unique_parameters"]
    print(f"{checkpoint:<30} {params if params is not None else '-':>10} {result['n']:>7,} "
          f"{result['exact_match']:>12.4%} {result['edge_cases_right']:>5}/{result['edge_cases']:<5} "
          f"{result['check_s']:>8} {result['train_wall_s'] or '-':>8} {result['train_steps'] or '-':>6}")
    print("QUALIFIED" if result["qualified"] else "NOT QUALIFIED")


if __name__ == "__main__":
    main()
