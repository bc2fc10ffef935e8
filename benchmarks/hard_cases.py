"""A trained checkpoint on the cases a balanced test split hides: every problem, random ones, chains and near ties.

    python benchmarks/hard_cases.py runs/demo/best.pt                  # default sets
    python benchmarks/hard_cases.py runs/demo/best.pt --exhaustive     # every pair (up to 3 digits)
    python benchmarks/hard_cases.py runs/sub5/best.pt --samples 20000 --chains 300 --json

Sets, over the checkpoint's own operand range (`data.min_digits`..`data.max_digits`):
- `all problems` (--exhaustive, at most 3 digits): every pair a, b;
- `random`: operand lengths uniform, then each operand uniform at its length (`random.Random(--seed)`);
- `uniform`: each operand uniform over the whole range (where the longest operands are most of the problems:
  81% of 1-3 digit pairs are 3 x 3, which a split balanced over lengths holds far less often);
- `stopping chains L/k` (add and sub): `--chains` problems of L-digit operands whose carry (borrow)
  starts in one column, is passed on by the k columns above it and ends inside the number (248+252), as the
  hard split draws them (`mct.data.hard`); sub also with the operands swapped (a negative answer);
- `full chains L` (add and sub): a carry through every column (a + b = 10^L; 10^L - (10^L - 1) for sub);
- `near ties L` (add and sub): `--chains` pairs of L-digit operands that tie down to the last columns, so the
  lowest ones decide the sign (sub: b = a + d) or whether a carry reaches the top (add: a + b = 10^L - 1 + d),
  d uniform in -10..10 (`384-379`, `4521+5480`);
- `edge factors` (mul): every length's 0, 1, 10^k and 9..9 times `--chains` random operands, both ways round
  (`0*507`, `999*46`), and 9..9 times 9..9 at every pair of lengths (the most carries);
- `inner zeros` (mul): `--chains` pairs of operands with zeros inside (`705*306`: partial products that skip
  places);
- `near powers of ten` (mul): `--chains` pairs for every pair of lengths (of at least 2 digits), each operand
  10^L - d with d log-uniform in 1..10^(L-1) (`998*999`, `989*97`, `950*99`): x * 999 is x * 1000 - x, a long
  borrow through the product's middle digits, and uniform operands almost never start with 99.
Answers are decoded greedily with `mct.load(...).answer`, exact match on the whole answer.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

OPERATORS = {"add": ("+", lambda a, b: a + b), "sub": ("-", lambda a, b: a - b), "mul": ("*", lambda a, b: a * b)}
EXHAUSTIVE_DIGITS = 3


def _number(rng: random.Random, length: int) -> int:
    from mct.data.sampling import length_range

    smallest, count = length_range(length)
    return smallest + rng.randrange(count)


def problem_sets(task: str, low: int, high: int, samples: int, chains: int, exhaustive: bool,
                 seed: int) -> dict[str, list[tuple[int, int]]]:
    """{set name: [(a, b), ...]} for a checkpoint of `task` with operands of low..high digits."""
    from mct.data.hard import chain_partner, stopping_chains
    from mct.data.sampling import length_range

    rng = random.Random(seed)
    sets = {}
    if exhaustive:
        numbers = range(length_range(low)[0], 10**high)
        sets["all problems"] = [(a, b) for a in numbers for b in numbers]
    sets["random"] = [(_number(rng, rng.randint(low, high)), _number(rng, rng.randint(low, high)))
                      for _ in range(samples)]
    first = length_range(low)[0]
    sets["uniform"] = [(rng.randint(first, 10**high - 1), rng.randint(first, 10**high - 1)) for _ in range(samples)]
    if task in ("add", "sub"):
        for length in range(max(low, 3), high + 1):
            for through in range(1, length - 1):
                sets[f"stopping chains {length}/{through}"] = stopping_chains(task, length, through, chains, rng)
        for length in range(max(low, 1), high + 1):
            top = 10**length
            if task == "add":  # a + b a power of ten: carries all the way
                firsts = [_number(rng, length) for _ in range(chains)]
                pairs = [(a, b) for a in firsts if (b := chain_partner(a, length)) is not None]
            else:
                pairs = [(top, top - 1), (top - 1, top)] if length < high else []
            sets[f"full chains {length}"] = pairs
        for length in range(max(low, 2), high + 1):
            smallest, count = length_range(length)
            pairs = []
            for _ in range(chains):
                a, d = _number(rng, length), rng.randint(-10, 10)
                b = a + d if task == "sub" else 10**length - 1 - a + d
                if smallest <= b < smallest + count:  # b keeps the length: no leading zero, no extra digit
                    pairs.append((a, b))
            sets[f"near ties {length}"] = pairs
    if task == "mul":
        edges = {0, 1} | {10**k for k in range(1, high)} | {10**k - 1 for k in range(1, high + 1)}
        edges = sorted(edge for edge in edges if low <= len(str(edge)) <= high)
        pairs = [(edge, _number(rng, rng.randint(low, high))) for edge in edges for _ in range(chains)]
        nines = [10**k - 1 for k in range(low, high + 1)]
        sets["edge factors"] = pairs + [(b, a) for a, b in pairs] + [(a, b) for a in nines for b in nines]
        near = [(_near_power(rng, la), _near_power(rng, lb)) for la in range(max(low, 2), high + 1)
                for lb in range(max(low, 2), high + 1) for _ in range(chains)]
        sets["near powers of ten"] = near
        if high >= 3:
            sets["inner zeros"] = [(_inner_zeros(rng, rng.randint(max(low, 3), high)),
                                    _inner_zeros(rng, rng.randint(max(low, 3), high))) for _ in range(chains)]
    return {name: pairs for name, pairs in sets.items() if pairs}  # --samples 0 or --chains 0 leave sets out


def _near_power(rng: random.Random, length: int) -> int:
    """10^length - d, d log-uniform in 1..10^(length - 1): `length` digits, the top ones mostly 9s."""
    return 10**length - max(1, int(10 ** (rng.random() * (length - 1))))


def _inner_zeros(rng: random.Random, length: int) -> int:
    """An operand of `length` >= 3 digits whose inner digits are each 0 with probability 1/2 (at least one)."""
    inner = [rng.choice("0123456789") if rng.random() < 0.5 else "0" for _ in range(length - 2)]
    inner[rng.randrange(length - 2)] = "0"
    return int(rng.choice("123456789") + "".join(inner) + rng.choice("0123456789"))


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--samples", type=int, default=5000, help="random problems")
    parser.add_argument("--chains", type=int, default=200, help="problems per chain kind and per near-tie length")
    parser.add_argument("--exhaustive", action="store_true", help=f"every pair (operands of at most {EXHAUSTIVE_DIGITS} digits)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import mct
    from mct.errors import MctError

    try:
        predictor = mct.load(args.checkpoint, device=args.device)
    except MctError as error:
        _fail(str(error))
    data = predictor.config.data
    if data.task not in OPERATORS:
        _fail(f"{args.checkpoint} is a {data.task} model; hard_cases.py checks add, sub and mul")
    if args.exhaustive and data.max_digits > EXHAUSTIVE_DIGITS:
        _fail(f"--exhaustive needs operands of at most {EXHAUSTIVE_DIGITS} digits; this model reads "
              f"{data.max_digits}: use --samples")
    symbol, truth = OPERATORS[data.task]
    rows = []
    for name, pairs in problem_sets(data.task, data.min_digits, data.max_digits, args.samples, args.chains,
                                    args.exhaustive, args.seed).items():
        start = time.perf_counter()
        answers = predictor.answer([f"{a}{symbol}{b}=" for a, b in pairs], batch_size=2048)
        wrong = [f"{a}{symbol}{b}={x or '?'}" for (a, b), x in zip(pairs, answers) if x != str(truth(a, b))]
        rows.append({"set": name, "n": len(pairs), "wrong": len(wrong), "exact_match": 1 - len(wrong) / len(pairs),
                     "seconds": round(time.perf_counter() - start, 1), "first_wrong": wrong[:3]})
    if args.json:
        print(json.dumps({"benchmark": "hard_cases", "checkpoint": args.checkpoint, "task": data.task,
                          "digits": [data.min_digits, data.max_digits], "rows": rows}))
        return
    print(f"hard cases, {args.checkpoint} ({data.task}, {data.min_digits}-{data.max_digits} digits)")
    print(f"{'set':<22} {'n':>9} {'wrong':>7} {'exact match':>12}  first wrong")
    for row in rows:
        print(f"{row['set']:<22} {row['n']:>9,} {row['wrong']:>7,} {row['exact_match']:>11.4%}  "
              f"{', '.join(row['first_wrong'])}")


if __name__ == "__main__":
    main()
