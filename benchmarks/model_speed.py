"""Model speed on the CPU: forward+backward tokens/s, attention paths, hook overhead, KV-cache decoding.

    python benchmarks/model_speed.py            # one table
    python benchmarks/model_speed.py --json     # one JSON object (for a combined runner)

Rows:
- train fwd+bwd, tokens/s, for configs/default.toml's model (its batch size and seq 32) and
  configs/gpu-small.toml's model (batch 8, seq 64, so it stays quick on a CPU), each with
  - `sdpa`: the fused attention the trainer uses,
  - `explicit`: the inspectable softmax path (return_attention_weights=True),
  - `hooks absent`: every HookPoint replaced by a plain function (what a model without hook points costs),
    to compare with `sdpa`, where the HookPoints are there but unused;
- greedy decoding tokens/s (batch 1 and batch 32) of the default model with and without the KV cache,
  for 8-, 32- and 128-token answers after an 8-token prompt (max_seq_len raised to fit).
Variants are timed in alternating rounds (median of >= 3), after one warmup call each; total about a minute.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mct.config import load_config  # noqa: E402
from mct.model import HookPoint, create_model  # noqa: E402


def strip_hook_points(model: torch.nn.Module) -> torch.nn.Module:
    """A copy whose HookPoints are plain identity functions (no module call at all)."""
    model = copy.deepcopy(model)
    for module in list(model.modules()):
        for name, child in list(module._modules.items()):
            if isinstance(child, HookPoint):
                del module._modules[name]
                object.__setattr__(module, name, _identity())
    return model


def _identity():
    def identity(x):
        return x

    identity._forward_hooks = identity._forward_pre_hooks = {}
    identity.has_hooks = lambda dir="both": False  # asked by Attention and Norm to pick their path
    return identity


def interleaved(steps: dict, warmup: int, budget_s: float, min_rounds: int) -> dict:
    """Median seconds per call of each step, timed in alternating rounds (A, B, C, A, B, C, ...) so that a
    noisy machine slows every variant alike. At least min_rounds rounds, more while within budget_s."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    samples = {name: [] for name in steps}
    start, rounds = time.perf_counter(), 0
    while rounds < min_rounds or time.perf_counter() - start < budget_s:
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            samples[name].append(time.perf_counter() - t0)
        rounds += 1
    return {name: statistics.median(times) for name, times in samples.items()}


def train_rows(name: str, model_config, batch: int, seq: int, budget_s: float) -> list[dict]:
    torch.manual_seed(0)
    model = create_model(model_config).train()
    stripped = strip_hook_points(model).train()
    ids = torch.randint(2, model_config.vocab_size, (batch, seq))
    mask = torch.ones(batch, seq, dtype=torch.bool)
    mask[: batch // 4, seq - seq // 4:] = False  # a quarter of the rows right-padded, as collate makes them
    labels = ids.masked_fill(~mask, -100)

    def step_of(net, explicit):
        def step():
            net.zero_grad(set_to_none=True)
            _, loss, _ = net(ids, mask, labels, return_attention_weights=explicit)
            loss.backward()
        return step

    seconds = interleaved({"sdpa": step_of(model, False), "explicit": step_of(model, True),
                           "hooks absent": step_of(stripped, False)}, warmup=1, budget_s=budget_s, min_rounds=3)
    return [{"kind": "train fwd+bwd", "model": name, "variant": variant, "batch": batch, "seq": seq,
             "ms_per_step": s * 1e3, "tokens_per_s": batch * seq / s} for variant, s in seconds.items()]


def decode_rows(model_config, batch_sizes, answer_lengths, budget_s: float) -> list[dict]:
    prompt_len = 8
    config = model_config.model_copy(update={"max_seq_len": prompt_len + max(answer_lengths)})
    torch.manual_seed(0)
    model = create_model(config).eval()
    rows = []
    for batch in batch_sizes:
        prompt = torch.randint(2, config.vocab_size, (batch, prompt_len))
        for new in answer_lengths:
            seconds = interleaved({True: lambda: model.generate(prompt, new, use_cache=True),
                                   False: lambda: model.generate(prompt, new, use_cache=False)},
                                  warmup=1, budget_s=budget_s, min_rounds=3)
            for use_cache in (True, False):
                rows.append({"kind": "greedy decode", "model": "default",
                             "variant": "kv cache" if use_cache else "no cache", "batch": batch, "seq": new,
                             "ms_per_step": seconds[use_cache] * 1e3 / new,
                             "tokens_per_s": batch * new / seconds[use_cache]})
            rows[-2]["speedup"] = seconds[False] / seconds[True]
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds per timed group of rows (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    default = load_config(ROOT / "configs" / "default.toml", environ={})
    gpu_small = load_config(ROOT / "configs" / "gpu-small.toml", environ={})
    rows = []
    rows += train_rows("default", default.model, default.train.batch_size,
                       min(32, default.data.max_seq_len), args.budget)
    rows += train_rows("gpu-small", gpu_small.model, 8, 64, args.budget)
    rows += decode_rows(default.model, (1, 32), (8, 32, 128), args.budget / 2)
    result = {
        "benchmark": "model_speed",
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "rows": rows,
        "seconds": time.perf_counter() - started,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    machine = result["machine"]
    print(f"model_speed: torch {machine['torch']}, {machine['threads']} threads, {machine['cpu_count']} CPUs, "
          f"{machine['processor']}")
    header = f"{'kind':<14} {'model':<10} {'variant':<13} {'batch':>5} {'seq/new':>7} {'ms/step':>9} {'tokens/s':>10} {'cache x':>7}"
    print(header)
    print("-" * len(header))
    for row in rows:
        speedup = f"{row['speedup']:.1f}" if "speedup" in row else ""
        print(f"{row['kind']:<14} {row['model']:<10} {row['variant']:<13} {row['batch']:>5} {row['seq']:>7} "
              f"{row['ms_per_step']:>9.2f} {row['tokens_per_s']:>10,.0f} {speedup:>7}")
    print(f"(train ms/step = one forward+backward; decode ms/step = per generated token; "
          f"{result['seconds']:.0f} s total)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
