"""Training batches as device tensors: generated on the fly, or from a fixed set of problems.

Both sources hand the training loop `(input_ids [B, T], labels [B, T])` of one static shape, already on
the training device, so a step does no Python per example and no host-device copy; and both say
`scored_from`, the first position whose logits any batch scores (fixed for the run), so the step can run
its last block on the positions from there on alone:

- `GeneratedBatches` draws a *chunk* of problems at a time (numpy, vectorised per sampling bucket,
  balanced exactly like `mct gen`'s training set, never a held-out problem), renders the chunk with the
  format's batch path on the device, and hands out consecutive slices. Chunk i depends only on
  (seed, i), so resuming at (chunk, position) replays the same batches.
- `PoolBatches` holds every problem of a fixed set (a training file, the mod task's training pairs) as
  one tensor and walks through a fresh permutation each epoch, so a batch the size of the set is the
  full batch (the grokking set-up). Given groups (a training file's operand-length pairs, under
  data.length_weights = "equal"), each group fills an equal share of every epoch.
"""

from __future__ import annotations

import numpy as np
import torch

from mct.data import sampling
from mct.data.render import IGNORE_INDEX, BatchRenderer, Digits, labels_for
from mct.errors import MctError

# problems drawn and rendered at once: rendering costs the same per problem whatever the chunk, and a short
# run (the default stops after a few hundred steps) should not wait for problems it never trains on
CHUNK_PROBLEMS = 16_384


def sequence_width(data_format, tokenizer, data_config) -> int:
    """The longest prompt + target the data config can produce (the static width of training batches).

    Every text part is longest at an extreme of the digit range (the largest operands give the longest
    steps and answers, the smallest of the longest length against the largest the longest negative
    answer), so the grid of extremes gives the width; chunks are checked against it as they are drawn."""
    return int(_extremes(data_format, tokenizer, data_config)["lengths"].max())


def first_scored(labels: torch.Tensor) -> int:
    """The first input position t whose logits carry loss (labels[:, t + 1] != -100 in some row of labels
    [N, T]), or 0 when there is none. Training feeds the last block only the positions from there on."""
    scored = (labels[:, 1:] != IGNORE_INDEX).any(0).nonzero()
    return int(scored[0, 0]) if scored.numel() else 0


def _extremes(data_format, tokenizer, data_config) -> dict:
    """The batch render of the grid of extreme operand pairs (see `sequence_width`); the shortest prompts
    and steps, so the earliest labelled position, are among them too."""
    renderer = BatchRenderer(data_format, tokenizer)
    if data_format.task == "mod":
        extremes = [0, data_format.modulus - 1]
    else:
        top = 10**data_config.max_digits - 1
        extremes = [0 if data_config.min_digits == 1 else 10 ** (data_config.min_digits - 1),
                    10 ** (data_config.max_digits - 1), top]
    pairs = [(x, y) for x in extremes for y in extremes]
    return renderer.render(Digits.from_ints([p[0] for p in pairs]), Digits.from_ints([p[1] for p in pairs]))


def check_width(width: int, max_seq_len: int) -> None:
    if width > max_seq_len:
        raise MctError(f"the longest training example has {width} tokens but data.max_seq_len is {max_seq_len}; "
                       f"set data.max_seq_len and model.max_seq_len to at least {width}")


def _operand_key(values: np.ndarray, lengths: np.ndarray) -> list[int]:
    """Python ints of digit rows (least significant first)."""
    if values.shape[1] <= 18:
        return _operand_values(values).tolist()
    return [int("".join(map(str, row[:n][::-1]))) for row, n in zip(values.tolist(), lengths.tolist())]


def _operand_values(values: np.ndarray) -> np.ndarray:
    """int64 values of digit rows [N, width <= 18] (least significant first)."""
    return (values * 10 ** np.arange(values.shape[1], dtype=np.int64)).sum(1)


class HeldOut:
    """Which drawn problems are held out. Operands of up to 9 digits are checked as one int64 key per pair
    (a * 10**9 + b) against a sorted array, in numpy; longer ones pair by pair in Python."""

    SCALE = 10**9

    def __init__(self, pairs, max_digits: int):
        self.pairs = frozenset(pairs)
        self.keys = None
        if max_digits <= 9:  # pairs outside the digit range are never drawn, so they need no key
            self.keys = np.array(sorted(a * self.SCALE + b for a, b in self.pairs
                                        if 0 <= a < self.SCALE and 0 <= b < self.SCALE), dtype=np.int64)

    def __bool__(self) -> bool:
        return bool(self.pairs)

    def mask(self, a: np.ndarray, a_len: np.ndarray, b: np.ndarray, b_len: np.ndarray) -> np.ndarray:
        """bool [N]: problem i (digit rows a[i], b[i]) is held out."""
        if self.keys is not None:
            return np.isin(_operand_values(a) * self.SCALE + _operand_values(b), self.keys)
        return np.array([p in self.pairs for p in zip(_operand_key(a, a_len), _operand_key(b, b_len))], dtype=bool)


