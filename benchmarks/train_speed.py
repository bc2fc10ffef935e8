"""Training throughput of the default config and its share of this CPU's measured fp32 matmul peak.

    python benchmarks/train_speed.py [--steps 60] [--json]

Model FLOPs per token are counted as 6 x parameters (forward + backward of every weight) plus the
attention scores (12 x layers x seq x d_model), the usual accounting; the peak is the best of a few
timed 1024x1024 fp32 matrix products with all torch threads.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from mct.config import load_config
from mct.train import train

ROOT = Path(__file__).resolve().parent.parent


def matmul_peak_gflops(size: int = 1024, repeats: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "default.toml"))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    config = load_config(args.config, overrides={"train": {
        "max_steps": args.steps, "eval_every": 10**9, "target_accuracy": None, "log_every": 10, "warmup_steps": 0}})
    with tempfile.TemporaryDirectory() as tmp:
        result = train(config, Path(tmp) / "run")
    m = config.model
    seq = config.data.max_seq_len
    mean_seq = 12  # tokens of a typical 3-digit addition example ("123+456=#975<eos>" is 17, shorter ones less)
    flops_per_token = 6 * result.parameters + 12 * m.num_layers * mean_seq * m.d_model
    peak = matmul_peak_gflops()
    achieved = result.tokens_per_s * flops_per_token / 1e9
    row = {"config": Path(args.config).stem, "steps": result.steps, "tokens_per_s": result.tokens_per_s,
           "model_gflops": round(achieved, 2), "matmul_peak_gflops": round(peak, 1),
           "share_of_peak": round(achieved / peak, 4), "parameters": result.parameters,
           "threads": torch.get_num_threads(), "max_seq_len": seq}
    if args.json:
        print(json.dumps({"benchmark": "train_speed", "rows": [row]}))
        return
    print("training throughput (CPU, fp32)")
    print(f"{'config':<10} {'params':>9} {'tokens/s':>10} {'model GFLOP/s':>14} {'matmul peak':>12} {'share':>7}")
    print(f"{row['config']:<10} {row['parameters']:>9,} {row['tokens_per_s']:>10,.0f} {row['model_gflops']:>14.2f} "
          f"{row['matmul_peak_gflops']:>12.1f} {row['share_of_peak']:>7.1%}")


if __name__ == "__main__":
    main()
