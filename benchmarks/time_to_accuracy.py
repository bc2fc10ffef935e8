"""Wall time of the whole `mct train` process until the test exact-match target, and its peak memory.

    python benchmarks/time_to_accuracy.py                 # default and add5
    python benchmarks/time_to_accuracy.py --configs default --seeds 0 1 2 --threads 1 --json

Each config is trained in a fresh process (`python -m mct train --config configs/NAME.toml`), exactly as
a user runs it; `wall s` includes start-up, data generation, training, the periodic validation and the
final test evaluation; `train s` is the time in training steps alone (`mct train`'s `train_s`: what the
time-to-accuracy targets count). `hard` is the exact match on the run's hard split. Peak memory is the
child's maximum resident set size.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.999


def run_one(name: str, out: Path, seed: int | None = None, threads: int | None = None,
            extra: tuple[str, ...] = (), folder: str | None = None) -> dict:
    """One `mct train --config configs/NAME.toml` process; `extra`: more arguments (flags, --set items)."""
    config = ROOT / "configs" / f"{name}.toml"
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    options = [] if seed is None else ["--set", f"train.seed={seed}"]
    options += [] if threads is None else ["--set", f"train.num_threads={threads}"]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mct", "train", "--config", str(config), "--out",
                           str(out / (folder or f"{name}-{seed}")), "--json", *options, *extra],
                          capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"mct train --config {config} {' '.join(extra)} failed:\n{proc.stderr[-2000:]}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    summary = json.loads(proc.stdout)
    return {
        "config": name,
        "seed": seed,
        "wall_s": round(wall, 1),
        "train_s": summary["train_s"],
        "train_steps": summary["steps"],
        "target_step": summary.get("target_step"),
        "stopped": summary["stopped"],
        "test_n": summary["test"]["n"],
        "test_exact_match": summary["test"]["exact_match"],
        "hard_n": summary["test"]["hard"]["n"],
        "hard_exact_match": summary["test"]["hard"]["exact_match"],
        "reached_target": summary["test"]["exact_match"] >= TARGET,
        "tokens_per_s": summary["tokens_per_s"],
        # ru_maxrss of children is the largest child so far; each config runs after the previous one.
        "peak_rss_mb": round(max(peak_kib, before) / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["default", "add5"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[None], help="train.seed of each run (default: the config's)")
    parser.add_argument("--threads", type=int, default=None, help="train.num_threads (default: torch's choice)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run_one(name, Path(tmp), seed, args.threads) for name in args.configs for seed in args.seeds]
    if args.json:
        print(json.dumps({"benchmark": "time_to_accuracy", "target": TARGET, "rows": rows}))
        return
    print(f"time to >= {TARGET:.1%} test exact match (whole `mct train` process; train s = training steps alone)")
    print(f"{'config':<10} {'seed':>5} {'wall s':>8} {'train s':>8} {'steps':>7} {'test n':>7} {'exact match':>12} "
          f"{'hard':>8} {'tokens/s':>10} {'peak RSS MB':>12}")
    for r in rows:
        seed = "-" if r["seed"] is None else r["seed"]
        print(f"{r['config']:<10} {seed:>5} {r['wall_s']:>8.1f} {r['train_s']:>8.2f} {r['train_steps']:>7} {r['test_n']:>7} "
              f"{r['test_exact_match']:>12.2%} {r['hard_exact_match']:>8.2%} {r['tokens_per_s']:>10,.0f} "
              f"{r['peak_rss_mb']:>12.1f}")


if __name__ == "__main__":
    main()
