"""One optimisation step, with no host-device synchronisation: the loss stays on the device.

nanoGPT's recipe: AdamW with decay on matrices only (fused on CUDA), linear warmup then cosine decay
to a floor, gradient accumulation and clipping, autocast (bf16, or fp16 with a GradScaler) on GPUs.
`GraphedStep` captures the whole step (forward, backward, clipping, AdamW) in one CUDA graph and
replays it, which removes the per-kernel launch cost that dominates a small model on a GPU.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.torch_version import TorchVersion

from mct.tokenizer import ANSWER_MARK, DEFAULT_VOCAB, EOS
from mct.train.distributed import Dist, all_reduce_sum

IGNORE_INDEX = -100
# the answer marker and <eos>: the tokens every format fixes (every mct vocabulary starts with the default one)
MARKER_IDS = (DEFAULT_VOCAB.index(ANSWER_MARK), DEFAULT_VOCAB.index(EOS))


def build_optimizer(model: torch.nn.Module, config, capturable: bool = False) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (embeddings, projections) only, not on biases and norms, unless
    `train.decay_all` (every parameter, as the grokking papers decay them).

    Fused kernels (one pass over all parameters) on CUDA, and on the CPU where torch has them (2.4+);
    `capturable` (for CUDA graphs) keeps the learning rate and step counters on the device."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 or config.train.decay_all else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.train.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    device = next(model.parameters()).device
    fused = device.type == "cuda" or (device.type == "cpu" and TorchVersion(torch.__version__) >= "2.4")
    options = {"capturable": True, "foreach": True} if capturable else {"fused": True} if fused else {}
    lr = torch.tensor(config.train.lr, device=next(model.parameters()).device) if capturable else config.train.lr
    return torch.optim.AdamW(groups, lr=lr, betas=(config.train.beta1, config.train.beta2), **options)


def learning_rate(step: int, config, cooldown_from: int | None = None) -> float:
    """Linear warmup to `lr`, then cosine decay to `lr * min_lr_ratio` at `max_steps` (or constant).

    From `cooldown_from` (the step the target was reached, when `train.cooldown_steps` is set) the rate
    falls linearly from the schedule's rate there towards 0 over the cooldown."""
    train = config.train
    if cooldown_from is not None and step >= cooldown_from:
        length = cooldown_length(cooldown_from, config)
        left = max(0, cooldown_from + length - step)
        return learning_rate(cooldown_from, config) * left / max(1, length)
    if train.warmup_steps and step < train.warmup_steps:
        return train.lr * (step + 1) / train.warmup_steps
    if train.lr_schedule == "constant":
        return train.lr
    span = max(1, train.max_steps - train.warmup_steps)
    progress = min(1.0, (step - train.warmup_steps) / span)
    floor = train.lr * train.min_lr_ratio
    return floor + 0.5 * (train.lr - floor) * (1 + math.cos(math.pi * progress))


def cooldown_length(cooldown_from: int, config) -> int:
    """Steps of a cooldown that starts at `cooldown_from`: `train.cooldown_steps`, cut at `max_steps`."""
    return max(0, min(config.train.cooldown_steps, config.train.max_steps - cooldown_from))


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        if torch.is_tensor(group["lr"]):
            group["lr"].fill_(lr)  # a device tensor (CUDA graphs): updated in place, no sync
        else:
            group["lr"] = lr


def training_positions(raw_model, input_ids: torch.Tensor, config) -> torch.Tensor | None:
    """Position ids for a training batch of a place-value model (abacus / coupled), else None.

    The place ids of the tokens plus a random offset (abacus: one per batch, as McLeish et al.; coupled:
    one per example, as Cho et al.), so every id up to model.max_place is trained and a model trained on
    short numbers has seen the ids of long ones. Drawn on the device from torch's generator: no sync,
    capturable, and restored exactly on resume."""
    scheme = getattr(raw_model, "place_positions", None)
    if not scheme:
        return None
    from mct.data.format import shifted_place_ids

    top = config.largest_place_offset
    rows = input_ids.shape[0] if scheme == "coupled" else 1
    lowest = 1 if raw_model.relative_places else 0  # relative codes: id 0 means "no place", '#' must keep one
    offset = torch.randint(lowest, top + 1, (rows, 1), device=input_ids.device)
    return shifted_place_ids(input_ids, raw_model._tokenizer(), offset, coupled=scheme == "coupled")


