"""Every shipped config, trained as a user would and scored on its test split and its hard split.

    python benchmarks/recipes.py                           # every config in configs/ (long: see docs/recipes.md)
    python benchmarks/recipes.py --configs default sub3 mul2 --json
    make recipes

Each config runs `python -m mct train --config configs/NAME.toml` in a fresh process (exactly what a user
runs); the table shows parameters, steps, training wall time, exact match on the test split and on the
hard split (longest carry/borrow chains, boundaries, zeros; never trained on), and whether the config's
own `train.target_accuracy` (or 99%) was met on both.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP = {"gpu-small"}  # the 4 GB-card recipe: run it on a GPU (`--configs gpu-small --device cuda`)


def run_one(name: str, out: Path, device: str | None, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "mct", "train", "--config", str(ROOT / "configs" / f"{name}.toml"),
               "--out", str(out / name), "--json", *extra]
    if device:
        command += ["--device", device]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"config": name, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    summary = json.loads(proc.stdout)
    test = summary["test"] or {}
    hard = test.get("hard") or {}
    return {"config": name, "parameters": summary["parameters"], "steps": summary["steps"],
            "train_s": summary["train_s"], "process_s": round(wall, 1), "device": summary["device"],
            "test": test.get("exact_match"), "test_n": test.get("n"), "scored": test.get("scored", "answer"),
            "steps_correct": (test.get("steps") or {}).get("steps_correct"),
            "hard": hard.get("exact_match"), "hard_n": hard.get("n"), "stopped": summary["stopped"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=None, help="config names (default: every shipped one)")
    parser.add_argument("--device", default=None, help="override train.device")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="passed on to mct train --set")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    names = args.configs or sorted(p.stem for p in (ROOT / "configs").glob("*.toml") if p.stem not in SKIP)
    extra = [item for s in args.sets for item in ("--set", s)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rows.append(run_one(name, Path(tmp), args.device, extra))
            if not args.json:
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps({"benchmark": "recipes", "rows": rows}))
        return
    print(f"{'config':<14} {'params':>10} {'steps':>6} {'train s':>8} {'test':>9} {'hard':>9}  notes")
    for row in rows:
        if "error" in row:
            print(f"{row['config']:<14} error: {row['error']}")
            continue
        notes = [row["stopped"], row["device"]]
        if row["steps_correct"] is not None:
            notes.append(f"steps correct {row['steps_correct']:.2%}")
        if row["scored"] != "answer":
            notes.append(f"scored: {row['scored']}")
        hard = f"{row['hard']:.2%}" if row["hard"] is not None else "n/a"
        print(f"{row['config']:<14} {row['parameters']:>10,} {row['steps']:>6} {row['train_s']:>8.1f} "
              f"{row['test']:>9.2%} {hard:>9}  {', '.join(notes)}")


if __name__ == "__main__":
    main()
