"""Does every knob still learn? The default config trained once per setting, one setting changed a row.

    python benchmarks/knobs.py                          # every row, 1 thread each
    python benchmarks/knobs.py --only ffn rope --json   # rows whose name contains one of the words

"A knob that does not lead to a model that learns is a bug": each row is `mct train` on configs/default.toml
(3-digit addition) with one flag or `--set` changed, in a fresh process, as a user runs it. `target at` is
the step where validation reached the config's target (train.target_accuracy; "-" = not within
max_steps), `test` and `hard` the exact match of the best checkpoint on the run's test and hard splits.
Rows that change the format (plain order, unpadded operands, steps) or remove a part of the model
(positions, the feed-forward layer) learn more slowly than the default; the table says how much.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from time_to_accuracy import run_one  # noqa: E402  (one way to run `mct train` and read its summary)

STEPS = ("--set", "data.use_steps=true", "--set", "data.max_seq_len=48", "--set", "model.max_seq_len=48")

# (row name, arguments after `mct train --config configs/default.toml`)
KNOBS: list[tuple[str, tuple[str, ...]]] = [
    ("default", ()),
    ("--ffn geglu", ("--ffn", "geglu")),
    ("--ffn swiglu", ("--ffn", "swiglu")),
    ("rmsnorm", ("--set", "model.norm_type=rmsnorm")),
    ("qk_norm", ("--set", "model.qk_norm=true")),
    ("tie_kv", ("--set", "model.tie_kv=true")),
    ("untied embeddings", ("--set", "model.tie_weights=false")),
    ("no biases", ("--set", "model.bias=false")),
    ("1 layer", ("--layers", "1")),
    ("rank 8 projections", ("--set", "model.rank=8")),
    ("qkv rank 8, shared down", ("--set", "model.qkv_rank=8", "--set", "model.shared_qkv_down=true")),
    ("embedding rank 4", ("--set", "model.embed_rank=4")),
    ("position rank 4", ("--set", "model.pos_rank=4")),
    ("d_head 8", ("--set", "model.d_head=8")),
    ("shared norms", ("--set", "model.share_norms=true")),
    ("swiglu, rmsnorm, no biases", ("--ffn", "swiglu", "--set", "model.norm_type=rmsnorm", "--set", "model.bias=false")),
    ("no feed-forward (d_ff 0)", ("--d-ff", "0")),
    ("dropout 0.1", ("--set", "model.dropout=0.1")),
    ("constant lr", ("--set", "train.lr_schedule=constant")),
    ("--batch-size 32", ("--batch-size", "32")),
    ("grad_accum_steps 2", ("--set", "train.grad_accum_steps=2")),
    ("--precision bf16", ("--precision", "bf16")),
    ("rope (no learned positions)", ("--set", "model.use_rope=true", "--set", "model.absolute_positions=none")),
    ("NoPE (no positions)", ("--set", "model.absolute_positions=none")),
    ("NoPE, 3 layers", ("--set", "model.absolute_positions=none", "--layers", "3")),
    ("coupled positions", ("--set", "model.absolute_positions=coupled")),
    ("abacus positions", ("--set", "model.absolute_positions=abacus")),
    ("plain answer order", ("--set", "data.answer_order=plain")),
    ("unpadded operands", ("--set", "data.pad_operands=false")),
    ("steps (mask_steps)", STEPS),
    ("steps (none: the model writes them)", STEPS + ("--set", "data.step_masking_mode=none")),
    ("steps (mask_answer)", STEPS + ("--set", "data.step_masking_mode=mask_answer")),
    ("sub", ("--set", "data.task=sub")),
    ("sub, unpadded", ("--set", "data.task=sub", "--set", "data.pad_operands=false")),
    # formats changed without touching the context or the mixes: the config follows the format (docs/configs.md)
    ("operands of 1-5 digits", ("--set", "data.max_digits=5")),
    ("operands of 1-10 digits", ("--set", "data.max_digits=10")),
    ("sub with steps", ("--set", "data.task=sub", "--set", "data.use_steps=true")),
    ("mul with steps", ("--set", "data.task=mul", "--set", "data.use_steps=true")),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="rows whose name contains one of these words")
    parser.add_argument("--max-steps", type=int, default=None, help="train.max_steps of every row (default: the config's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="train.num_threads of each run")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()
    knobs = [(name, extra) for name, extra in KNOBS if not args.only or any(w in name for w in args.only)]
    if not knobs:
        parser.error(f"--only {' '.join(args.only)}: no row matches; rows: {', '.join(n for n, _ in KNOBS)}")
    steps = () if args.max_steps is None else ("--max-steps", str(args.max_steps))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, extra) in enumerate(knobs):
            row = run_one("default", Path(tmp), args.seed, args.threads, extra + steps, folder=f"knob-{i}")
            rows.append({"knob": name, "arguments": " ".join(extra), **row})
    if args.json:
        print(json.dumps({"benchmark": "knobs", "config": "default", "seed": args.seed, "rows": rows}))
        return
    print(f"configs/default.toml, one setting changed per row (seed {args.seed}, {args.threads} thread(s))")
    print(f"{'knob':<36} {'steps':>6} {'target at':>10} {'train s':>8} {'test':>8} {'hard':>8}")
    for r in rows:
        reached = r["target_step"] or (r["train_steps"] if r["stopped"] == "target_reached" else None)
        print(f"{r['knob']:<36} {r['train_steps']:>6} {reached or '-':>10} {r['train_s']:>8.1f} "
              f"{r['test_exact_match']:>8.2%} {r['hard_exact_match']:>8.2%}")


if __name__ == "__main__":
    main()
