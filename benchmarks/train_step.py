"""The full training step (data + forward + backward + optimizer), new path vs the text path, in one run.

    python benchmarks/train_step.py [--config configs/default.toml] [--batch 128] [--steps 30] [--json]
    python benchmarks/train_step.py --device cuda --batch 1024      # adds CUDA graphs and torch.compile
    python benchmarks/train_step.py --compile                       # adds torch.compile on the CPU too

Variants, timed interleaved in one process (the machine is shared: compare the ratios):
- `text path`: what the landed code did per step: render each problem as text (`DataFormat.prompt/target`),
  encode it, `collate_fn` the batch (padding, attention mask, labels), copy to the device, forward with the
  attention mask, for-loop AdamW;
- `device path`: `GeneratedBatches` slices of a chunk rendered on the device, forward without a mask (right
  padding + causal is exact) and without the last position (it predicts nothing), `train_step` (fused
  AdamW on CUDA and on the CPU), no host sync;
- on CUDA also `cuda graphs` (the whole step replayed), `compile` (torch.compile of the model, eager step) and
  `compile + graphs` (the compiled model's step replayed: what `mct train --compile` runs on CUDA);
- `compile` on the CPU with --compile. Compilation happens in the warm-up and is reported apart (`warm-up s`:
  the five warm-up steps' time, 20-30 s on a cold inductor cache, about 2 s on a warm one).
`data share` is the time `next_batch` takes (chunk rendering amortised) as a share of the device-path step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mct.config import load_config
from mct.data import sampling
from mct.data.dataset import collate_fn, encode_example
from mct.data.format import DataFormat
from mct.data.stream import GeneratedBatches
from mct.device import choose_precision, resolve_device
from mct.model import create_model
from mct.tokenizer import Tokenizer
from mct.train.distributed import Dist
from mct.train.step import GraphedStep, TrainState, build_optimizer, train_step

ROOT = Path(__file__).resolve().parent.parent


class TextPathBatches:
    """The landed per-example path: operands -> text -> token ids -> collate, on the CPU, every step."""

    def __init__(self, config, data_format, tokenizer, batch_size, seed=0):
        self.format, self.tokenizer, self.batch_size, self.config = data_format, tokenizer, batch_size, config
        self.buckets, self.probabilities = sampling.stream_weights(
            data_format.task, config.data.min_digits, config.data.max_digits, 103_000)
        self.rng = np.random.default_rng(seed)

    def next_batch(self):
        a, a_len, b, b_len = sampling.sample_stream(self.rng, self.buckets, self.probabilities, self.batch_size,
                                                    self.config.data.max_digits)
        powers = 10 ** np.arange(a.shape[1])
        examples = [encode_example((self.format.prompt((x, y)), self.format.target((x, y))), self.tokenizer)
                    for x, y in zip((a * powers).sum(1).tolist(), (b * powers).sum(1).tolist())]
        return collate_fn(examples, pad_id=self.tokenizer.pad_id, step_masking_mode=self.config.data.step_masking_mode)


def text_path_step(model, optimizer, batches, device, precision):
    batch = batches.next_batch()
    ids, mask, labels = (batch[k].to(device, non_blocking=True) for k in ("input_ids", "attention_mask", "labels"))
    with precision.autocast(device):  # the landed loss: every position fed, the last one's logits dropped
        logits, _, _ = model(ids, attention_mask=mask)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(), labels[:, 1:].reshape(-1),
                               ignore_index=-100, reduction="sum")
    count = int((labels[:, 1:] != -100).sum())  # the landed loop read the count on the host
    (loss / count).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    float(loss.detach())  # ... and the loss, every step
    return int(mask.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "default.toml"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="time torch.compile on the CPU too (always on CUDA)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)
    config = load_config(args.config, overrides={"train": {"batch_size": args.batch, "device": args.device}})
    tokenizer = Tokenizer()
    config.model.vocab_size = tokenizer.vocab_size
    data_format = DataFormat.from_config(config.data)
    precision = choose_precision(device, config.train.precision)

    def fresh_state(capturable=False, compiled=False):
        torch.manual_seed(0)
        model = create_model(config.model).to(device)
        called = torch.compile(model) if compiled else model
        data = GeneratedBatches(config.data, data_format, tokenizer, args.batch, device)
        return TrainState(called, model, build_optimizer(model, config, capturable=capturable),
                          torch.amp.GradScaler(device.type, enabled=precision.use_scaler), data)

    torch.manual_seed(0)
    old_model = create_model(config.model).to(device)
    old_optimizer = torch.optim.AdamW(old_model.parameters(), lr=config.train.lr, foreach=False)
    text_batches = TextPathBatches(config, data_format, tokenizer, args.batch)

    variants = {"text path": lambda: text_path_step(old_model, old_optimizer, text_batches, device, precision)}
    new = fresh_state()
    variants["device path"] = lambda: int((train_step(new, config, precision, device, Dist(), tokenizer.pad_id)[2]))
    if device.type == "cuda":
        graphed_state = fresh_state(capturable=True)
        graphed = GraphedStep(graphed_state, config, precision, device, tokenizer.pad_id)
        variants["cuda graphs"] = lambda: int(graphed()[2])
    if device.type == "cuda" or args.compile:
        compiled = fresh_state(compiled=True)
        variants["compile"] = lambda: int(train_step(compiled, config, precision, device, Dist(), tokenizer.pad_id)[2])
    if device.type == "cuda":
        compiled_graphed = GraphedStep(fresh_state(capturable=True, compiled=True), config, precision, device,
                                       tokenizer.pad_id)
        variants["compile + graphs"] = lambda: int(compiled_graphed()[2])

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    warmup_s = {}
    for name, step in variants.items():  # warm-up: allocations, graph capture, compilation
        sync()
        start = time.perf_counter()
        for _ in range(5):
            step()
        sync()
        warmup_s[name] = time.perf_counter() - start
    times = {name: [] for name in variants}
    tokens = {name: 0 for name in variants}
    for _ in range(args.rounds):
        for name, step in variants.items():
            sync()
            start = time.perf_counter()
            for _ in range(args.steps):
                tokens[name] += step()
            sync()
            times[name].append((time.perf_counter() - start) / args.steps)
    # data share: next_batch alone on the device path
    data_only = GeneratedBatches(config.data, data_format, tokenizer, args.batch, device)
    data_only.next_batch()
    sync()
    start = time.perf_counter()
    n = data_only.steps_per_chunk * 2
    for _ in range(n):
        data_only.next_batch()
    sync()
    data_ms = (time.perf_counter() - start) / n * 1000

    base = statistics.median(times["text path"])
    rows = []
    for name in variants:
        median = statistics.median(times[name])
        per_step_tokens = tokens[name] / (args.rounds * args.steps)
        rows.append({"variant": name, "ms_per_step": round(median * 1000, 3),
                     "tokens_per_s": round(per_step_tokens / median), "speedup": round(base / median, 2),
                     "warmup_s": round(warmup_s[name], 2)})
    device_ms = statistics.median(times["device path"]) * 1000
    summary = {"benchmark": "train_step", "config": Path(args.config).stem, "device": str(device),
               "batch": args.batch, "threads": torch.get_num_threads(), "rows": rows,
               "data_ms_per_step": round(data_ms, 3), "data_share": round(data_ms / device_ms, 4),
               "parameters": new.raw_model.num_parameters()}
    if args.json:
        print(json.dumps(summary))
        return
    print(f"training step, {summary['config']}, batch {args.batch}, {device} ({torch.get_num_threads()} threads), "
          f"{summary['parameters']:,} parameters")
    print(f"{'variant':<17} {'ms/step':>9} {'tokens/s':>11} {'vs text path':>13} {'warm-up s (5 steps)':>20}")
    for row in rows:
        print(f"{row['variant']:<17} {row['ms_per_step']:>9.2f} {row['tokens_per_s']:>11,} {row['speedup']:>12.2f}x "
              f"{row['warmup_s']:>20.2f}")
    print(f"data preparation (device path, chunk rendering amortised): {data_ms:.3f} ms/step = "
          f"{summary['data_share']:.1%} of the step")


if __name__ == "__main__":
    main()
