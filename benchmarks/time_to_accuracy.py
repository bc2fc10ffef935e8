"""Wall time of the whole `mct train` process until the test exact-match target, and its peak memory.

    python benchmarks/time_to_accuracy.py                 # default and add5
    python benchmarks/time_to_accuracy.py --configs default --json

Each config is trained in a fresh process (`python -m mct train --config configs/NAME.toml`), exactly as
a user runs it; the wall time includes start-up, data generation, training and the final test
evaluation. Peak memory is the child's maximum resident set size.
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


def run_one(name: str, out: Path) -> dict:
    config = ROOT / "configs" / f"{name}.toml"
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mct", "train", "--config", str(config), "--out", str(out / name),
                           "--json"], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"mct train --config {config} failed:\n{proc.stderr[-2000:]}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    summary = json.loads(proc.stdout)
    return {
        "config": name,
        "wall_s": round(wall, 1),
        "train_steps": summary["steps"],
        "test_n": summary["test"]["n"],
        "test_exact_match": summary["test"]["exact_match"],
        "reached_target": summary["test"]["exact_match"] >= TARGET,
        "tokens_per_s": summary["tokens_per_s"],
        # ru_maxrss of children is the largest child so far; each config runs after the previous one.
        "peak_rss_mb": round(max(peak_kib, before) / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["default", "add5"])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run_one(name, Path(tmp)) for name in args.configs]
    if args.json:
        print(json.dumps({"benchmark": "time_to_accuracy", "target": TARGET, "rows": rows}))
        return
    print(f"time to >= {TARGET:.1%} test exact match (whole `mct train` process)")
    print(f"{'config':<10} {'wall s':>8} {'steps':>7} {'test n':>7} {'exact match':>12} {'tokens/s':>10} {'peak RSS MB':>12}")
    for r in rows:
        print(f"{r['config']:<10} {r['wall_s']:>8.1f} {r['train_steps']:>7} {r['test_n']:>7} "
              f"{r['test_exact_match']:>12.4%} {r['tokens_per_s']:>10,.0f} {r['peak_rss_mb']:>12.1f}")


if __name__ == "__main__":
    main()
