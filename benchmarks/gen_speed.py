"""Records per second of `mct gen add --steps` (the same code path: mct.data.generate.write_dataset).

    python benchmarks/gen_speed.py                    # 1,000,000 training records, one table
    python benchmarks/gen_speed.py --instances 200000 --json

Operands are 1-4 digits: 1-3 digit addition has only 1,000,000 distinct problems, fewer than the
1,000,000 + val + test records asked for. Files go to a temporary folder that is removed afterwards.
`records/s (CPU)` divides by this process's CPU time, which a busy machine disturbs less than wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from mct.config import DataConfig
from mct.data.generate import write_dataset


def measure(instances: int, max_digits: int = 4, use_steps: bool = True) -> dict:
    config = DataConfig(task="add", use_steps=use_steps, min_digits=1, max_digits=max_digits, n_train=instances)
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = time.perf_counter(), time.process_time()
        manifest = write_dataset(config, Path(tmp) / "add")
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        size = sum(f.stat().st_size for f in (Path(tmp) / "add").iterdir())
    records = sum(manifest["counts"].values())
    return {
        "benchmark": "gen_speed", "task": "add", "steps": use_steps, "digits": f"1-{max_digits}",
        "records": records, "seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
        "records_per_s": round(records / wall), "records_per_s_cpu": round(records / cpu),
        "mb_written": round(size / 1e6, 1), "machine": f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1_000_000, help="training records (default 1000000)")
    parser.add_argument("--max-digits", type=int, default=4, help="longest operand (default 4)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args()
    result = measure(args.instances, args.max_digits)
    if args.json:
        print(json.dumps(result))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="mct gen add --steps: generation speed", caption=result["machine"])
    for column in ("records", "digits", "wall s", "records/s", "CPU s", "records/s (CPU)", "MB"):
        table.add_column(column)
    table.add_row(f"{result['records']:,}", result["digits"], f"{result['seconds']:.2f}", f"{result['records_per_s']:,}",
                  f"{result['cpu_seconds']:.2f}", f"{result['records_per_s_cpu']:,}", f"{result['mb_written']}")
    Console().print(table)


if __name__ == "__main__":
    main()
