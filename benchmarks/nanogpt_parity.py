"""mct's model against nanoGPT's `GPT` at the same dimensions: model-only throughput, in one run.

    python benchmarks/nanogpt_parity.py --nanogpt PATH/TO/nanoGPT/model.py [--device cuda] [--json]

nanoGPT is not vendored: point --nanogpt (or the MCT_NANOGPT environment variable) at the `model.py` of a
clone of github.com/karpathy/nanoGPT. Without it the script says so and exits 2.

Both models get the same shape and the same weights (their logits are checked equal): learned absolute
positions, LayerNorm with biases, a GELU MLP of 4 x d_model, tied embedding and unembedding, no dropout, the
same vocabulary and context. Each case times, interleaved (median of alternating rounds, so a noisy machine
slows both alike):
- `fwd+bwd`: forward with the loss over every position, then backward (what training costs the model);
- `forward`: the same forward under no_grad (what evaluation costs).
`ratio` is mct's tokens/s over nanoGPT's: >= 1.00 is parity or better.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import platform
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from model_speed import interleaved  # noqa: E402

from mct.config import ModelConfig  # noqa: E402
from mct.device import resolve_device  # noqa: E402
from mct.errors import MctError  # noqa: E402
from mct.model import create_model  # noqa: E402
from mct.tokenizer import Tokenizer  # noqa: E402

# (name, d_model, layers, heads, seq, batch on the CPU, batch on CUDA): the default model's shape, and the
# 4 GB-GPU recipe's (configs/gpu-small.toml, with learned positions and a 4x MLP as nanoGPT has them)
CASES = [("default (48 wide, 2 layers)", 48, 2, 4, 16, 128, 1024),
         ("gpu-small (256 wide, 6 layers)", 256, 6, 8, 64, 8, 64)]


def load_nanogpt(path: Path):
    if not path.is_file():
        raise MctError(f"{path} is not a file: pass --nanogpt PATH/TO/nanoGPT/model.py (a clone of "
                       "github.com/karpathy/nanoGPT)")
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def models(nanogpt, d: int, layers: int, heads: int, seq: int, vocab: int, device):
    torch.manual_seed(0)
    ours = create_model(ModelConfig(vocab_size=vocab, d_model=d, num_layers=layers, num_heads=heads, d_ff=4 * d,
                                    max_seq_len=seq, ffn_type="gelu", use_rope=False,
                                    absolute_positions="learned", tie_weights=True, bias=True, dropout=0.0))
    with contextlib.redirect_stdout(io.StringIO()):  # GPT() prints its parameter count
        theirs = nanogpt.GPT(nanogpt.GPTConfig(block_size=seq, vocab_size=vocab, n_layer=layers, n_head=heads,
                                               n_embd=d, dropout=0.0, bias=True))
    # the same weights in both, so both compute one function and the timing compares code alone: the two
    # list the same tensors in the same order (nanoGPT's lm_head is its tied embedding; mct's buffers are
    # not parameters, hence strict=False, and the logits check below catches any mismatch)
    theirs_state = [v for k, v in theirs.state_dict().items() if k != "lm_head.weight" and not k.endswith(".attn.bias")]
    names = [name for name, _ in ours.named_parameters()]  # unembed.weight is embed.weight: listed once
    ours.load_state_dict(dict(zip(names, theirs_state, strict=True)), strict=False)
    ours, theirs = ours.to(device).train(), theirs.to(device).train()
    probe = torch.randint(0, vocab, (2, seq), device=device)
    with torch.no_grad():
        gap = (ours(probe)[0] - theirs(probe, probe)[0]).abs().max().item()
    if gap > 1e-4:
        raise SystemExit(f"mct and nanoGPT compute different functions (largest logit gap {gap:.2e})")
    return ours, theirs


def case_rows(nanogpt, case, device, budget_s: float) -> list[dict]:
    name, d, layers, heads, seq, cpu_batch, cuda_batch = case
    batch = cuda_batch if device.type == "cuda" else cpu_batch
    vocab = Tokenizer().vocab_size
    ours, theirs = models(nanogpt, d, layers, heads, seq, vocab, device)
    ids = torch.randint(0, vocab, (batch, seq + 1), device=device)
    inputs, targets = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()  # nanoGPT: targets[t] follows inputs[t]
    labels = inputs  # mct: labels sit at their token, and the loss scores logits[t] against labels[t + 1]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def train_mct():
        ours.zero_grad(set_to_none=True)
        with autocast:
            _, loss, _ = ours(inputs, None, labels)
        loss.backward()
        sync()

    def train_nanogpt():
        theirs.zero_grad(set_to_none=True)
        with autocast:
            _, loss = theirs(inputs, targets)
        loss.backward()
        sync()

    def forward_of(step):
        def forward():
            with torch.no_grad():
                step()
        return forward

    def infer_mct():
        with autocast:
            ours(inputs, None, labels)
        sync()

    def infer_nanogpt():
        with autocast:
            theirs(inputs, targets)
        sync()

    rows = []
    for kind, pair in (("fwd+bwd", (train_mct, train_nanogpt)),
                       ("forward", (forward_of(infer_mct), forward_of(infer_nanogpt)))):
        seconds = interleaved({"mct": pair[0], "nanoGPT": pair[1]}, warmup=2, budget_s=budget_s, min_rounds=5)
        rows.append({"case": name, "kind": kind, "batch": batch, "seq": seq,
                     "parameters_mct": ours.num_parameters(),
                     "parameters_nanogpt": sum(p.numel() for p in theirs.parameters()),
                     "mct_tokens_per_s": batch * seq / seconds["mct"],
                     "nanogpt_tokens_per_s": batch * seq / seconds["nanoGPT"],
                     "ratio": seconds["nanoGPT"] / seconds["mct"]})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nanogpt", default=os.environ.get("MCT_NANOGPT"),
                        help="nanoGPT's model.py (default: $MCT_NANOGPT)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--budget", type=float, default=6.0, help="seconds of timing per case and kind")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        if not args.nanogpt:
            raise MctError("nanoGPT's model.py is not given: pass --nanogpt PATH or set MCT_NANOGPT")
        nanogpt = load_nanogpt(Path(args.nanogpt))
        device = resolve_device(args.device)
    except MctError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = [row for case in CASES for row in case_rows(nanogpt, case, device, args.budget)]
    summary = {"benchmark": "nanogpt_parity", "device": str(device), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "machine": platform.processor() or platform.machine(), "rows": rows}
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"mct vs nanoGPT's GPT, same dimensions, {device} ({torch.get_num_threads()} threads), "
          f"torch {torch.__version__}")
    print(f"{'case':<32} {'kind':<8} {'batch':>5} {'params mct / nanoGPT':>22} {'mct tok/s':>11} "
          f"{'nanoGPT tok/s':>14} {'ratio':>6}")
    for r in rows:
        params = f"{r['parameters_mct']:,} / {r['parameters_nanogpt']:,}"
        print(f"{r['case']:<32} {r['kind']:<8} {r['batch']:>5} {params:>22} {r['mct_tokens_per_s']:>11,.0f} "
              f"{r['nanogpt_tokens_per_s']:>14,.0f} {r['ratio']:>5.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
