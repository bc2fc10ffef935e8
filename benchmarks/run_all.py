"""`make bench`: run every benchmark in benchmarks/ and print one combined table.

    python benchmarks/run_all.py [--quick] [--json]

Each script runs in its own process with `--json`; this script only collects and lays out their
figures (the scripts print their own detailed tables when run alone). The comparison with nanoGPT runs
when MCT_NANOGPT names nanoGPT's model.py. --quick shrinks the sizes so the whole run takes a couple of
minutes (the figures are then noisier and the time-to-accuracy runs skipped).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def run(script: str, *args: str) -> dict:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HERE / script), "--json", *args], capture_output=True, text=True,
                          cwd=HERE.parent)
    if proc.returncode != 0:
        raise SystemExit(f"{script} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout)
    result["_seconds"] = time.perf_counter() - started
    return result


def rows_of(results: dict) -> list[tuple[str, str, str]]:
    """(what, case, figure) rows from every benchmark's JSON."""
    rows = []
    gen = results.get("gen_speed")
    if gen:
        rows.append(("data generation", f"add --steps, {gen['records']:,} records", f"{gen['records_per_s']:,} records/s"))
    speed = results.get("train_speed")
    if speed:
        r = speed["rows"][0]
        rows.append(("training throughput", f"{r['config']} ({r['parameters']:,} params)", f"{r['tokens_per_s']:,.0f} tokens/s"))
        rows.append(("share of matmul peak", f"{r['model_gflops']} of {r['matmul_peak_gflops']} GFLOP/s",
                     f"{r['share_of_peak']:.1%}"))
    tta = results.get("time_to_accuracy")
    if tta:
        for r in tta["rows"]:
            rows.append(("time to 99.9%", f"{r['config']}: test EM {r['test_exact_match']:.2%} of {r['test_n']:,}, "
                         f"hard {r['hard_exact_match']:.2%}", f"{r['wall_s']:.1f} s ({r['train_s']:.1f} s training, "
                         f"{r['train_steps']} steps)"))
        rows.append(("peak memory (RSS)", "mct train, largest of the runs above", f"{max(r['peak_rss_mb'] for r in tta['rows']):.0f} MB"))
    model = results.get("model_speed")
    if model:
        for r in model["rows"]:
            if r["kind"] == "greedy decode" and r["variant"] == "kv cache":
                rows.append(("decoding", f"batch {r['batch']}, {r['seq']} new tokens: cache vs none",
                             f"{r['tokens_per_s']:,.0f} tok/s ({r['speedup']:.1f}x)"))
            elif r["kind"] == "train fwd+bwd" and r["variant"] in ("sdpa", "explicit", "hooks absent"):
                rows.append(("fwd+bwd", f"{r['model']} batch {r['batch']} seq {r['seq']}, {r['variant']}",
                             f"{r['tokens_per_s']:,.0f} tokens/s"))
    parity = results.get("nanogpt_parity")
    if parity:
        for r in parity["rows"]:
            rows.append(("vs nanoGPT", f"{r['case']} {r['kind']}, batch {r['batch']}: mct / nanoGPT tokens/s",
                         f"{r['ratio']:.2f}x"))
    evals = results.get("eval_speed")
    if evals:
        for r in evals["rows"]:
            rows.append(("eval", f"{r['digits']}-digit, batch {r['batch_size']}, {'cache' if r['kv_cache'] else 'no cache'}"
                         f", {r['problems']:,} problems", f"{r['problems_per_s']:,.0f} problems/s"))
    latency = results.get("cli_latency")
    if latency:
        for r in latency["rows"]:
            rows.append(("command latency", f"mct {r['command']}, process start to exit", f"{r['median_s']:.2f} s"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, no time-to-accuracy runs")
    parser.add_argument("--json", action="store_true", help="print every benchmark's JSON in one object")
    args = parser.parse_args()
    quick = args.quick
    results = {
        "gen_speed": run("gen_speed.py", *(["--instances", "100000"] if quick else [])),
        "train_speed": run("train_speed.py", *(["--steps", "20"] if quick else [])),
        "model_speed": run("model_speed.py", *(["--budget", "0.5"] if quick else [])),
        "eval_speed": run("eval_speed.py", *(["--n", "1000", "--n-batch1", "20"] if quick else [])),
        "cli_latency": run("cli_latency.py", *(["--repeats", "1"] if quick else [])),
    }
    if not quick:
        results["time_to_accuracy"] = run("time_to_accuracy.py")
    if os.environ.get("MCT_NANOGPT"):  # nanoGPT is not vendored: its model.py is compared where given
        results["nanogpt_parity"] = run("nanogpt_parity.py", *(["--budget", "1"] if quick else []))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    rows = rows_of(results)
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
               f"({torch.get_num_threads()} threads), Python {platform.python_version()}")
    width = max(len(r[1]) for r in rows)
    print(f"mct benchmarks on {machine}")
    print(f"{'what':<22} {'case':<{width}} figure")
    for what, case, figure in rows:
        print(f"{what:<22} {case:<{width}} {figure}")


if __name__ == "__main__":
    main()
