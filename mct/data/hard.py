"""The hard split: the problems an average hides. `mct gen` writes them as `hard.jsonl`, `mct train`
scores every run on them, and neither ever trains on them.

For each operand length (and pair of lengths) in the configured range: the longest carry and borrow
chains (99..9 + 1, x + (10^L - x), 10^L - 1 written as 100..0 - 1), boundaries (0 + 0, 0 - 99..9,
99..9 + 99..9, 50..0 + 50..0), equal operands, zeros, powers of ten, and negative results. Deterministic:
the same range gives the same list.
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


def _chain_partner(a: int, length: int) -> int | None:
    """b of `length` digits with a + b a power of ten (a carry through every column), or None."""
    for power in (10**length, 10 ** (length + 1)):
        b = power - a
        low, count = length_range(length)
        if low <= b < low + count:
            return b
    return None


def hard_problems(task: str, min_digits: int, max_digits: int, modulus: int | None = None,
                  seed: int = 0) -> list[tuple[int, int]]:
    """The hard problems of `task` with operands of min_digits..max_digits digits, in a fixed order."""
    rng = random.Random(f"mct-hard:{task}:{min_digits}:{max_digits}:{seed}")
    if task == "mod":
        top = modulus - 1
        pairs = [(0, 0), (top, top), (top, 1), (1, top), (top, 0), (0, top)]
        pairs += [(x, modulus - x) for x in (1, 2, modulus // 2, top)]  # wraps to exactly 0
        pairs += [(x, x) for x in (1, modulus // 2, top)]
        return _unique(pairs)
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
                b = _chain_partner(a, la)
                if b is not None:
                    pairs += [(a, b), (b, a)]
            for _ in range(3):  # long carry chains: a + b = 10^L with random digits
                a = rng.randrange(max(low, 1), nines + 1)
                b = _chain_partner(a, la)
                if b is not None:
                    pairs.append((a, b))
        if task == "sub":
            x = rng.randrange(low, nines + 1)
            pairs += [(x, x), (0, nines), (low, 1), (low, nines), (1, low)]  # equal, 0 - 99..9, borrow chains
            if la > 1:
                pairs.append((10 ** (la - 1), 10 ** (la - 1) - 1))  # 100 - 99 = 1: a borrow through every column
        if task == "mul":
            pairs += [(nines, nines), (0, nines), (1, nines), (low, low)]
    in_range = [(a, b) for a, b in pairs
                if min_digits <= len(str(a)) <= max_digits and min_digits <= len(str(b)) <= max_digits]
    return _unique(in_range)


def _unique(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return list(dict.fromkeys(pairs))
