"""Balanced sampling of distinct problems, by construction.

The problem space of a task over a digit range is cut into buckets: one per operand-length pair and,
for add/sub, per carry (borrow) count. A bucket knows its exact size (a small dynamic program over
columns) and can *unrank*: map an index in `range(size)` to its problem in O(columns). Drawing
distinct indices per bucket therefore gives distinct problems without rejection, and different
buckets never share a problem, so splits cut from one draw are disjoint by construction.

Counts are spread by water filling: every length pair gets an equal share, capped at its size (small
spaces are taken whole instead of over-sampled), and within a pair every carry count gets an equal
share of the pair's quota, capped likewise.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import numpy as np

from mct.errors import MctError

INT64_SAFE = 2**62  # index spaces below this are drawn and unranked with numpy


def length_range(length: int) -> tuple[int, int]:
    """(smallest, count) of the numbers with `length` digits; one digit includes 0."""
    if length == 1:
        return 0, 10
    return 10 ** (length - 1), 9 * 10 ** (length - 1)


class _ColumnDP:
    """Problems x (lx digits) op y (ly <= lx digits) with x >= y for sub, grouped by carry count.

    Column i (least significant first) chooses digits (x_i, y_i); `op` gives the carry out. For sub the
    final borrow must be 0 (that is x >= y).
    """

    def __init__(self, task: str, lx: int, ly: int):
        assert lx >= ly
        self.n = lx
        sub = task == "sub"
        # groups[i][c_in][c_out] = [(x_i * 10^i, y_i * 10^i), ...]
        self.groups = []
        for i in range(lx):
            xs = range(1, 10) if (i == lx - 1 and lx > 1) else range(10)
            ys = (range(1, 10) if (i == ly - 1 and ly > 1) else range(10)) if i < ly else (0,)
            scale = 10**i
            col = [[[], []], [[], []]]
            for c in (0, 1):
                for x in xs:
                    for y in ys:
                        out = int(x - y - c < 0) if sub else int(x + y + c >= 10)
                        col[c][out].append((x * scale, y * scale))
            self.groups.append(col)
        # ways[i][c][r]: completions of columns i.. from carry-in c with exactly r more carries
        n = lx
        ways = [[[0] * (n + 2) for _ in (0, 1)] for _ in range(n + 1)]
        ways[n][0][0] = 1
        if not sub:
            ways[n][1][0] = 1
        for i in range(n - 1, -1, -1):
            for c in (0, 1):
                for r in range(n + 1):
                    total = len(self.groups[i][c][0]) * ways[i + 1][0][r]
                    if r:
                        total += len(self.groups[i][c][1]) * ways[i + 1][1][r - 1]
                    ways[i][c][r] = total
        self.ways = ways
        # blocks[i][c][r] = [(block size, completions each, options, carry out), ...] (non-empty only)
        self.blocks = []
        for i in range(n):
            per_c = []
            for c in (0, 1):
                per_r = []
                for r in range(n + 1):
                    entries = []
                    for out in (0, 1):
                        if r - out < 0:
                            continue
                        each = ways[i + 1][out][r - out]
                        options = self.groups[i][c][out]
                        if each and options:
                            entries.append((each * len(options), each, options, out))
                    per_r.append(entries)
                per_c.append(per_r)
            self.blocks.append(per_c)
        self._tables = None

    def _numpy_tables(self):
        """Per column: first-block size, completions per option of each block, and option values."""
        if self._tables is None:
            n = self.n
            tables = []
            for i in range(n):
                first = np.zeros((2, n + 1), dtype=np.int64)
                each = np.ones((2, 2, n + 1), dtype=np.int64)
                width = max(len(self.groups[i][c][o]) for c in (0, 1) for o in (0, 1))
                opt_x = np.zeros((2, 2, max(width, 1)), dtype=np.int64)
                opt_y = np.zeros((2, 2, max(width, 1)), dtype=np.int64)
                for c in (0, 1):
                    for o in (0, 1):
                        for q, (dx, dy) in enumerate(self.groups[i][c][o]):
                            opt_x[c, o, q], opt_y[c, o, q] = dx, dy
                    for r in range(n + 1):
                        for size, count_each, _, out in self.blocks[i][c][r]:
                            # States of other carry counts can exceed int64 (10-digit operands); a bucket
                            # only takes this path when its own index space is below 2**62, so every
                            # state it visits fits, and clipping the others changes nothing.
                            each[c, out, r] = min(count_each, _INT64_MAX)
                            if out == 0:
                                first[c, r] = min(size, _INT64_MAX)
                tables.append((first, each, opt_x, opt_y))
            self._tables = tables
        return self._tables

    def unrank_many(self, index: np.ndarray, carries: int) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised `unrank` (index space below 2**62): index [N] int64 -> x [N], y [N]."""
        index = index.astype(np.int64, copy=True)
        c = np.zeros(len(index), dtype=np.int64)
        r = np.full(len(index), carries, dtype=np.int64)
        x = np.zeros(len(index), dtype=np.int64)
        y = np.zeros(len(index), dtype=np.int64)
        for first, each, opt_x, opt_y in self._numpy_tables():
            size0 = first[c, r]
            out = (index >= size0).astype(np.int64)
            index -= size0 * out
            per = each[c, out, r]
            q = index // per
            index -= q * per
            x += opt_x[c, out, q]
            y += opt_y[c, out, q]
            c = out
            r = r - out
        return x, y

    def _sampling_tables(self):
        """Per column: P(carry out = 1 | carry in, carries left) [2, n+1], and the digit options of each
        (carry in, carry out) block as arrays x [2, 2, W], y [2, 2, W] with their counts [2, 2]."""
        if getattr(self, "_sample_tables", None) is None:
            n = self.n
            tables = []
            for i in range(n):
                p_out = np.zeros((2, n + 1))
                width = max(1, max(len(self.groups[i][c][o]) for c in (0, 1) for o in (0, 1)))
                opt_x = np.zeros((2, 2, width), dtype=np.int64)
                opt_y = np.zeros((2, 2, width), dtype=np.int64)
                counts = np.ones((2, 2), dtype=np.int64)
                scale = 10**i
                for c in (0, 1):
                    for o in (0, 1):
                        options = self.groups[i][c][o]
                        counts[c, o] = max(1, len(options))
                        for q, (dx, dy) in enumerate(options):
                            opt_x[c, o, q], opt_y[c, o, q] = dx // scale, dy // scale
                    for r in range(n + 1):
                        total = self.ways[i][c][r]
                        if total and r >= 1:
                            # exact big-int counts; their ratio is a float probability
                            p_out[c, r] = len(self.groups[i][c][1]) * self.ways[i + 1][1][r - 1] / total
                tables.append((p_out, opt_x, opt_y, counts))
            self._sample_tables = tables
        return self._sample_tables

    def sample_digits(self, rng: np.random.Generator, size: int, carries: int) -> tuple[np.ndarray, np.ndarray]:
        """`size` problems drawn uniformly (with replacement) from those with exactly `carries` carry
        columns, as digits least significant first: (x [size, n], y [size, n]). Any length: no big ints."""
        c = np.zeros(size, dtype=np.int64)
        r = np.full(size, carries, dtype=np.int64)
        x = np.zeros((size, self.n), dtype=np.int64)
        y = np.zeros((size, self.n), dtype=np.int64)
        for i, (p_out, opt_x, opt_y, counts) in enumerate(self._sampling_tables()):
            out = (rng.random(size) < p_out[c, r]).astype(np.int64)
            q = (rng.random(size) * counts[c, out]).astype(np.int64)
            x[:, i], y[:, i] = opt_x[c, out, q], opt_y[c, out, q]
            c, r = out, r - out
        return x, y

    def count(self, carries: int) -> int:
        return self.ways[0][0][carries] if carries <= self.n else 0

    def unrank(self, index: int, carries: int) -> tuple[int, int]:
        """The `index`-th (x, y) with exactly `carries` carry columns."""
        c, r, x, y = 0, carries, 0, 0
        for column in self.blocks:
            for size, each, options, out in column[c][r]:
                if index < size:
                    q, index = divmod(index, each)
                    dx, dy = options[q]
                    x += dx
                    y += dy
                    c = out
                    r -= out
                    break
                index -= size
        return x, y