class GeneratedBatches:
    """Endless balanced training batches generated on the device (see the module docstring)."""

    def __init__(self, data_config, data_format, tokenizer, batch_size: int, device, exclude=(), seed: int = 0):
        if data_format.task == "mod":
            raise MctError("the mod task trains on its fixed training pairs (PoolBatches), not a generated stream")
        self.config = data_config
        self.renderer = BatchRenderer(data_format, tokenizer, device)
        self.mode = data_config.step_masking_mode
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.exclude = HeldOut(exclude, data_config.max_digits)
        self.seed = seed
        extremes = _extremes(data_format, tokenizer, data_config)
        self.width = int(extremes["lengths"].max())
        check_width(self.width, data_config.max_seq_len)
        self.scored_from = first_scored(labels_for(extremes["input_ids"], extremes["roles"], self.mode))
        self._weights: dict[int, tuple] = {}
        self.steps_per_chunk = max(1, CHUNK_PROBLEMS // batch_size)
        if data_config.curriculum_steps:  # the longest operand grows chunk by chunk: keep chunks short
            self.steps_per_chunk = max(1, min(self.steps_per_chunk, data_config.curriculum_steps // 20))
        self.chunk_index, self.position = 0, 0
        self._chunk = None

    def longest_at(self, step: int) -> int:
        """The longest operand the stream draws at `step` (the length curriculum; max_digits without one)."""
        c = self.config
        if not c.curriculum_steps or step >= c.curriculum_steps:
            return c.max_digits
        return c.min_digits + int((c.max_digits - c.min_digits + 1) * step / c.curriculum_steps)

    def weights(self, longest: int) -> tuple:
        if longest not in self._weights:
            c = self.config
            self._weights[longest] = sampling.stream_weights(
                self.renderer.format.task, c.min_digits, c.max_digits, c.n_train + c.n_val + c.n_test,
                carry_mix=c.carry_mix, longest=longest, length_weights=c.length_weights)
        return self._weights[longest]

    def _draw(self, rng: np.random.Generator, size: int, longest: int):
        """`size` problems none of which is held out: digit matrices and lengths."""
        buckets, probabilities = self.weights(longest)
        a, a_len, b, b_len = sampling.sample_stream(rng, buckets, probabilities, size, self.config.max_digits)
        if self.config.tie_mix:
            sampling.tie_top_columns(rng, self.renderer.format.task, a, a_len, b, b_len, self.config.tie_mix)
        if self.config.chain_mix:
            sampling.plant_chains(rng, self.renderer.format.task, a, a_len, b, b_len, self.config.chain_mix)
        if self.config.edge_mix:
            sampling.edge_digits(rng, a, a_len, b, b_len, self.config.edge_mix)
        if self.config.nines_mix:
            sampling.nine_top_digits(rng, a, a_len, b, b_len, self.config.nines_mix)
        if self.exclude:
            for _ in range(100):
                held = self.exclude.mask(a, a_len, b, b_len)
                if not held.any():
                    break
                fresh = sampling.sample_stream(rng, buckets, probabilities, int(held.sum()), self.config.max_digits)
                for array, new in zip((a, a_len, b, b_len), fresh):
                    array[held] = new
            else:
                raise MctError("the problem stream found only held-out problems; widen the digit range or "
                               "hold out fewer (data.n_val, data.n_test)")
        return a, a_len, b, b_len

    def _render_chunk(self, index: int) -> None:
        rng = sampling.make_rng(self.seed, f"stream:{index}")
        a, a_len, b, b_len = self._draw(rng, self.steps_per_chunk * self.batch_size,
                                        self.longest_at(index * self.steps_per_chunk))
        def to(array):  # pinned host memory makes the one copy per chunk asynchronous on CUDA
            tensor = torch.from_numpy(array)
            return (tensor.pin_memory() if self.device.type == "cuda" else tensor).to(self.device, non_blocking=True)

        rendered = self.renderer.render(Digits(to(a), to(a_len)), Digits(to(b), to(b_len)), width=self.width)
        longest = int(rendered["lengths"].max())  # one sync per chunk, so no example is ever cut
        if longest > self.width:
            raise AssertionError(f"an example of {longest} tokens exceeds the computed width {self.width}")
        ids = rendered["input_ids"]
        labels = labels_for(ids, rendered["roles"], self.mode)
        if bool((labels[:, 1:self.scored_from + 1] != IGNORE_INDEX).any()):  # ... and no label is skipped
            raise AssertionError(f"a label before position {self.scored_from + 1}, the computed first one")
        self._chunk = (ids, labels)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids [B, T], labels [B, T]) on the device; T = `self.width` for every batch."""
        if self._chunk is None or self.position >= self.steps_per_chunk:
            if self._chunk is not None:
                self.chunk_index, self.position = self.chunk_index + 1, 0
            self._render_chunk(self.chunk_index)
        start = self.position * self.batch_size
        self.position += 1
        ids, labels = self._chunk
        return ids[start:start + self.batch_size], labels[start:start + self.batch_size]

    def state_dict(self) -> dict:
        return {"kind": "generated", "chunk": self.chunk_index, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.chunk_index, self.position = int(state["chunk"]), int(state["position"])
        self._render_chunk(self.chunk_index)


class PoolBatches:
    """Batches from a fixed set of tokenised problems, reshuffled every epoch (see the module docstring).

    `input_ids` / `labels` [M, T] are moved to the device once. A batch may span two epochs."""

    def __init__(self, input_ids: torch.Tensor, labels: torch.Tensor, batch_size: int, device, seed: int = 0,
                 groups: torch.Tensor | None = None, group_power: float = 0.0):
        self.ids, self.labels = input_ids.to(device), labels.to(device)
        self.scored_from = first_scored(self.labels)
        # groups [M] (e.g. operand-length pairs): each group fills a share of every epoch in proportion to
        # (its rows) ** group_power, its rows drawn round after round in fresh orders. Power 0: equal shares (a
        # pair of 71 problems beside one of 24,000 still gets its ninth of the batches, as in the generated
        # stream); 0.5: data.length_weights = "sqrt". Every row is drawn at least once an epoch.
        self.members = None if groups is None else [torch.nonzero(groups == g)[:, 0] for g in torch.unique(groups)]
        self.size = self.ids.shape[0]  # problems held
        self.shares = None
        if self.members is not None:
            weights = [len(m) ** group_power for m in self.members]
            scale = max(len(m) / w for m, w in zip(self.members, weights))  # the group that needs the most
            self.shares = [max(len(m), round(w * scale)) for m, w in zip(self.members, weights)]
        self.epoch_size = self.size if self.shares is None else sum(self.shares)  # drawn per epoch
        self.width = self.ids.shape[1]
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.seed = seed
        self.epoch, self.position = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        if self.members is None:
            return torch.randperm(self.size, generator=generator).to(self.device)
        rows = [torch.cat([m[torch.randperm(len(m), generator=generator)]
                           for _ in range(-(-share // len(m)))])[:share] for m, share in zip(self.members, self.shares)]
        everything = torch.cat(rows)
        return everything[torch.randperm(len(everything), generator=generator)].to(self.device)

    def _take(self, count: int) -> torch.Tensor:
        parts = []
        while count:
            if self.position >= self.epoch_size:
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            take = min(count, self.epoch_size - self.position)
            parts.append(self._order[self.position:self.position + take])
            self.position += take
            count -= take
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self._take(self.batch_size)
        return self.ids.index_select(0, rows), self.labels.index_select(0, rows)

    def state_dict(self) -> dict:
        return {"kind": "pool", "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._permutation(self.epoch)


def render_problems(data_format, tokenizer, problems, step_masking_mode: str, width: int | None = None,
                    device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids [M, T], labels [M, T]) of operand pairs, through the batch path."""
    renderer = BatchRenderer(data_format, tokenizer, device)
    a = Digits.from_ints([p[0] for p in problems], device)
    b = Digits.from_ints([p[1] for p in problems], device)
    rendered = renderer.render(a, b, width=width)
    ids = rendered["input_ids"]
    if width is None:
        ids = ids[:, :int(rendered["lengths"].max())]
    return ids, labels_for(ids, rendered["roles"][:, :ids.shape[1]], step_masking_mode)