def scored_logits(model, input_ids: torch.Tensor, scored_from: int = 0, attention_mask: torch.Tensor | None = None,
                  position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Logits [B, T - 1 - scored_from, V] of positions scored_from .. T - 2, which predict tokens
    scored_from + 1 .. T - 1.

    The last position predicts nothing, so it is not fed (causal attention leaves the other logits as
    they were); no label comes before position `scored_from` + 1 (the data source's `scored_from`), so the
    last block works on the positions from `scored_from` on alone (`logits_to_keep`): for the default
    format that is the answer, under half the sequence."""
    def fed(tensor):
        return None if tensor is None else tensor[:, :-1]

    keep = input_ids.shape[1] - 1 - scored_from if scored_from else 0
    logits, _, _ = model(fed(input_ids), attention_mask=fed(attention_mask), position_ids=fed(position_ids),
                         logits_to_keep=keep)
    return logits


def summed_loss(model, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, scored_from: int = 0,
                marker_weight: float = 1.0) -> torch.Tensor:
    """Cross-entropy summed over the labelled tokens (a device scalar), from `scored_logits`; the answer
    marker and <eos> count `marker_weight` times (train.marker_loss_weight).

    labels are aligned with input_ids. Training batches are right-padded, so the causal mask alone keeps
    real tokens from seeing padding and no attention mask is needed (the fast fused attention path)."""
    logits = scored_logits(model, input_ids, scored_from, attention_mask, position_ids)
    targets = labels[:, 1 + scored_from:].reshape(-1)
    logits = logits.reshape(-1, logits.size(-1)).float()
    if marker_weight == 1.0:
        return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")
    losses = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="none")
    fixed = (targets == MARKER_IDS[0]) | (targets == MARKER_IDS[1])
    return (losses * torch.where(fixed, marker_weight, 1.0)).sum()


def labelled(labels: torch.Tensor) -> torch.Tensor:
    """Number of tokens that carry loss (device scalar)."""
    return (labels[:, 1:] != IGNORE_INDEX).sum()


def draw_batch(state: "TrainState", config, precision, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The stream's next (input_ids, labels). In a cooldown with `train.cooldown_pool` = k > 1, the stream's
    next k batches are drawn: the first half of the first one as it comes, and for the other half the rows
    of the rest with the highest loss.

    After the target the errors left are too rare for a random batch to hold often (a shape in 10,000
    turns up about once in 80 default batches); scoring k batches and training on the hardest puts them in
    most steps, and the plain half keeps the batch anchored to the stream (all hardest rows let a seed
    forget `300+700=`). The scoring is a no-grad forward of the plain model (not the compiled or DDP
    wrapper: no recompilation, no gradient hooks); every rank draws the same global batch, so every rank
    picks the same rows. It costs about (k - 1) / 3 of a step more per cooldown step."""
    ids, labels = state.data.next_batch()
    pool = config.train.cooldown_pool
    if pool <= 1 or state.cooldown_from is None:
        return ids, labels
    plain = ids.shape[0] // 2
    rest = [state.data.next_batch() for _ in range(pool - 1)]
    candidates = torch.cat([ids[plain:]] + [r[0] for r in rest])
    candidate_labels = torch.cat([labels[plain:]] + [r[1] for r in rest])
    scored_from = state.data.scored_from
    with torch.no_grad(), precision.autocast(device):
        logits = scored_logits(state.raw_model, candidates, scored_from,
                               position_ids=training_positions(state.raw_model, candidates, config))
    losses = F.cross_entropy(logits.float().transpose(1, 2), candidate_labels[:, 1 + scored_from:],
                             ignore_index=IGNORE_INDEX, reduction="none").sum(dim=1)
    hardest = losses.topk(ids.shape[0] - plain).indices
    return torch.cat([ids[:plain], candidates[hardest]]), torch.cat([labels[:plain], candidate_labels[hardest]])


@dataclass
class StepTotals:
    """Device-side sums between two log points: loss, labelled tokens, real tokens (no host sync)."""

    loss: torch.Tensor
    labels: torch.Tensor
    tokens: torch.Tensor
    steps: int = 0

    @classmethod
    def zeros(cls, device) -> "StepTotals":
        return cls(torch.zeros((), device=device, dtype=torch.float64), torch.zeros((), device=device, dtype=torch.long),
                   torch.zeros((), device=device, dtype=torch.long))

    def add(self, loss: torch.Tensor, labels: torch.Tensor, tokens: torch.Tensor) -> None:
        self.loss += loss.detach()
        self.labels += labels
        self.tokens += tokens
        self.steps += 1

    def read(self) -> tuple[float, int]:
        """(mean loss per labelled token, real tokens): the one synchronisation, at log points."""
        labels = max(int(self.labels), 1)
        return float(self.loss) / labels, int(self.tokens)


@dataclass
class TrainState:
    """Everything that changes during training and is saved for an exact resume."""

    model: torch.nn.Module  # what is called (maybe compiled / DDP-wrapped)
    raw_model: torch.nn.Module  # the plain CompactTransformer (saved, evaluated)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    data: object  # GeneratedBatches | PoolBatches
    step: int = 0
    best_val_exact_match: float | None = None
    best_val_loss: float = float("inf")
    cooldown_from: int | None = None  # the step the target was reached, when a cooldown follows
    extra: dict = field(default_factory=dict)


def train_step(state: TrainState, config, precision, device: torch.device, dist_info: Dist,
               pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimizer step over `grad_accum_steps` micro-batches of the global batch.

    Every rank draws the same global batch and trains on its own rows; the loss is summed over the
    global batch's labelled tokens and divided by their count, so N processes compute exactly the
    gradient one process would. Returns device scalars (summed loss, labelled tokens, real tokens) of
    this rank; nothing here waits for the device."""
    model, accum = state.model, config.train.grad_accum_steps
    set_learning_rate(state.optimizer, learning_rate(state.step, config, state.cooldown_from))
    micro = [draw_batch(state, config, precision, device) for _ in range(accum)]
    global_labels = sum(labelled(labels) for _, labels in micro)  # every rank sees the global batch
    loss_total = torch.zeros((), device=device)
    tokens = torch.zeros((), device=device, dtype=torch.long)
    for i, (ids, labels) in enumerate(micro):
        ids, labels = ids[dist_info.rank::dist_info.world_size], labels[dist_info.rank::dist_info.world_size]
        last = i == accum - 1
        sync = contextlib.nullcontext() if (last or not dist_info.enabled) else model.no_sync()
        with sync:
            positions = training_positions(state.raw_model, ids, config)
            with precision.autocast(device):
                loss_sum = summed_loss(model, ids, labels, position_ids=positions, scored_from=state.data.scored_from,
                                       marker_weight=config.train.marker_loss_weight)
            # DDP averages gradients over ranks; scaling by world size turns that into a global sum
            state.scaler.scale(loss_sum * dist_info.world_size / global_labels.clamp(min=1)).backward()
        loss_total += loss_sum.detach().float()
        tokens += (ids != pad_id).sum()
    if config.train.grad_clip > 0:
        state.scaler.unscale_(state.optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip, foreach=True)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    loss_total = all_reduce_sum(loss_total, dist_info)
    return loss_total, global_labels, tokens


class GraphedStep:
    """The whole training step (forward, backward, clipping, AdamW) captured in one CUDA graph.

    The first `warmup` steps run eagerly on a side stream (as CUDA graph capture requires) and are real
    training steps; after that each step copies the batch into static buffers, sets the learning-rate
    tensor and replays the graph. Needs: CUDA, one process, grad_accum_steps 1, no GradScaler (fp16),
    an optimizer built with `capturable=True`."""

    def __init__(self, state: TrainState, config, precision, device: torch.device, pad_id: int, warmup: int = 3):
        self.state, self.config, self.precision, self.device, self.pad_id = state, config, precision, device, pad_id
        self.warmup = warmup
        self.graph = None
        self.failed: str | None = None  # why capture failed (the run then goes on eagerly)
        self.static_ids: torch.Tensor | None = None  # the step's inputs, copied in before each step
        self.static_labels: torch.Tensor | None = None

    def _body(self, ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        state = self.state
        count = labelled(labels)
        dtype = self.precision.dtype
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None,
                            cache_enabled=False):
            loss_sum = summed_loss(state.model, ids, labels, scored_from=state.data.scored_from,
                                   position_ids=training_positions(state.raw_model, ids, self.config),
                                   marker_weight=self.config.train.marker_loss_weight)
        (loss_sum / count.clamp(min=1)).backward()
        if self.config.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(state.model.parameters(), self.config.train.grad_clip, foreach=True)
        state.optimizer.step()
        return loss_sum.detach().float(), count

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        state = self.state
        set_learning_rate(state.optimizer, learning_rate(state.step, self.config, state.cooldown_from))
        ids, labels = draw_batch(state, self.config, self.precision, self.device)
        tokens = (ids != self.pad_id).sum()
        if self.failed is not None:
            return self._eager(ids, labels, tokens, side_stream=False)
        if self.static_ids is None:
            # One pair of input buffers from the first step on: the warm-up steps, the capture and every
            # replay see the same tensors, so torch.compile (which guards on strides) compiles in the warm-up
            # and nothing recompiles in the capture, whatever the layout of the batches drawn.
            self.static_ids = torch.empty_like(ids, memory_format=torch.contiguous_format)
            self.static_labels = torch.empty_like(labels, memory_format=torch.contiguous_format)
        self.static_ids.copy_(ids, non_blocking=True)
        self.static_labels.copy_(labels, non_blocking=True)
        if self.graph is None:
            if self.warmup > 0:
                return self._eager(self.static_ids, self.static_labels, tokens, side_stream=True)
            try:
                self._capture()
            except Exception as exc:  # noqa: BLE001 - a kernel that cannot be captured: train eagerly instead
                self.failed = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"  # CUDA's hints dropped
                self.graph = None
                state.optimizer.zero_grad(set_to_none=True)
                return self._eager(ids, labels, tokens, side_stream=False)
        self.graph.replay()
        state.step += 1
        return self.static_loss.clone(), self.static_count.clone(), tokens

    def _eager(self, ids, labels, tokens, side_stream: bool):
        """One step without a graph; the warm-up steps before capture run on a side stream, as capture needs."""
        self.warmup -= 1
        stream = torch.cuda.Stream() if side_stream else torch.cuda.current_stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self.state.optimizer.zero_grad(set_to_none=True)
            loss, count = self._body(ids, labels)
        torch.cuda.current_stream().wait_stream(stream)
        self.state.step += 1
        return loss, count, tokens

    def _capture(self) -> None:
        self.state.optimizer.zero_grad(set_to_none=True)
        # torch.compile recompiling inside the capture would void it ("operation failed due to a previous
        # error during capture"); fail with the compiler's own reason instead
        with torch._dynamo.config.patch(error_on_recompile=True):
            self.graph, (self.static_loss, self.static_count) = capture_graph(
                lambda: self._body(self.static_ids, self.static_labels))


def capture_graph(fn):
    """(graph, outputs): `fn()` recorded into a CUDA graph (not run); `graph.replay()` runs it again,
    writing its results into the same `outputs` tensors."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = fn()
    return graph, outputs