@dataclass
class Bucket:
    """Problems of one length pair (and carry count for add/sub). `index_space` >= `size`: indices of
    sub's swapped-equal pairs (a == b counted twice) are invalid and unrank to None."""

    task: str
    digits: tuple[int, int]
    carries: int | None
    size: int
    index_space: int
    _unrank: object = None
    _unrank_many: object = None
    _sample: object = None
    excluded: frozenset = frozenset()  # problems of the bucket that `draw` never returns (size counts without them)

    def unrank(self, index: int) -> tuple[int, int] | None:
        return self._unrank(index)

    def unrank_many(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Vectorised unrank (index_space < 2**62): (a [N], b [N], valid [N] bool or None when all valid)."""
        return self._unrank_many(index)

    def sample_digits(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        """`size` problems of the bucket, uniformly with replacement, as digit matrices least significant
        first: (a [size, la], b [size, lb]). Used by the training stream; works at any length."""
        return self._sample(rng, size)


def _uniform_digits(rng: np.random.Generator, size: int, length: int) -> np.ndarray:
    """Uniform numbers of exactly `length` digits (0 counts as one digit), least significant first."""
    digits = rng.integers(0, 10, size=(size, length))
    if length > 1:
        digits[:, -1] = rng.integers(1, 10, size=size)
    return digits


def _grid_unrank(la: int, lb: int):
    lo_a, _ = length_range(la)
    lo_b, nb = length_range(lb)
    return (lambda i: (lo_a + i // nb, lo_b + i % nb),
            lambda i: (lo_a + i // nb, lo_b + i % nb, None),
            lambda rng, k: (_uniform_digits(rng, k, la), _uniform_digits(rng, k, lb)))


def _column_sampler(dp: _ColumnDP, k: int, swap: bool, symmetric: bool):
    """Digit sampler of a carry bucket: the DP draws (x, y) with x the longer (sub: larger) operand;
    `swap` gives (y, x) (a is the shorter), `symmetric` (sub, equal lengths) swaps half the rows at random."""
    def sample(rng, size):
        x, y = dp.sample_digits(rng, size, k)
        if swap:
            return y, x
        if symmetric:
            flip = rng.random(size) < 0.5
            return np.where(flip[:, None], y, x), np.where(flip[:, None], x, y)
        return x, y
    return sample


def _pair_buckets(task: str, la: int, lb: int) -> list[Bucket]:
    if task not in ("add", "sub"):
        space = length_range(la)[1] * length_range(lb)[1]
        return [Bucket(task, (la, lb), None, space, space, *_grid_unrank(la, lb))]
    swap = la < lb
    lx, ly = (lb, la) if swap else (la, lb)
    dp = _ColumnDP(task, lx, ly)
    buckets = []
    for k in range(lx + 1):
        count = dp.count(k)
        if not count:
            continue
        if task == "add" or la != lb:
            if swap:
                unrank = (lambda dp, k: lambda i: dp.unrank(i, k)[::-1])(dp, k)
                many = (lambda dp, k: lambda i: dp.unrank_many(i, k)[::-1] + (None,))(dp, k)
            else:
                unrank = (lambda dp, k: lambda i: dp.unrank(i, k))(dp, k)
                many = (lambda dp, k: lambda i: dp.unrank_many(i, k) + (None,))(dp, k)
            buckets.append(Bucket(task, (la, lb), k, count, count, unrank, many,
                                  _column_sampler(dp, k, swap, symmetric=False)))
        else:  # sub, equal lengths: (x, y) with x >= y, and its swap (y, x) unless x == y
            equal = length_range(la)[1] if k == 0 else 0

            def unrank(i, dp=dp, k=k, count=count):
                if i < count:
                    return dp.unrank(i, k)
                x, y = dp.unrank(i - count, k)
                return None if x == y else (y, x)

            def many(i, dp=dp, k=k, count=count):
                swapped = i >= count
                x, y = dp.unrank_many(np.where(swapped, i - count, i), k)
                return np.where(swapped, y, x), np.where(swapped, x, y), ~(swapped & (x == y))

            buckets.append(Bucket(task, (la, lb), k, 2 * count - equal, 2 * count, unrank, many,
                                  _column_sampler(dp, k, swap=False, symmetric=True)))
    return buckets


def length_pairs(min_digits: int, max_digits: int, longer_than: int | None = None) -> list[tuple[int, int]]:
    """Operand-length pairs in the range; `longer_than` keeps pairs with an operand longer than it."""
    pairs = [(la, lb) for la in range(min_digits, max_digits + 1) for lb in range(min_digits, max_digits + 1)]
    if longer_than is not None:
        pairs = [p for p in pairs if max(p) > longer_than]
    return pairs


def space_buckets(task: str, pairs: list[tuple[int, int]]) -> list[list[Bucket]]:
    """Buckets of each length pair, in a fixed order."""
    return [_pair_buckets(task, la, lb) for la, lb in pairs]


def water_fill(capacities: list[int], total: int) -> list[int]:
    """Split `total` as evenly as the capacities allow (smallest first, ties by position)."""
    quotas = [0] * len(capacities)
    order = sorted(range(len(capacities)), key=lambda i: (capacities[i], i))
    remaining = total
    for position, i in enumerate(order):
        left = len(order) - position
        quotas[i] = min(capacities[i], -(-remaining // left))
        remaining -= quotas[i]
    if remaining:
        raise ValueError("water_fill: capacities too small")  # callers check capacity first
    return quotas


def spread(n: int, k: int) -> list[int]:
    """k distinct indices of range(n) (k <= n) spread evenly from the first to the last."""
    if k <= 1:
        return [0] * k
    return [(i * (n - 1) + (k - 1) // 2) // (k - 1) for i in range(k)]


def allocate(buckets: list[list[Bucket]], total: int) -> list[list[int]]:
    """Quota of every bucket: equal over length pairs, then equal over carry counts within a pair. Fewer
    problems than length pairs go one each to pairs spread evenly over the range (water_fill would give
    them to the smallest, shortest pairs, and a 300-problem split of 60-100 digits would stop at 83)."""
    pair_caps = [sum(b.size for b in group) for group in buckets]
    if 0 < total < len(pair_caps):
        pair_quotas = [0] * len(pair_caps)
        for i in spread(len(pair_caps), total):
            pair_quotas[i] = 1
    else:
        pair_quotas = water_fill(pair_caps, total)
    return [water_fill([b.size for b in group], q) for group, q in zip(buckets, pair_quotas)]


def capacity(buckets: list[list[Bucket]]) -> int:
    return sum(b.size for group in buckets for b in group)


def make_rng(seed: int, purpose: str) -> np.random.Generator:
    """A numpy generator determined by (seed, purpose); any integer seed, negative included."""
    digest = hashlib.sha256(f"mct:{seed}:{purpose}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


_INT64_MAX = 2**63 - 1


def _distinct_indices(rng: np.random.Generator, space: int, k: int):
    """k distinct indices from range(space) in random order: int64 array, or a list for huge spaces."""
    if space < INT64_SAFE:
        return rng.choice(space, size=k, replace=False, shuffle=True)
    py = random.Random(int(rng.integers(2**62)))
    seen: set[int] = set()
    out = []
    while len(out) < k:
        i = py.randrange(space)
        if i not in seen:
            seen.add(i)
            out.append(i)
    return out


def _unrank_indices(bucket: Bucket, indices) -> tuple[np.ndarray, np.ndarray]:
    """Operands (a [N], b [N]) of the valid indices, in order: int64 arrays, object arrays for huge spaces."""
    if isinstance(indices, np.ndarray):
        a, b, valid = bucket.unrank_many(indices)
        if valid is not None:
            a, b = a[valid], b[valid]
        return a, b
    pairs = [p for p in map(bucket.unrank, indices) if p is not None]
    a = np.empty(len(pairs), dtype=object)
    b = np.empty(len(pairs), dtype=object)
    a[:] = [p[0] for p in pairs]
    b[:] = [p[1] for p in pairs]
    return a, b


def excluding(task: str, buckets: list[list[Bucket]], problems) -> list[list[Bucket]]:
    """The buckets without `problems` (operand pairs): each bucket's size drops by the ones it holds."""
    from collections import defaultdict
    from dataclasses import replace

    from mct.data import tasks

    held = defaultdict(set)
    for a, b in problems:
        carries = tasks.carry_stats(task, a, b)[0] if task in ("add", "sub") else None
        held[(len(str(a)), len(str(b))), carries].add((a, b))
    return [[replace(b, size=b.size - len(held[b.digits, b.carries]), excluded=frozenset(held[b.digits, b.carries]))
             if held.get((b.digits, b.carries)) else b for b in group] for group in buckets]


def draw_bucket(rng: np.random.Generator, bucket: Bucket, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k distinct problems of `bucket`, uniformly at random, none of its `excluded`: (a [k], b [k])."""
    if k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if bucket.excluded:
        a, b = draw_bucket(rng, replace_size(bucket), min(k + len(bucket.excluded), bucket.size + len(bucket.excluded)))
        keep = np.array([(x, y) not in bucket.excluded for x, y in zip(a.tolist(), b.tolist())], dtype=bool)
        return a[keep][:k], b[keep][:k]
    if bucket.index_space == bucket.size:
        return _unrank_indices(bucket, _distinct_indices(rng, bucket.size, k))
    take = k
    while True:  # a few indices are invalid (sub's a == b swapped); draw a little more and drop them
        take = min(bucket.index_space, take + max(16, take // 4))
        a, b = _unrank_indices(bucket, _distinct_indices(rng, bucket.index_space, take))
        if len(a) >= k or take == bucket.index_space:
            return a[:k], b[:k]


def replace_size(bucket: Bucket) -> Bucket:
    """The bucket with its excluded problems counted back in (what the index space holds)."""
    from dataclasses import replace

    return replace(bucket, size=bucket.size + len(bucket.excluded), excluded=frozenset())


def check_capacity(buckets: list[list[Bucket]], total: int, what: str) -> None:
    available = capacity(buckets)
    if total > available:
        raise MctError(f"{what}: asked for {total:,} distinct problems but only {available:,} exist; "
                       f"ask for at most {available:,} (fewer training, validation or test problems) or widen the digit range")


def draw(rng: np.random.Generator, buckets: list[list[Bucket]], total: int, what: str) -> tuple[list, list]:
    """`total` distinct problems spread over the buckets, shuffled: (list of a, list of b).

    `what` names the request in the too-many-problems error."""
    check_capacity(buckets, total, what)
    parts_a, parts_b = [], []
    for group, quotas in zip(buckets, allocate(buckets, total)):
        for bucket, quota in zip(group, quotas):
            a, b = draw_bucket(rng, bucket, quota)
            parts_a.append(a)
            parts_b.append(b)
    if any(p.dtype == object for p in parts_a):
        parts_a = [p.astype(object) for p in parts_a]
        parts_b = [p.astype(object) for p in parts_b]
    order = rng.permutation(total)
    return np.concatenate(parts_a)[order].tolist(), np.concatenate(parts_b)[order].tolist()


def mod_partition(modulus: int, train_fraction: float, seed: int) -> tuple[list, list, list]:
    """All modulus**2 pairs, shuffled with `seed`: (train, val, test); the rest after training is halved."""
    pairs = [(a, b) for a in range(modulus) for b in range(modulus)]
    random.Random(f"mct-mod:{modulus}:{seed}").shuffle(pairs)
    n_train = min(len(pairs) - 2, max(1, round(train_fraction * len(pairs))))
    rest = pairs[n_train:]
    half = len(rest) // 2
    return pairs[:n_train], rest[:half], rest[half:]


# data.length_weights: each operand-length pair's share of training draws goes as (its problems) ** power
LENGTH_WEIGHT_POWERS = {"equal": 0.0, "sqrt": 0.5, "size": 1.0}


def stream_weights(task: str, min_digits: int, max_digits: int, total: int, carry_mix: float = 0.0,
                   longest: int | None = None, length_weights: str = "equal") -> tuple[list[Bucket], np.ndarray]:
    """The buckets of the training stream and the probability of each: an equal share per operand-length
    pair (the 100 one-digit additions are drawn as often as any other pair), split within a pair over its
    carry counts like the quotas `mct gen` gives a data set of `total` problems (`allocate`).
    `length_weights="size"` gives each pair a share in proportion to its number of problems instead
    (multiplication: the 2x2-digit products are 81% of the 1-2 digit problems, and the hardest), and
    "sqrt" one in proportion to its square root (between the two: 3x3-digit products get 49% of 1-3 digits).

    `carry_mix` moves that share of the probability to the bucket of each length pair where every column
    carries (the longest chains); `longest` keeps only operands of at most that many digits (a length
    curriculum)."""
    pairs = [p for p in length_pairs(min_digits, max_digits) if longest is None or max(p) <= longest]
    buckets = space_buckets(task, pairs)
    quotas = allocate(buckets, min(capacity(buckets), total))
    # A stream draws with replacement, so a small space need not be capped at its size: every length
    # pair gets an equal share (as the held-out sets do), or its size's share, split over its carry
    # counts as `mct gen` would.
    sizes = [sum(b.size for b in group) ** LENGTH_WEIGHT_POWERS[length_weights] for group in buckets]
    pair_shares = [size / sum(sizes) for size in sizes]
    flat, weights = [], []
    for group, qs, pair_share in zip(buckets, quotas, pair_shares):
        kept = [(b, q) for b, q in zip(group, qs) if q > 0]
        share = sum(q for _, q in kept)
        flat += kept
        weights += [q / share * pair_share for _, q in kept]
    weights = np.array(weights, dtype=np.float64)
    weights /= weights.sum()
    if carry_mix:
        tops = {}
        for i, (bucket, _) in enumerate(flat):
            if bucket.carries is not None and bucket.carries >= tops.get(bucket.digits, (-1, 0))[0]:
                tops[bucket.digits] = (bucket.carries, i)
        pair_share = {}
        for (bucket, _), w in zip(flat, weights):
            pair_share[bucket.digits] = pair_share.get(bucket.digits, 0.0) + w
        chains = np.zeros_like(weights)
        for digits, (_, i) in tops.items():
            chains[i] = pair_share[digits]  # each length pair keeps its share; within it, the longest chain
        weights = (1 - carry_mix) * weights + carry_mix * chains / chains.sum()
    return [b for b, _ in flat], weights / weights.sum()


def tie_top_columns(rng: np.random.Generator, task: str, a: np.ndarray, a_len: np.ndarray, b: np.ndarray,
                    b_len: np.ndarray, share: float) -> None:
    """In place (data.tie_mix): in about `share` of the rows, the top s columns become ties, s uniform from 1
    to the longer operand's length: sub copies a's digits into b (a - b's sign is decided below them; all
    columns: a == b; operands of equal length only, as a longer one decides the sign alone), add makes each
    column sum to 9 (a carry from below runs through them, so the carry into the top is decided below),
    and above the shorter operand's top, where its padding is 0, the longer one's digits become 9s
    (`99907+85=`, `99942+57=`). Uniform operands almost never have such columns, so a model rarely learns to
    look below the top one. Digit matrices least significant first, as `sample_stream` returns them; lengths
    never change (see `_tie`)."""
    longest, shortest = np.maximum(a_len, b_len), np.minimum(a_len, b_len)
    rows = (rng.random(len(a)) < share) & ((a_len == b_len) | (task == "add"))
    run = np.floor(rng.random(len(a)) * longest).astype(np.int64) + 1  # 1..length
    first = longest - run
    rows = _tie(task, a, b, b_len, rows, first, shortest - first)  # the columns both operands have
    column = np.arange(a.shape[1])[None, :]
    nines = rows[:, None] & (column >= np.maximum(first, shortest)[:, None]) & (column < longest[:, None])
    a[nines & (a_len > b_len)[:, None]] = 9
    b[nines & (b_len > a_len)[:, None]] = 9


def plant_chains(rng: np.random.Generator, task: str, a: np.ndarray, a_len: np.ndarray, b: np.ndarray,
                 b_len: np.ndarray, share: float) -> None:
    """In place (data.chain_mix): about `share` of the rows get a carry (borrow) chain that starts inside
    the number: column r - 1 carries (add: digits summing to 10 or more; sub: the larger operand's digit
    below the smaller's), and the s columns above it pass the carry on (add: digits summing to 9; sub:
    equal digits), s uniform from 1 to what fits below the shorter operand's top (sub: below the top of
    equal-length operands too, which must decide the sign) and r uniform where the run fits. The column
    above the run decides whether the chain goes on or stops there (248+252: the ones' carry ends in the
    hundreds). Uniform operands seldom hold such a run (one column in ten passes a carry on), so a model
    rarely learns to look more than one column down. Lengths never change (see `_tie`)."""
    room = np.minimum(a_len, b_len) - 1 - ((a_len == b_len) if task == "sub" else 0)  # columns for the run
    rows = (rng.random(len(a)) < share) & (room >= 1)
    run = np.floor(rng.random(len(a)) * room).astype(np.int64) + 1  # 1..room
    first = np.floor(rng.random(len(a)) * (room - run + 1)).astype(np.int64) + 1  # 1..room - run + 1
    low = rng.integers(1, 10, len(a))  # the carrying column's digits: one 1..9, the other to match
    other = (10 - low + np.floor(rng.random(len(a)) * low) if task == "add" else np.floor(rng.random(len(a)) * low))
    rows = _tie(task, a, b, b_len, rows, first, run)
    a_digit, b_digit = other.astype(np.int64), low
    if task == "sub":  # the borrow runs in the larger operand's subtraction: decided above the run
        above = np.arange(a.shape[1])[None, :] >= (first + run)[:, None]
        diff = np.where(above, a - b, 0)
        top = a.shape[1] - 1 - np.argmax(diff[:, ::-1] != 0, axis=1)  # the highest differing column
        b_larger = (b_len > a_len) | ((a_len == b_len) & (np.take_along_axis(diff, top[:, None], 1)[:, 0] < 0))
        a_digit, b_digit = np.where(b_larger, low, a_digit), np.where(b_larger, a_digit, low)
    below = np.clip(first - 1, 0, None)[:, None]
    for digits, value in ((a, a_digit), (b, b_digit)):
        np.put_along_axis(digits, below, np.where(rows, value, np.take_along_axis(digits, below, 1)[:, 0])[:, None], 1)


def edge_digits(rng: np.random.Generator, a: np.ndarray, a_len: np.ndarray, b: np.ndarray, b_len: np.ndarray,
                share: float) -> None:
    """In place (data.edge_mix): in about `share` of the rows, each digit of each operand becomes, with
    probability 1/2, a 0, a 9 or the other operand's digit in its column (a sixth each). Uniform operands
    seldom have the boundaries this gives: sparse operands (500+500, 0+100), columns of two 9s or equal digits
    (999+999, 55+55) and the all-zero 0+0. Without it 2 of the shipped default's seeds 0-11 missed one of
    them: a problem of the hard split is never trained on, and its neighbours are rare (docs/recipes.md).
    Digit matrices least significant first, as `sample_stream` returns them; lengths never change (a top
    digit that would become 0 keeps its draw)."""
    rows = rng.random(len(a)) < share
    column = np.arange(a.shape[1])[None, :]
    for digits, lengths, other in ((a, a_len, b), (b, b_len, a)):  # b copies a as a has just become
        pick = rng.integers(0, 6, a.shape)  # 0: a 0, 1: a 9, 2: the other operand's digit, 3-5: kept
        new = np.select([pick == 0, pick == 1, pick == 2], [0, 9, other], digits)
        top = (column == (lengths - 1)[:, None]) & (lengths[:, None] > 1)
        new = np.where(top & (new == 0), digits, new)
        inside = rows[:, None] & (column < lengths[:, None])
        digits[inside] = new[inside]


def nine_top_digits(rng: np.random.Generator, a: np.ndarray, a_len: np.ndarray, b: np.ndarray,
                    b_len: np.ndarray, share: float) -> None:
    """In place (data.nines_mix): in about `share` of the rows, the top s digits of a, of b or of both (a
    third of those rows each) become 9s, s uniform from 1 to that operand's length, so 9xx, 99x and 999
    (998*999, 99*989, 9*999). x * 999 is x * 1000 - x: a product whose digits come from a long borrow
    through the middle columns, which uniform operands almost never show (one 3-digit operand in a hundred
    starts with 99). Digit matrices least significant first, as `sample_stream` returns them; lengths never
    change (the top digit stays nonzero)."""
    rows = rng.random(len(a)) < share
    which = rng.integers(0, 3, len(a))  # 0: a, 1: b, 2: both
    column = np.arange(a.shape[1])[None, :]
    for digits, lengths, picked in ((a, a_len, which != 1), (b, b_len, which != 0)):
        run = np.floor(rng.random(len(a)) * lengths).astype(np.int64) + 1  # 1..length
        nines = (rows & picked)[:, None] & (column >= (lengths - run)[:, None]) & (column < lengths[:, None])
        digits[nines] = 9


def _tie(task: str, a: np.ndarray, b: np.ndarray, b_len: np.ndarray, rows: np.ndarray, first: np.ndarray,
         run: np.ndarray) -> np.ndarray:
    """Ties columns first..first + run - 1 of `rows` in place (sub: b's digit = a's; add: b's = 9 - a's) and
    returns the rows tied: a row whose tie would give b a leading 0 keeps its draw, so lengths never change."""
    column = np.arange(a.shape[1])[None, :]
    tie = rows[:, None] & (column >= first[:, None]) & (column < (first + run)[:, None])
    tied = np.where(tie, a if task == "sub" else 9 - a, b)
    rows = rows & ~((b_len > 1) & (np.take_along_axis(tied, (b_len - 1)[:, None], 1)[:, 0] == 0))
    tie &= rows[:, None]
    b[tie] = tied[tie]
    return rows


def sample_stream(rng: np.random.Generator, buckets: list[Bucket], probabilities: np.ndarray, size: int,
                  width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`size` problems drawn with replacement: a bucket by `probabilities`, then a uniform problem of it.

    Returns digit matrices least significant first and lengths: (a [size, width], a_len [size],
    b [size, width], b_len [size]), int64. One vectorised draw per bucket present, so any length works."""
    which = rng.choice(len(buckets), size=size, p=probabilities)
    order = np.argsort(which, kind="stable")
    counts = np.bincount(which, minlength=len(buckets))
    a = np.zeros((size, width), dtype=np.int64)
    b = np.zeros((size, width), dtype=np.int64)
    a_len = np.zeros(size, dtype=np.int64)
    b_len = np.zeros(size, dtype=np.int64)
    start = 0
    for bucket, count in zip(buckets, counts):
        if not count:
            continue
        rows = order[start:start + count]
        start += count
        x, y = bucket.sample_digits(rng, int(count))
        la, lb = bucket.digits
        a[rows, :la], b[rows, :lb] = x[:, :la], y[:, :lb]
        a_len[rows], b_len[rows] = la, lb
    return a, a_len, b, b_len
