"""Training: one function, `train(config, run_dir, ...)`, for one CPU, one GPU, or many under torchrun.

The loop is nanoGPT's: AdamW with decay on matrices only, linear warmup then cosine decay to a floor,
gradient accumulation and clipping, autocast (bf16, or fp16 with a GradScaler) on GPUs. Around it: a
run folder that is never overwritten without `force`, `last.pt` rewritten atomically so a killed run
resumes with the same loss sequence, `best.pt` by validation exact-match, early stop at a target, and
a final greedy evaluation on a held-out test set.

Under torchrun every rank builds the same global batch (the data source is deterministic) and trains
on its own shard of it; the loss is a sum over the global batch's answer tokens divided by their global
count, so N processes compute exactly the gradient one process would on the whole batch.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from mct.checkpoint import load_checkpoint, save_checkpoint
from mct.config import Config, save_config_toml, validate_config
from mct.data.dataset import ProblemStream, collate_fn, encode_example, read_records
from mct.data.format import DataFormat
from mct.data.generate import sample_heldout
from mct.device import choose_precision, resolve_device, seed_everything
from mct.errors import MctError
from mct.evaluate import evaluate_records
from mct.fileio import atomic_write_text
from mct.model import create_model
from mct.tokenizer import Tokenizer

RUN_FILES = ("last.pt", "best.pt", "config.toml", "metrics.jsonl", "eval.json")
# Changing these between a run and its resume would make the resumed run a different experiment.
RESUME_LOCKED_SECTIONS = ("model", "data")

Progress = Callable[[dict], None]


@dataclass
class TrainResult:
    """What `mct train` reports; `to_dict()` is the `--json` summary."""

    run_dir: str
    checkpoint: str
    best_checkpoint: str | None
    steps: int
    wall_s: float
    stopped: str  # "target_reached" | "max_steps" | "interrupted"
    best_val_exact_match: float | None
    test: dict | None
    num_truncated: int
    parameters: int
    device: str
    precision: str
    world_size: int
    tokens_per_s: float
    resumed_from_step: int | None = None
    files: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# distributed


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device_spec: str) -> tuple[Dist, torch.device]:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on GPUs, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Dist(), resolve_device(device_spec)
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world_size, local_rank), device


def _all_reduce_sum(values: list[float], dist_info: Dist, device: torch.device) -> list[float]:
    if not dist_info.enabled:
        return values
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


# --------------------------------------------------------------------------------------------------
# optimisation


def build_optimizer(model: torch.nn.Module, config: Config) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (embeddings, projections) only, not on biases and norms."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.train.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.train.lr, betas=(config.train.beta1, config.train.beta2))


def learning_rate(step: int, config: Config) -> float:
    """Linear warmup to `lr`, then cosine decay to `lr * min_lr_ratio` at `max_steps` (or constant)."""
    train = config.train
    if train.warmup_steps and step < train.warmup_steps:
        return train.lr * (step + 1) / train.warmup_steps
    if train.lr_schedule == "constant":
        return train.lr
    span = max(1, train.max_steps - train.warmup_steps)
    progress = min(1.0, (step - train.warmup_steps) / span)
    floor = train.lr * train.min_lr_ratio
    return floor + 0.5 * (train.lr - floor) * (1 + math.cos(math.pi * progress))


def summed_loss(model, batch: dict) -> tuple[torch.Tensor, int]:
    """Cross-entropy summed over the labelled tokens of `batch`, and how many there were.

    logits [B, T, V] at position t predict labels[t + 1] (labels are aligned with input_ids).
    """
    logits, _, _ = model(batch["input_ids"], attention_mask=batch["attention_mask"])
    targets = batch["labels"][:, 1:]
    loss = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
        ignore_index=-100, reduction="sum",
    )
    return loss, int((targets != -100).sum())


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


# --------------------------------------------------------------------------------------------------
# data


class TrainingData:
    """The global batches of every step: from a JSONL file (shuffled per epoch) or generated on the fly.

    Deterministic from the seed, with `state_dict()` so a resumed run sees the same batches. Problems
    in `exclude` (operand pairs of the validation and test sets) are never trained on.
    """

    def __init__(self, config: Config, tokenizer: Tokenizer, data_format: DataFormat, exclude: set, seed: int):
        self.config = config
        self.tokenizer = tokenizer
        self.stream = None
        self.examples = None
        if config.data.train_path is not None:
            records = read_records(config.data.train_path, tokenizer, require_target=True)
            kept = [r for r in records if data_format.operands_from_prompt(r.prompt) not in exclude]
            if not kept:
                raise MctError(f"every problem of {config.data.train_path} is in the validation or test set")
            self.num_heldout_dropped = len(records) - len(kept)
            self.examples = [encode_example(r, tokenizer) for r in kept]
            self.generator = torch.Generator().manual_seed(seed)
            self.order: list[int] = []
            self.position = 0
            self.epoch = 0
        else:
            self.stream = ProblemStream(config.data, tokenizer, exclude=exclude, seed=seed)

    def _shuffle(self, epoch: int) -> None:
        self.generator.manual_seed(self.config.train.seed * 1000003 + epoch)
        self.order = torch.randperm(len(self.examples), generator=self.generator).tolist()

    def next_batch(self, size: int) -> list:
        if self.stream is not None:
            return self.stream.next_batch(size)
        batch = []
        while len(batch) < size:
            if self.position >= len(self.order):
                self._shuffle(self.epoch)
                self.epoch, self.position = self.epoch + 1, 0
            batch.append(self.examples[self.order[self.position]])
            self.position += 1
        return batch

    def state_dict(self) -> dict:
        if self.stream is not None:
            return {"kind": "stream", "stream": self.stream.state_dict()}
        return {"kind": "file", "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        if state["kind"] == "stream":
            self.stream.load_state_dict(state["stream"])
            return
        self.epoch, self.position = state["epoch"], state["position"]
        if self.epoch > 0:  # the order in use is that of the latest shuffle
            self._shuffle(self.epoch - 1)


def heldout_records(config: Config, data_format: DataFormat) -> tuple[list, list]:
    """Validation and test records: from the configured files, or sampled (disjoint) from the task."""
    if config.data.val_path is not None and config.data.test_path is not None:
        return read_records(config.data.val_path), read_records(config.data.test_path)
    val, test = sample_heldout(config.data, config.data.n_val, config.data.n_test, config.data.seed)
    if config.data.val_path is not None:
        val = read_records(config.data.val_path)
    if config.data.test_path is not None:
        test = read_records(config.data.test_path)
    return val, test


def _records_to_jsonl(records) -> str:
    lines = []
    for r in records:
        row = {"prompt": r.prompt, "answer": r.answer}
        if r.target is not None:
            row["target"] = r.target
        if r.steps:
            row["steps"] = r.steps
        if r.meta:
            row["meta"] = r.meta
        lines.append(json.dumps(row))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# run folder


def prepare_run_dir(run_dir: Path, resume: bool, force: bool) -> None:
    """Refuse to overwrite a run without `force`; with `force`, clear only mct's own files."""
    if resume:
        if not (run_dir / "last.pt").is_file():
            raise MctError(f"--resume {run_dir}: no last.pt there to resume from")
        return
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    if existing and not force:
        raise MctError(
            f"{run_dir} already holds a run ({', '.join(existing)}); use --resume {run_dir} to continue it, "
            "--force to overwrite it, or --out for a new folder"
        )
    for name in existing + ["curves.png"]:
        (run_dir / name).unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)


