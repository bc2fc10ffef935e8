"""Length generalisation: train each position scheme on short additions, test it on long ones.

    python benchmarks/length.py                                  # every scheme, 1 seed, CPU
    python benchmarks/length.py --schemes abacus coupled --seeds 0 1 2 --device cuda --steps 6000
    python benchmarks/length.py --config configs/add-coupled.toml --seeds 0 1 2   # one shipped recipe
    python benchmarks/length.py --checkpoints runs/coupled/seed-*/best.pt          # score trained models
    python benchmarks/length.py --task sub --schemes coupled --lengths 1 5 10 15 20

Each scheme trains the same model (configs/add-coupled.toml unless --config) with the same budget on
1-10 digit problems (the config's format: add-coupled.toml pads each pair to its longer operand and
writes answers least significant digit first), then answers uniformly
random problems whose two operands both have L digits, for L from 1 to 40, the hard split of the
training range ("hard": the problems mct gen writes to hard.jsonl), for addition carry chains and runs
of 9s and 0s of 11 to 40 digits ("chains 11+": 99...9 + 1, 0 + 99...9 and friends; for subtraction
borrow chains, ties and sign flips: 10...0 - 1, 50...0 - 50...1, 0 - 99...9), and operands of two
different lengths, the longer beyond training ("mixed 11+": 27 + 3 digits), and shapes of 11-40 digits
that random problems almost never have ("shapes 11+": inner runs of zeros, carries passed through 5 or more
middle columns, sparse operands, repeated digits such as 111...1 + 555...5). Prints one table: exact match
by operand length, min / median / max over seeds (or over the checkpoints given).
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
from mct.data.hard import hard_problems
from mct.evaluate import evaluate_records
from mct.train import train

ROOT = Path(__file__).resolve().parent.parent
# model fields each scheme sets; abacus and coupled keep the config's place codes (add-coupled.toml:
# relative, far keys masked), coupled-orthogonal is the embedding variant shipped before them
SCHEMES = {
    "learned": {"use_rope": False, "absolute_positions": "learned", "place_codes": "learned"},
    "none": {"use_rope": False, "absolute_positions": "none", "place_codes": "learned"},
    "rope": {"use_rope": True, "place_codes": "learned"},
    "abacus": {"use_rope": False, "absolute_positions": "abacus"},
    "coupled": {"use_rope": False, "absolute_positions": "coupled"},
    "coupled-orthogonal": {"use_rope": False, "absolute_positions": "coupled", "place_codes": "orthogonal"},
}
LENGTHS = [1, 2, 5, 8, 10, 11, 12, 15, 20, 25, 30, 35, 40]


def uniform_problems(length: int, n: int, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(f"length:{length}:{seed}")
    low = 0 if length == 1 else 10 ** (length - 1)
    return [(rng.randrange(low, 10**length), rng.randrange(low, 10**length)) for _ in range(n)]


def carry_chains(min_length: int, max_length: int) -> list[tuple[int, int]]:
    """The longest carry chains and runs of 9s and 0s of every length: 99...9 + 1, 99...9 + 99...9,
    50...0 + 50...0, 1 + 99...9, 99...9 + 0, 0 + 99...9, 10...0 + 10...0, 99...9 + 99...9 of half the length."""
    problems = []
    for length in range(min_length, max_length + 1):
        nines, top, half = 10**length - 1, 10 ** (length - 1), 10 ** (length // 2) - 1
        problems += [(nines, 1), (1, nines), (nines, nines), (5 * top, 5 * top), (nines, 0), (0, nines),
                     (top, top), (half, nines), (nines, half)]
    return problems


def borrow_chains(min_length: int, max_length: int) -> list[tuple[int, int]]:
    """Subtraction's long borrow chains, ties and sign flips of every length: 10...0 - 1, 1 - 10...0,
    99...9 - 99...9, 50...0 - 50...1, 50...1 - 50...0, 0 - 99...9, 99...9 - 0, 10...0 - 99...9 (one digit
    shorter)."""
    problems = []
    for length in range(min_length, max_length + 1):
        nines, top = 10**length - 1, 10 ** (length - 1)
        problems += [(top, 1), (1, top), (nines, nines), (5 * top, 5 * top + 1), (5 * top + 1, 5 * top),
                     (0, nines), (nines, 0), (top, top - 1)]
    return problems


def long_shapes(task: str, min_length: int, max_length: int, seed: int = 0) -> list[tuple[int, int]]:
    """Shapes a random long problem almost never has, for every length min_length..max_length: inner runs
    of zeros (10...07 + 10...03, 30...0 + 5), a carry (borrow) passed on through 5 or more middle columns
    below random top digits (add: digit pairs summing to 9; sub: equal digits), sparse operands (70% zeros)
    and repeated digits (111...1 + 555...5), where every column looks like its neighbours. 16 per length
    (13 below 3 digits: no room for a passed-on carry)."""
    rng = random.Random(f"shapes:{task}:{min_length}:{max_length}:{seed}")

    def number(digits):
        return int("".join(map(str, digits)))

    problems = []
    for length in range(min_length, max_length + 1):
        top = 10 ** (length - 1)
        problems += [(top + rng.randint(1, 9), top + rng.randint(1, 9)),
                     (rng.randint(1, 9) * top + rng.randint(0, 99), rng.randint(1, 9) * top + rng.randint(0, 99)),
                     (top * rng.randint(1, 4), rng.randint(0, 9)), (rng.randint(0, 9), top * rng.randint(1, 4))]
        for _ in range(3 if length >= 3 else 0):
            run = rng.randint(min(5, length - 2), length - 2)
            high = [[rng.randint(1, 9)] + [rng.randint(0, 9) for _ in range(length - run - 2)] for _ in range(2)]
            middle = [rng.randint(0, 9) for _ in range(run)]
            low = rng.randint(1, 9)
            other = rng.randint(10 - low, 9) if task == "add" else rng.randint(low, 9)
            passed = [9 - d for d in middle] if task == "add" else middle
            problems.append((number(high[0] + middle + [low]), number(high[1] + passed + [other])))
        for _ in range(3):
            pair = [[rng.randint(1, 9)] + [0 if rng.random() < 0.7 else rng.randint(1, 9) for _ in range(length - 1)]
                    for _ in range(2)]
            problems.append((number(pair[0]), number(pair[1])))
        for _ in range(6):
            problems.append((int(str(rng.randint(1, 9)) * length), int(str(rng.randint(1, 9)) * length)))
    return problems


def mixed_lengths(min_length: int, max_length: int, n: int, seed: int) -> list[tuple[int, int]]:
    """Operands of two different lengths, the longer one of min_length to max_length digits (27 + 3 digits)."""
    rng = random.Random(f"mixed:{min_length}:{max_length}:{seed}")
    problems = []
    for _ in range(n):
        long = rng.randint(min_length, max_length)
        short = rng.randint(1, long - 1)
        pair = (rng.randrange(10 ** (long - 1), 10**long), rng.randrange(0 if short == 1 else 10 ** (short - 1), 10**short))
        problems.append(pair if rng.random() < 0.5 else pair[::-1])
    return problems


def accuracy(model, tokenizer, fmt, problems, device) -> float:
    records = [make_record(fmt, a, b) for a, b in problems]
    return evaluate_records(model, tokenizer, fmt, records, batch_size=256, device=device).exact_match


def fits(problem_digits: int, model) -> bool:
    """Whether a prompt of two such operands and its answer fit what the model reads: its context (which
    evaluation widens for a model that reads any length) and, for embedded place ids, model.max_place."""
    config = model.config
    if model.place_positions and not model.relative_places and problem_digits > config.max_place - config.place_base - 1:
        return False
    return model.reads_any_length or 2 * problem_digits + 2 + problem_digits + 3 <= config.max_seq_len


def scores(checkpoint_path, lengths, per_length: int, seed: int, device: str) -> dict:
    """Exact match of one checkpoint: by operand length, on the hard split and on long carry chains."""
    ckpt = load_checkpoint(checkpoint_path, device=device)
    fmt, data = DataFormat.from_dict(ckpt.data_format), ckpt.config.data
    result = {}
    for length in lengths:
        if not fits(length, ckpt.model) or (fmt.operand_width and length > fmt.operand_width):
            result[length] = None  # the model's context or its padded format cannot hold the problem
            continue
        result[length] = accuracy(ckpt.model, ckpt.tokenizer, fmt, uniform_problems(length, per_length, seed), device)
    result["hard"] = accuracy(ckpt.model, ckpt.tokenizer, fmt,
                              hard_problems(fmt.task, data.min_digits, data.max_digits, fmt.modulus), device)
    longest = max([n for n in lengths if fits(n, ckpt.model) and not fmt.operand_width], default=0)
    chains_of = {"add": carry_chains, "sub": borrow_chains}.get(fmt.task)
    chains = chains_of(data.max_digits + 1, longest) if chains_of else []
    result["chains 11+"] = accuracy(ckpt.model, ckpt.tokenizer, fmt, chains, device) if chains else None
    shapes = long_shapes(fmt.task, data.max_digits + 1, longest, seed) if longest > data.max_digits else []
    result["shapes 11+"] = accuracy(ckpt.model, ckpt.tokenizer, fmt, shapes, device) if shapes else None
    mixed = mixed_lengths(data.max_digits + 1, longest, per_length, seed) if longest > data.max_digits else []
    result["mixed 11+"] = accuracy(ckpt.model, ckpt.tokenizer, fmt, mixed, device) if mixed else None
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "add-coupled.toml"))
    parser.add_argument("--schemes", nargs="+", default=None, choices=list(SCHEMES),
                        help="position schemes to compare (default: every scheme; with --config alone: its own)")
    parser.add_argument("--checkpoints", nargs="+", default=None, help="score these checkpoints; train nothing")
    parser.add_argument("--task", choices=["add", "sub"], default=None, help="data.task (default: the config's)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the config's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--per-length", type=int, default=200, help="test problems per operand length")
    parser.add_argument("--lengths", nargs="+", type=int, default=LENGTHS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    if args.checkpoints:
        runs = [{"seed": path, "scores": scores(path, args.lengths, args.per_length, 0, args.device)}
                for path in args.checkpoints]
        rows.append({"scheme": "given", "runs": runs})
    with tempfile.TemporaryDirectory() as tmp:
        for scheme in ([] if args.checkpoints else args.schemes or list(SCHEMES)):
            per_seed = []
            for seed in args.seeds:
                overrides = {"model": dict(SCHEMES[scheme]), "train": {"seed": seed, "device": args.device,
                                                                       "target_accuracy": None}}
                if args.steps:
                    overrides["train"]["max_steps"] = args.steps
                if args.task:
                    overrides["data"] = {"task": args.task}
                config = load_config(args.config, overrides=overrides)
                start = time.perf_counter()
                result = train(config, Path(tmp) / f"{scheme}-{seed}")
                trained = time.perf_counter() - start
                per_seed.append({"seed": seed, "scores": scores(result.best_checkpoint, args.lengths, args.per_length,
                                                                seed, args.device),
                                 "train_s": round(trained, 1), "steps": result.steps, "parameters": result.parameters})
            rows.append({"scheme": scheme, "runs": per_seed})
    if args.json:
        print(json.dumps({"benchmark": "length", "config": Path(args.config).stem, "rows": rows}))
        return
    columns = [*args.lengths, "hard", "chains 11+", "shapes 11+", "mixed 11+"]
    print(f"exact match by operand length (both operands L digits, {args.per_length} problems each); "
          f"min / median / max over {'the checkpoints' if args.checkpoints else f'seeds {args.seeds}'}")
    print(f"{'scheme':<19}" + "".join(f"{str(c):>16}" for c in columns) + f"{'train s':>10}")
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
        seconds = statistics.median(run.get("train_s", 0) for run in row["runs"])
        print(f"{row['scheme']:<19}" + "".join(f"{c:>16}" for c in cells) + f"{seconds:>10.0f}")


if __name__ == "__main__":
    main()
