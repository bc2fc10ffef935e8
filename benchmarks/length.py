"""Length generalisation: train each position scheme on short additions, test it on long ones.

    python benchmarks/length.py                                  # every scheme, 1 seed, CPU
    python benchmarks/length.py --schemes abacus coupled --seeds 0 1 2 --device cuda --steps 6000
    python benchmarks/length.py --config configs/add-abacus.toml --seeds 0 1 2   # one shipped recipe

Each scheme trains the same model (configs/add-abacus.toml unless --config) with the same budget on
1-10 digit addition (natural operands, answers least significant digit first), then answers uniformly
random problems whose two operands both have L digits, for L from 1 to 40, plus long carry chains
(99...9 + 1 and friends). Prints one table: exact match by operand length, min / median / max over seeds.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from mct.checkpoint import load_checkpoint
from mct.config import load_config
from mct.data.format import DataFormat
from mct.data.generate import make_record
from mct.evaluate import evaluate_records
from mct.train import train

ROOT = Path(__file__).resolve().parent.parent
SCHEMES = {
    "learned": {"use_rope": False, "absolute_positions": "learned"},
    "none": {"use_rope": False, "absolute_positions": "none"},
    "rope": {"use_rope": True},
    "abacus": {"use_rope": False, "absolute_positions": "abacus"},
    "coupled": {"use_rope": False, "absolute_positions": "coupled"},
}
LENGTHS = [1, 2, 5, 8, 10, 11, 12, 15, 20, 25, 30, 35, 40]


def uniform_problems(length: int, n: int, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(f"length:{length}:{seed}")
    low = 0 if length == 1 else 10 ** (length - 1)
    return [(rng.randrange(low, 10**length), rng.randrange(low, 10**length)) for _ in range(n)]


def carry_chains(max_length: int) -> list[tuple[int, int]]:
    """The longest carry chains of every length: 99...9 + 1, 99...9 + 99...9, 50...0 + 50...0, 1 + 99...9."""
    problems = []
    for length in range(1, max_length + 1):
        nines = 10**length - 1
        problems += [(nines, 1), (1, nines), (nines, nines), (5 * 10 ** (length - 1), 5 * 10 ** (length - 1)),
                     (nines, 10**length - nines)]
    return problems


def accuracy(model, tokenizer, fmt, problems, device) -> float:
    records = [make_record(fmt, a, b) for a, b in problems]
    return evaluate_records(model, tokenizer, fmt, records, batch_size=256, device=device).exact_match


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "add-abacus.toml"))
    parser.add_argument("--schemes", nargs="+", default=None, choices=list(SCHEMES),
                        help="position schemes to compare (default: every scheme; with --config alone: its own)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the config's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--per-length", type=int, default=200, help="test problems per operand length")
    parser.add_argument("--lengths", nargs="+", type=int, default=LENGTHS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    schemes = args.schemes or list(SCHEMES)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scheme in schemes:
            per_seed = []
            for seed in args.seeds:
                overrides = {"model": dict(SCHEMES[scheme]), "train": {"seed": seed, "device": args.device,
                                                                       "target_accuracy": None}}
                if args.steps:
                    overrides["train"]["max_steps"] = args.steps
                config = load_config(args.config, overrides=overrides)
                start = time.perf_counter()
                result = train(config, Path(tmp) / f"{scheme}-{seed}")
                trained = time.perf_counter() - start
                ckpt = load_checkpoint(result.best_checkpoint, device=args.device)
                fmt = DataFormat.from_dict(ckpt.data_format)
                scores = {}
                for length in args.lengths:
                    if 2 * length + 2 + length + 3 > ckpt.config.model.max_seq_len:
                        scores[length] = None  # the model's context cannot hold the problem
                        continue
                    try:
                        scores[length] = accuracy(ckpt.model, ckpt.tokenizer, fmt,
                                                  uniform_problems(length, args.per_length, seed), args.device)
                    except Exception as exc:  # noqa: BLE001 - a scheme that cannot read the length scores 0
                        scores[length] = 0.0 if "max_place" in str(exc) else None
                chains = carry_chains(min(10, config.data.max_digits))
                scores["chains"] = accuracy(ckpt.model, ckpt.tokenizer, fmt, chains, args.device)
                per_seed.append({"seed": seed, "scores": scores, "train_s": round(trained, 1), "steps": result.steps,
                                 "parameters": result.parameters})
            rows.append({"scheme": scheme, "runs": per_seed})
    if args.json:
        print(json.dumps({"benchmark": "length", "config": Path(args.config).stem, "rows": rows}))
        return
    columns = [*args.lengths, "chains"]
    print(f"exact match by operand length (both operands L digits, {args.per_length} problems each), trained on "
          f"1-{load_config(args.config).data.max_digits} digits; min / median / max over seeds {args.seeds}")
    print(f"{'scheme':<9}" + "".join(f"{str(c):>16}" for c in columns) + f"{'train s':>10}")
    for row in rows:
        cells = []
        for column in columns:
            values = [run["scores"][column] for run in row["runs"] if run["scores"].get(column) is not None]
            if not values:
                cells.append("n/a")
            elif len(values) == 1:
                cells.append(f"{values[0]:.1%}")
            else:
                cells.append(f"{min(values):.0%}/{statistics.median(values):.0%}/{max(values):.0%}")
        seconds = statistics.median(run["train_s"] for run in row["runs"])
        print(f"{row['scheme']:<9}" + "".join(f"{c:>16}" for c in cells) + f"{seconds:>10.0f}")


if __name__ == "__main__":
    main()