def config_differences(saved: Config, current: Config) -> list[str]:
    """`section.key: saved -> current` for every model/data field that differs."""
    diffs = []
    for section in RESUME_LOCKED_SECTIONS:
        old, new = getattr(saved, section).model_dump(), getattr(current, section).model_dump()
        diffs += [f"{section}.{k}: {old[k]!r} -> {new[k]!r}" for k in old if old[k] != new[k]]
    return diffs


def read_metrics(path: Path, up_to_step: int | None = None) -> list[dict]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if up_to_step is None or r["step"] <= up_to_step]


def plot_curves(metrics: list[dict], path: Path) -> None:
    """Training loss, validation loss and validation exact-match against steps, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mct.fileio import atomic_path

    train_rows = [r for r in metrics if "loss" in r]
    val_rows = [r for r in metrics if "val_exact_match" in r]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    if train_rows:
        ax_loss.plot([r["step"] for r in train_rows], [r["loss"] for r in train_rows], label="train loss", lw=1)
    if val_rows:
        ax_loss.plot([r["step"] for r in val_rows], [r["val_loss"] for r in val_rows], "o-", label="val loss", ms=3)
        ax_acc.plot([r["step"] for r in val_rows], [r["val_exact_match"] for r in val_rows], "o-", ms=3)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss per labelled token")
    ax_loss.legend()
    ax_acc.set_xlabel("step")
    ax_acc.set_ylabel("validation exact match")
    ax_acc.set_ylim(-0.02, 1.02)
    ax_acc.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------
# evaluation during training


@torch.no_grad()
def validation_loss(model, examples: list, config: Config, device: torch.device, precision) -> float:
    """Mean loss per labelled token over `examples` (teacher forcing)."""
    total, count = 0.0, 0
    model.eval()
    for start in range(0, len(examples), 512):
        batch = collate_fn(examples[start:start + 512], pad_id=0, step_masking_mode=config.data.step_masking_mode,
                           max_seq_len=config.data.max_seq_len)
        if batch["input_ids"].numel() == 0:
            continue
        with precision.autocast(device):
            loss, n = summed_loss(model, _to_device(batch, device))
        total, count = total + loss.item(), count + n
    return total / max(count, 1)


def validation_exact_match(model, tokenizer, data_format: DataFormat, records, device: torch.device) -> float:
    """Greedy exact match on `records`, scored exactly as `mct eval` scores the test set."""
    return evaluate_records(model, tokenizer, data_format, records, batch_size=512, device=device).exact_match


# --------------------------------------------------------------------------------------------------
# the run


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuplify(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(value):
    return tuple(_tuplify(v) for v in value) if isinstance(value, (list, tuple)) else value


@contextmanager
def _stop_on_interrupt():
    """The first Ctrl-C asks the loop to stop after the current step (so last.pt is consistent)."""
    import signal
    import threading

    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _num_threads(n: int | None):
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train(config: Config, run_dir: str | Path, resume: bool = False, force: bool = False,
          progress: Progress | None = None) -> TrainResult:
    """Train `config` into `run_dir` and evaluate the best checkpoint on the test set.

    `progress(event)` receives dicts: {"event": "start", ...}, {"event": "step", "step", "loss", ...},
    {"event": "eval", ...}, {"event": "test", ...}; only rank 0 calls it. Raises MctError for a run
    folder that already holds a run (without force), a resume that does not match, or a diverged loss.
    """
    run_dir = Path(run_dir)
    dist_info, device = setup_distributed(config.train.device)
    emit = progress if (progress is not None and dist_info.is_main) else (lambda event: None)
    with _num_threads(config.train.num_threads):
        return _train(config, run_dir, resume, force, emit, dist_info, device)


def _train(config: Config, run_dir: Path, resume: bool, force: bool, emit: Progress,
           dist_info: Dist, device: torch.device) -> TrainResult:
    started = time.perf_counter()
    if dist_info.is_main:
        prepare_run_dir(run_dir, resume, force)
    precision = choose_precision(device, config.train.precision)
    if config.train.batch_size % (dist_info.world_size * config.train.grad_accum_steps):
        raise MctError(
            f"batch_size {config.train.batch_size} must be divisible by processes x grad_accum_steps "
            f"({dist_info.world_size} x {config.train.grad_accum_steps})"
        )

    tokenizer = Tokenizer()
    config = config.model_copy(deep=True)
    config.model.vocab_size = tokenizer.vocab_size
    data_format = DataFormat.from_config(config.data)
    train_state = None
    if resume:
        saved = load_checkpoint(run_dir / "last.pt", device="cpu", with_train_state=True)
        diffs = config_differences(saved.config, config)
        if diffs:
            raise MctError(f"cannot resume {run_dir} with a different model or data config: {'; '.join(diffs)}")
        train_state = saved.train_state

    seed_everything(config.train.seed)
    model = create_model(config.model).to(device)
    if train_state is not None:
        model.load_state_dict(saved.model.state_dict())
    raw_model = model
    val_records, test_records = heldout_records(config, data_format)
    if not val_records or not test_records:
        raise MctError("the validation and test sets must not be empty")
    exclude = {data_format.operands_from_prompt(r.prompt) for r in val_records + test_records}
    data = TrainingData(config, tokenizer, data_format, exclude, seed=config.train.seed)
    val_examples = [encode_example(r, tokenizer) for r in val_records[: config.train.eval_samples]
                    if r.target is not None]
    val_subset = val_records[: config.train.eval_samples]

    optimizer = build_optimizer(raw_model, config)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.use_scaler)
    start_step, best_em, best_loss = 0, None, float("inf")
    if train_state is not None:
        optimizer.load_state_dict(train_state["optimizer"])
        if precision.use_scaler and train_state.get("scaler"):
            scaler.load_state_dict(train_state["scaler"])
        data.load_state_dict(train_state["data"])
        _set_rng_state(train_state["rng"])
        start_step = int(train_state["step"])
        best_em = train_state.get("best_val_exact_match")
        best_loss = train_state.get("best_val_loss", float("inf"))
        started -= float(train_state.get("wall_s", 0.0))
    if dist_info.is_main:
        kept = read_metrics(run_dir / "metrics.jsonl", up_to_step=start_step if resume else -1)
        atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in kept))
        save_config_toml(config, run_dir / "config.toml")
        for name, records in (("val", val_records), ("test", test_records)):
            atomic_write_text(run_dir / "data" / f"{name}.jsonl", _records_to_jsonl(records))

    if config.train.compile:
        model = torch.compile(model)
    if dist_info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def checkpoint_state(step: int) -> dict:
        return {
            "step": step, "optimizer": optimizer.state_dict(), "data": data.state_dict(), "rng": _rng_state(),
            "scaler": scaler.state_dict() if precision.use_scaler else {},
            "best_val_exact_match": best_em, "best_val_loss": best_loss, "wall_s": time.perf_counter() - started,
        }

    def save(name: str, step: int, with_state: bool) -> None:
        if dist_info.is_main:
            save_checkpoint(run_dir / name, raw_model, config, tokenizer, data_format.to_dict(),
                            checkpoint_state(step) if with_state else None, step=step)

    emit({"event": "start", "run_dir": str(run_dir), "device": str(device), "precision": precision.name,
          "parameters": raw_model.num_parameters(), "start_step": start_step, "max_steps": config.train.max_steps,
          "world_size": dist_info.world_size})
    metrics_file = (run_dir / "metrics.jsonl").open("a") if dist_info.is_main else None
    accum = config.train.grad_accum_steps
    shard = config.train.batch_size // accum
    step, stopped, num_truncated = start_step, "max_steps", 0
    # Throughput counts training time only (evaluation and checkpointing excluded).
    tokens_seen, train_seconds, window_tokens, window_start = 0, 0.0, 0, time.perf_counter()
    with _stop_on_interrupt() as interrupt:
        try:
            model.train()
            while step < config.train.max_steps:
                # Under torchrun all ranks must agree to stop at the same step.
                if _all_reduce_sum([float(interrupt["stop"])], dist_info, device)[0] > 0:
                    stopped = "interrupted"
                    break
                lr = learning_rate(step, config)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                micro_batches = []
                for _ in range(accum):
                    examples = data.next_batch(shard)
                    micro_batches.append(collate_fn(examples[dist_info.rank::dist_info.world_size], pad_id=tokenizer.pad_id,
                                                    step_masking_mode=config.data.step_masking_mode,
                                                    max_seq_len=config.data.max_seq_len))
                # Every rank sees the whole global batch's label count, so no communication is needed for it.
                global_labels = sum(int((b["labels"][:, 1:] != -100).sum()) for b in micro_batches)
                global_labels = int(_all_reduce_sum([float(global_labels)], dist_info, device)[0])
                step_loss = 0.0
                for i, batch in enumerate(micro_batches):
                    num_truncated += batch["num_truncated"]
                    batch = _to_device(batch, device)
                    sync = (i == accum - 1) or not dist_info.enabled
                    context = model.no_sync() if (dist_info.enabled and not sync) else contextlib.nullcontext()
                    with context:
                        with precision.autocast(device):
                            loss_sum, _ = summed_loss(model, batch)
                        # DDP averages gradients over ranks; scaling by world size turns that into a global sum.
                        loss = loss_sum * dist_info.world_size / max(global_labels, 1)
                        scaler.scale(loss).backward()
                    step_loss += loss_sum.item()
                    window_tokens += int(batch["attention_mask"].sum())
                step_loss = _all_reduce_sum([step_loss], dist_info, device)[0] / max(global_labels, 1)
                if not math.isfinite(step_loss):
                    raise MctError(
                        f"the loss became {step_loss} at step {step + 1}; training stopped and {run_dir / 'last.pt'} "
                        "keeps the last good state (try a lower --lr, --precision fp32 or a smaller grad_clip)"
                    )
                if config.train.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                step += 1

                if step % config.train.log_every == 0 or step == config.train.max_steps:
                    elapsed = time.perf_counter() - window_start
                    tokens_per_s = window_tokens * dist_info.world_size / max(elapsed, 1e-9)
                    tokens_seen += window_tokens
                    train_seconds += elapsed
                    row = {"step": step, "loss": round(step_loss, 6), "lr": lr, "tokens_per_s": round(tokens_per_s, 1)}
                    if metrics_file:
                        metrics_file.write(json.dumps(row) + "\n")
                        metrics_file.flush()
                    emit({"event": "step", **row})
                    window_tokens, window_start = 0, time.perf_counter()

                if step % config.train.eval_every == 0 or step == config.train.max_steps:
                    train_seconds += time.perf_counter() - window_start
                    tokens_seen, window_tokens = tokens_seen + window_tokens, 0
                    eval_model = raw_model
                    val_loss = validation_loss(eval_model, val_examples, config, device, precision) if val_examples else float("nan")
                    val_em = validation_exact_match(eval_model, tokenizer, data_format, val_subset, device)
                    model.train()
                    row = {"step": step, "val_loss": round(val_loss, 6), "val_exact_match": val_em,
                           "elapsed_s": round(time.perf_counter() - started, 2)}
                    if metrics_file:
                        metrics_file.write(json.dumps(row) + "\n")
                        metrics_file.flush()
                    # Best = highest exact match; among equals, the lowest validation loss (a model that
                    # is right everywhere keeps getting surer, and the surer one generalises further).
                    if best_em is None or (val_em, -val_loss) > (best_em, -best_loss):
                        best_em, best_loss = val_em, val_loss
                        save("best.pt", step, with_state=False)
                    emit({"event": "eval", **row, "best_val_exact_match": best_em})
                    if config.train.target_accuracy is not None and val_em >= config.train.target_accuracy:
                        stopped = "target_reached"
                        break
                    window_start = time.perf_counter()  # evaluation time is not training throughput

                if step % config.train.save_every == 0:
                    save("last.pt", step, with_state=True)
        except KeyboardInterrupt:
            stopped = "interrupted"
        finally:
            if metrics_file:
                metrics_file.close()

    save("last.pt", step, with_state=True)
    result_files = {name: str(run_dir / name) for name in ("last.pt", "best.pt", "config.toml", "metrics.jsonl")}
    test_report = None
    if stopped != "interrupted" and dist_info.is_main:
        best_path = run_dir / "best.pt"
        final_model = load_checkpoint(best_path, device=device).model if best_path.is_file() else raw_model
        emit({"event": "test_start", "n": len(test_records)})
        report = evaluate_records(final_model, tokenizer, data_format, test_records, batch_size=512, device=device)
        test_report = report.to_dict()
        test_report.pop("errors", None)
        atomic_write_text(run_dir / "eval.json", json.dumps({"checkpoint": str(best_path), "split": "test",
                                                             **test_report}, indent=2) + "\n")
        plot_curves(read_metrics(run_dir / "metrics.jsonl"), run_dir / "curves.png")
        result_files.update(eval=str(run_dir / "eval.json"), curves=str(run_dir / "curves.png"))
        emit({"event": "test", "exact_match": test_report["exact_match"], "n": test_report["n"]})
    if dist_info.enabled:
        import torch.distributed as dist

        dist.barrier()
    wall = time.perf_counter() - started
    return TrainResult(
        run_dir=str(run_dir), checkpoint=str(run_dir / "last.pt"),
        best_checkpoint=str(run_dir / "best.pt") if (run_dir / "best.pt").is_file() else None,
        steps=step, wall_s=round(wall, 2), stopped=stopped, best_val_exact_match=best_em, test=test_report,
        num_truncated=num_truncated, parameters=raw_model.num_parameters(), device=str(device),
        precision=precision.name, world_size=dist_info.world_size,
        tokens_per_s=round(tokens_seen * dist_info.world_size / max(train_seconds, 1e-9), 1),
        resumed_from_step=start_step if resume else None, files=result_files,
    )


def load_run_config(run_dir: Path) -> Config:
    """The resolved config a run folder was trained with (for --resume)."""
    from mct.config import read_toml

    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        raise MctError(f"--resume {run_dir}: there is no config.toml in it; is it an mct run folder?")
    return validate_config(read_toml(path), source=str(path))
