"""The hard split: the problems an average hides. `mct gen` writes them as `hard.jsonl`, `mct train`
scores every run on them, and neither ever trains on them.

For each operand length (and pair of lengths) in the configured range: the longest carry and borrow
chains (99..9 + 1, x + (10^L - x), 10^L - 1 written as 100..0 - 1), chains that stop inside the number
(248 + 252: the ones' carry runs through a column summing to 9 and ends in the hundreds; 542 - 248 and
248 - 542 for a borrow), boundaries (0 - 99..9, 99..9 + 99..9, 50..0 + 50..0), equal operands, zeros, powers of ten, and
negative results. Deterministic: the same range gives the same list. 0 - 0, and 0 + 0 where operands
are not zero-padded to a fixed width, are left to training (see `hard_problems`).
"""

from __future__ import annotations

import random

from mct.data.sampling import length_range


def _numbers(length: int, rng: random.Random) -> list[int]:
    """Characteristic numbers of `length` digits: smallest, largest, a power of ten, 50..0, 10..01, a random one."""
    low, count = length_range(length)
    high = low + count - 1
    values = {low, high, 10 ** (length - 1) if length > 1 else 1, 5 * 10 ** (length - 1),
              rng.randrange(low, high + 1)}
    if length > 1:
        values.add(10 ** (length - 1) + 1)
    return sorted(values)


def chain_partner(a: int, length: int) -> int | None:
    """b of `length` digits with a + b a power of ten (a carry through every column), or None."""
    for power in (10**length, 10 ** (length + 1)):
        b = power - a
        low, count = length_range(length)
        if low <= b < low + count:
            return b
    return None


def stopping_chain(task: str, length: int, start: int, through: int, rng: random.Random) -> tuple[int, int]:
    """a, b of `length` digits where column `start` (0 = ones) carries (borrows), the next `through`
    columns pass it on (add: digits summing to 9; sub: equal digits), and the column above them ends it;
    no other column carries or borrows. Uniform operands seldom hold such a run (one column in ten passes a
    carry on), and a model that has not learned to look more than one column down misses its end."""
    stop = start + through + 1  # the column that ends the chain: below the top or the top itself
    a, b = [], []
    for column in range(length):
        lowest = 1 if column == length - 1 else 0  # no leading zero
        if column == start:  # add: x + y >= 10; sub: x < y
            y = rng.randrange(1, 10)
            x = rng.randrange(10 - y, 10) if task == "add" else rng.randrange(0, y)
        elif start < column < stop:
            x = rng.randrange(0, 10)
            y = 9 - x if task == "add" else x
        elif column == stop:
            if task == "add":  # x + y + 1 <= 9
                x = rng.randrange(lowest, 9 - lowest)
                y = rng.randrange(lowest, 9 - x)
            else:  # x - y - 1 >= 0
                x = rng.randrange(lowest + 1, 10)
                y = rng.randrange(lowest, x)
        else:  # no carry (add: x + y <= 9) and no borrow (sub: x >= y)
            x = rng.randrange(lowest, 10 - lowest) if task == "add" else rng.randrange(lowest, 10)
            y = rng.randrange(lowest, 10 - x) if task == "add" else rng.randrange(lowest, x + 1)
        a.append(x)
        b.append(y)
    return (sum(d * 10**i for i, d in enumerate(a)), sum(d * 10**i for i, d in enumerate(b)))


def stopping_chains(task: str, length: int, through: int, count: int, rng: random.Random) -> list[tuple[int, int]]:
    """`count` stopping chains of `length` digits passed on by `through` columns, each from a random start
    column; sub also with the operands swapped, each after its pair (the same borrows, a negative answer)."""
    pairs = [stopping_chain(task, length, rng.randrange(0, length - 1 - through), through, rng) for _ in range(count)]
    return [swap for a, b in pairs for swap in ((a, b), (b, a))] if task == "sub" else pairs


def hard_problems(task: str, min_digits: int, max_digits: int, modulus: int | None = None,
                  seed: int = 0, padded: bool = True) -> list[tuple[int, int]]:
    """The hard problems of `task` with operands of min_digits..max_digits digits, in a fixed order.
    `padded`: whether the format zero-pads operands to a fixed width (otherwise 0 + 0 is left to training:
    see below)."""
    rng = random.Random(f"mct-hard:{task}:{min_digits}:{max_digits}:{seed}")
    if task == "mod":
        top = modulus - 1
        pairs = [(0, 0), (top, top), (top, 1), (1, top), (top, 0), (0, top)]
        pairs += [(x, modulus - x) for x in (1, 2, modulus // 2, top)]  # wraps to exactly 0
        pairs += [(x, x) for x in (1, modulus // 2, top)]
        return _unique([(a, b) for a, b in pairs if a < modulus and b < modulus])  # (2, P-2) is no pair for P = 2
    lengths = range(min_digits, max_digits + 1)
    pairs: list[tuple[int, int]] = []
    for la in lengths:
        for lb in lengths:
            for a in _numbers(la, rng):
                for b in _numbers(lb, rng):
                    pairs.append((a, b))
        nines = 10**la - 1
        low = length_range(la)[0]
        if task == "add":
            for a in (nines, rng.randrange(low, nines + 1), 5 * 10 ** (la - 1)):
                b = chain_partner(a, la)
                if b is not None:
                    pairs += [(a, b), (b, a)]
            for _ in range(3):  # long carry chains: a + b = 10^L with random digits
                a = rng.randrange(max(low, 1), nines + 1)
                b = chain_partner(a, la)
                if b is not None:
                    pairs.append((a, b))
        if task in ("add", "sub"):
            for through in range(1, la - 1):  # chains that stop: through 1 to la - 2 columns, three of each
                pairs += stopping_chains(task, la, through, 3, rng)
        if task == "sub":
            x = rng.randrange(low, nines + 1)
            pairs += [(x, x), (0, nines), (low, 1), (low, nines), (1, low)]  # equal, 0 - 99..9, borrow chains
            if la > 1:
                pairs.append((10 ** (la - 1), 10 ** (la - 1) - 1))  # 100 - 99 = 1: a borrow through every column
        if task == "mul":
            pairs += [(nines, nines), (0, nines), (1, nines), (low, low)]
    if task == "sub" or (task == "add" and not padded):
        # 0 - 0 stays in training: it is the only problem with a first operand 0 whose answer is not
        # negative, so without it the data say "0 - b is negative" without exception, and a model that
        # learns exactly that answers -0 (sub3, seed 0, 2026-11-28). Unpadded, 0 + 0 is the only sum
        # written "0", and a model that never saw it answered 10 (train_with_steps.toml, 2026-11-28; so did
        # a 632-parameter configs/add-tiny.toml with pairs padded to the longer operand, `0+0=` -> `#01`);
        # padded to a fixed width (000+000=#0000) it looks like every other sum, and models get it right unseen.
        pairs = [pair for pair in pairs if pair != (0, 0)]
    in_range = [(a, b) for a, b in pairs
                if min_digits <= len(str(a)) <= max_digits and min_digits <= len(str(b)) <= max_digits]
    return _unique(in_range)


def _unique(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return list(dict.fromkeys(pairs))
