"""Seconds a user waits for each `mct` command on a trained checkpoint, process start to exit.

    .venv/bin/python benchmarks/cli_latency.py                       # one table, this checkout
    .venv/bin/python benchmarks/cli_latency.py --trees . /tmp/old    # two checkouts, interleaved
    .venv/bin/python benchmarks/cli_latency.py --json

Every command runs as its own process (`python -m mct ...`, the tree first on PYTHONPATH), `--repeats` times;
with several `--trees` the runs alternate between them, so a busy moment of this shared machine hits both
alike; the table gives each command's median and, for a second tree, its median over the first tree's. The
checkpoint and data folder are made once, by the first tree: `mct train` with a few steps (the answers do not
matter for the time) and `mct gen add`. Most of a quick command's time is importing torch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = {  # name -> arguments after `mct`; {ckpt}, {data} and {out} are filled in
    "--help": ["--help"],
    "generate": ["generate", "{ckpt}", "12+34=", "999+1="],
    "eval (500 problems)": ["eval", "{ckpt}", "{data}", "--limit", "500"],
    "attn": ["attn", "{ckpt}", "12+34=", "--out", "{out}/attention.png", "--force"],
}


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def mct(tree: Path, arguments: list[str], threads: int) -> float:
    """Seconds of one `python -m mct ARGUMENTS` process run from `tree`; a failure stops the benchmark."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mct", *arguments], capture_output=True, text=True, env=env,
                          cwd=tree)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        fail(f"`mct {' '.join(arguments)}` in {tree} exited {proc.returncode}: "
             f"{(proc.stderr.strip().splitlines() or ['no message'])[-1]}")
    return seconds


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=Path, nargs="+", default=[ROOT], help="checkouts to time (default: this one)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of every process")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    trees = [tree.resolve() for tree in args.trees]
    for tree in trees:
        if not (tree / "mct" / "__main__.py").is_file():
            fail(f"{tree} is not an mct checkout (no mct/__main__.py)")

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        mct(trees[0], ["train", "--out", str(work / "run"), "--max-steps", "20", "--set", "train.device=cpu"],
            args.threads)
        mct(trees[0], ["gen", "add", "--out", str(work / "data"), "-n", "1000"], args.threads)
        fill = {"ckpt": str(work / "run" / "best.pt"), "data": str(work / "data"), "out": str(work)}
        times = {(name, str(tree)): [] for name in COMMANDS for tree in trees}
        for _ in range(args.repeats):
            for name, arguments in COMMANDS.items():
                for tree in trees:
                    times[(name, str(tree))].append(mct(tree, [a.format(**fill) for a in arguments], args.threads))

    rows = []
    for name in COMMANDS:
        first = statistics.median(times[(name, str(trees[0]))])
        for tree in trees:
            median = statistics.median(times[(name, str(tree))])
            rows.append({"command": name, "tree": str(tree), "median_s": round(median, 3),
                         "min_s": round(min(times[(name, str(tree))]), 3), "ratio_to_first": round(median / first, 3)})
    import torch

    output = {"benchmark": "cli_latency", "machine": f"{platform.processor() or platform.machine()}, "
              f"OMP_NUM_THREADS={args.threads}", "torch": torch.__version__, "repeats": args.repeats, "rows": rows}
    if args.json:
        print(json.dumps(output, indent=2))
        return output
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"mct command latency ({output['machine']}, torch {output['torch']}, "
                        f"median of {args.repeats})")
    for column in ("command", "tree", "median s", "min s", "vs first tree"):
        table.add_column(column, justify="left" if column in ("command", "tree") else "right")
    for row in rows:
        table.add_row(row["command"], row["tree"], f"{row['median_s']:.2f}", f"{row['min_s']:.2f}",
                      f"{row['ratio_to_first']:.2f}x")
    Console().print(table)
    return output


if __name__ == "__main__":
    main()
