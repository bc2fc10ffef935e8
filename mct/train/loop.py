"""`train(config, run_dir)`: build the run, loop over `train_step`, evaluate and checkpoint, finish.

For one CPU, one GPU, or many processes under torchrun (rank 0 alone writes and reports). A killed or
interrupted run resumes from `last.pt` with the same batches and the same loss sequence.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from mct.checkpoint import load_checkpoint, read_checkpoint_file
from mct.config import Config, validate_config
from mct.data.format import DataFormat
from mct.data.generate import hard_split, make_record
from mct.data.stream import first_scored
from mct.device import choose_precision, seed_everything
from mct.errors import MctError
from mct.evaluate import evaluate_records
from mct.fileio import folder_lock
from mct.model import create_model
from mct.train.data import heldout_records, training_batches, validation_tensors
from mct.train.distributed import Dist, barrier, setup_distributed
from mct.train.run_folder import RunFolder, config_differences
from mct.train.step import (GraphedStep, StepTotals, TrainState, build_optimizer, cooldown_length, learning_rate,
                            scored_logits, train_step)

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
    train_s: float = 0.0  # time in training steps (evaluation and checkpoints excluded)
    cuda_graphs: bool = False
    cuda_graphs_fallback: str | None = None  # why the step's capture failed (the run then trained eagerly)
    resumed_from_step: int | None = None
    files: dict = field(default_factory=dict)
    unique_parameters: int = 0  # tied and shared tensors counted once (AdderBoard's count)
    target_step: int | None = None  # where the target was reached, when a cooldown followed it

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# opt-in process settings (the CLI uses them; a notebook calling `train` keeps its own)


@contextlib.contextmanager
def stop_on_interrupt():
    """Ctrl-C asks the run to stop after the current step (so last.pt is consistent); yields the
    `stop()` predicate to pass to `train`. Every further Ctrl-C does the same: a step is short."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield lambda: flag["stop"]
        return

    def handler(signum, frame):
        flag["stop"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: flag["stop"]
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run with `n` CPU threads (None = torch's choice), restoring the previous count."""
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# --------------------------------------------------------------------------------------------------
# evaluation during training


def _validation_chunks(model, tensors, precision, device: torch.device, batch_size: int):
    """Per chunk of the validation tensors: (summed loss, labelled tokens, exact problems, problems), device
    scalars but the last (teacher-forced, logits from the first scored position on, as in training)."""
    ids_all, labels_all, scored_all = tensors
    # logits only from the first position that predicts a labelled or scored token (as in training)
    first = first_scored(torch.where(scored_all, 0, labels_all))
    for start in range(0, ids_all.shape[0], batch_size):
        ids = ids_all[start:start + batch_size].to(device)
        labels = labels_all[start:start + batch_size].to(device)
        scored = scored_all[start:start + batch_size].to(device)
        with precision.autocast(device):
            logits = scored_logits(model, ids, first)
        predictions = logits.argmax(-1)
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), labels[:, 1 + first:].reshape(-1),
            ignore_index=-100, reduction="sum").double()
        wrong = (predictions != ids[:, 1 + first:]) & scored[:, 1 + first:]
        yield loss, (labels[:, 1:] != -100).sum(), (~wrong.any(1)).sum(), ids.shape[0]


@torch.no_grad()
def validate(model, tensors, precision, device: torch.device, batch_size: int = 1024) -> tuple[float, float]:
    """(mean loss per labelled token, teacher-forced exact match) over the validation tensors.

    A problem counts as exact when the model's argmax is the reference at every scored token, given the
    reference before it. That is exactly when greedy decoding writes the reference text, so this equals
    the decoded exact match whenever the model writes the reference format, and is never above it (a
    different text with the same answer counts only when decoded): a conservative stopping signal for
    one forward pass instead of a decoding loop."""
    if tensors is None:
        return float("nan"), 0.0
    total = torch.zeros((), device=device, dtype=torch.float64)
    count = torch.zeros((), device=device, dtype=torch.long)
    exact = torch.zeros((), device=device, dtype=torch.long)
    model.eval()
    for loss, labelled_tokens, exact_problems, _ in _validation_chunks(model, tensors, precision, device, batch_size):
        total += loss
        count += labelled_tokens
        exact += exact_problems
    return float(total) / max(int(count), 1), int(exact) / tensors[0].shape[0]


def allowed_errors(n: int, target: float) -> int:
    """The most wrong problems of `n` with which the exact match (n - wrong) / n is still >= target (-1: none)."""
    wrong = int(n * (1 - target))
    while wrong >= 0 and (n - wrong) / n < target:
        wrong -= 1
    while wrong < n and (n - wrong - 1) / n >= target:
        wrong += 1
    return wrong


@torch.no_grad()
def at_target(model, tensors, precision, device: torch.device, target: float,
              batch_size: int = 256) -> tuple[float, float] | None:
    """`validate`'s (loss, exact match) when that exact match is >= target, else None; scores chunk by
    chunk and gives up at the first error too many, so a model far from the target costs one chunk."""
    if tensors is None:
        return None
    budget = allowed_errors(tensors[0].shape[0], target)
    total, count, exact = 0.0, 0, 0
    model.eval()
    for loss, labelled_tokens, exact_problems, problems in _validation_chunks(model, tensors, precision, device,
                                                                              batch_size):
        budget -= problems - int(exact_problems)
        if budget < 0:
            return None
        total, count, exact = total + float(loss), count + int(labelled_tokens), exact + int(exact_problems)
    return total / max(count, 1), exact / tensors[0].shape[0]


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


# --------------------------------------------------------------------------------------------------
# the run


class _Run:
    """One training run, in named parts: `build`, `loop` (steps, logging, `evaluate_and_checkpoint`),
    `finish`. Holds what they share, so no part reaches into another's locals."""

    def __init__(self, config: Config, run_dir: Path, resume: bool, force: bool, emit: Progress,
                 dist_info: Dist, device: torch.device, stop: Callable[[], bool]):
        self.started = time.perf_counter()
        self.dist, self.device, self.emit, self.stop, self.resume = dist_info, device, emit, stop, resume
        self.folder = RunFolder(run_dir, writer=dist_info.is_main)
        self.force = force
        self.stopped: str | None = None  # how the run ended, once it has
        self.precision = choose_precision(device, config.train.precision)
        if config.train.batch_size % (dist_info.world_size * config.train.grad_accum_steps):
            raise MctError(
                f"train.batch_size {config.train.batch_size} must be divisible by processes x "
                f"train.grad_accum_steps ({dist_info.world_size} x {config.train.grad_accum_steps})")
        self.format = DataFormat.from_config(config.data)
        self.tokenizer = self.format.tokenizer()
        config = config.model_copy(deep=True)
        config.model.vocab_size = self.tokenizer.vocab_size
        self.config = config

    # --- build -----------------------------------------------------------------------------------
    def build(self) -> None:
        config, device = self.config, self.device
        self.folder.prepare(self.resume, self.force)
        saved = None
        if self.resume:
            saved = load_checkpoint(self.folder / "last.pt", device="cpu", with_train_state=True)
            diffs = config_differences(saved.config, config)
            if diffs:
                raise MctError(f"cannot resume {self.folder.path} with a different model or data config: "
                               f"{'; '.join(diffs)}")
            if not saved.train_state:
                raise MctError(f"{self.folder / 'last.pt'} holds no training state (is it a copy of best.pt?); "
                               "it cannot be resumed: start a new run")
            self._check_resumable(saved.train_state)
        seed_everything(config.train.seed)
        model = create_model(config.model).to(device)
        if saved is not None:
            model.load_state_dict(saved.model.state_dict())
        self.val_records, self.test_records = heldout_records(config, self.format)
        if not self.val_records or not self.test_records:
            raise MctError("the validation and test sets must not be empty")
        self.hard_records = [make_record(self.format, a, b) for a, b in hard_split(config.data)]
        exclude = {self.format.operands_from_prompt(r.prompt)
                   for r in self.val_records + self.test_records + self.hard_records}
        data, self.num_truncated = training_batches(config, self.tokenizer, self.format, exclude, device)
        self.val_subset = self.val_records[: config.train.eval_samples]
        self.val_tensors = validation_tensors(self.val_subset, self.tokenizer, config)

        self.use_graphs = self._graphs_wanted()
        optimizer = build_optimizer(model, config, capturable=self.use_graphs)
        scaler = torch.amp.GradScaler(device.type, enabled=self.precision.use_scaler)
        called = torch.compile(model) if config.train.compile else model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            called = DistributedDataParallel(called, device_ids=[device.index] if device.type == "cuda" else None)
        self.state = TrainState(called, model, optimizer, scaler, data)
        self.start_step = 0
        if saved is not None:
            ts = saved.train_state
            optimizer.load_state_dict(ts["optimizer"])
            if self.precision.use_scaler and ts.get("scaler"):
                scaler.load_state_dict(ts["scaler"])
            data.load_state_dict(ts["data"])
            _set_rng_state(ts["rng"])
            self.state.step = self.start_step = int(ts["step"])
            self.state.best_val_exact_match = ts.get("best_val_exact_match")
            self.state.best_val_loss = ts.get("best_val_loss", float("inf"))
            self.state.cooldown_from = ts.get("cooldown_from")
            self.started -= float(ts.get("wall_s", 0.0))
        self.folder.start(config, self.start_step if self.resume else None,
                          {"val": self.val_records, "test": self.test_records, "hard": self.hard_records})
        self.step_fn = (GraphedStep(self.state, config, self.precision, device, self.tokenizer.pad_id)
                        if self.use_graphs else None)

    def _check_resumable(self, train_state: dict) -> None:
        """A finished run is not resumed: resuming one took a step past its end (a cooldown already at a
        learning rate of 0) or, at max_steps, evaluated it again and rewrote eval.json."""
        step, max_steps = int(train_state["step"]), self.config.train.max_steps
        if train_state.get("stopped") == "target_reached":
            reached = train_state.get("cooldown_from") or step
            raise MctError(f"{self.folder.path} is finished: it reached its target accuracy at step {reached} and "
                           f"stopped at step {step}; nothing to resume. Evaluate it with `mct eval`, or start a "
                           "new run (another --out, or --force to replace this one)")
        if step > max_steps or run_finished(train_state, max_steps):
            where = "past" if step > max_steps else "at"
            raise MctError(f"{self.folder / 'last.pt'} is at step {step}, {where} train.max_steps = {max_steps}: "
                           f"give more steps to train on (--max-steps N, N > {step})")

    def _graphs_wanted(self) -> bool:
        """CUDA graphs: on by default on CUDA where they apply (one process, no accumulation, no fp16
        scaler), off elsewhere; `train.cuda_graphs = false` turns them off. A compiled model is captured
        too: torch.compile compiles during the warm-up steps, and the graph then replays its kernels, so
        --compile keeps the graph's launch savings instead of trading them for fused kernels."""
        wanted = self.config.train.cuda_graphs
        possible = (self.device.type == "cuda" and not self.dist.enabled and self.config.train.grad_accum_steps == 1
                    and not self.precision.use_scaler)
        if wanted is True and not possible:
            raise MctError("train.cuda_graphs needs a CUDA device, one process, train.grad_accum_steps = 1 and "
                           "precision bf16 or fp32")
        return possible and wanted in (True, "auto")

    # --- checkpoints -----------------------------------------------------------------------------
    def _train_state(self) -> dict:
        s = self.state
        return {"step": s.step, "optimizer": s.optimizer.state_dict(), "data": s.data.state_dict(),
                "rng": _rng_state(), "scaler": s.scaler.state_dict() if self.precision.use_scaler else {},
                "best_val_exact_match": s.best_val_exact_match, "best_val_loss": s.best_val_loss,
                "cooldown_from": s.cooldown_from, "wall_s": time.perf_counter() - self.started,
                "stopped": self.stopped}

    def save(self, name: str, with_state: bool) -> None:
        self.folder.save(name, self.state.raw_model, self.config, self.tokenizer, self.format,
                         self._train_state() if with_state else None, self.state.step)

    def evaluate_and_checkpoint(self, scored: tuple[float, float] | None = None) -> bool:
        """Validation loss and exact match (`scored` when a target check has just computed them); best.pt
        when they improve. True when the target is reached."""
        s = self.state
        val_loss, val_em = scored or validate(s.raw_model, self.val_tensors, self.precision, self.device)
        s.model.train()
        row = {"step": s.step, "val_loss": round(val_loss, 6), "val_exact_match": val_em,
               "elapsed_s": round(time.perf_counter() - self.started, 2)}
        self.folder.log(row)
        # Best = highest exact match; among equals, the lowest validation loss (a model that is right
        # everywhere keeps getting surer, and the surer one generalises further).
        if s.best_val_exact_match is None or (val_em, -val_loss) > (s.best_val_exact_match, -s.best_val_loss):
            s.best_val_exact_match, s.best_val_loss = val_em, val_loss
            self.save("best.pt", with_state=False)
        self.emit({"event": "eval", **row, "best_val_exact_match": s.best_val_exact_match})
        target = self.config.train.target_accuracy
        # the target must hold at `target_patience` evaluations in a row: one lucky sample does not stop
        self.at_target = self.at_target + 1 if (target is not None and val_em >= target) else 0
        return self.at_target >= self.config.train.target_patience

    # --- loop ------------------------------------------------------------------------------------
    def _log(self, totals: StepTotals, lr_step: int, window: float) -> None:
        loss, tokens = totals.read()
        if not math.isfinite(loss):
            last = self.folder / "last.pt"
            kept = f"{last} keeps the last good state" if last.is_file() else "no checkpoint was saved yet"
            raise MctError(
                f"the loss became {loss} by step {self.state.step}; training stopped and {kept}. Try a lower "
                "train.lr, train.precision = fp32 or a smaller train.grad_clip")
        self.tokens_seen += tokens
        row = {"step": self.state.step, "loss": round(loss, 6),
               "lr": learning_rate(lr_step, self.config, self.state.cooldown_from),
               "tokens_per_s": round(tokens * self.dist.world_size / max(window, 1e-9), 1)}
        self.folder.log(row)
        self.emit({"event": "step", **row})

    def loop(self) -> str:
        s, cfg = self.state, self.config.train
        self.emit({"event": "start", "run_dir": str(self.folder.path), "device": str(self.device),
                   "precision": self.precision.name, "parameters": s.raw_model.num_parameters(),
                   "start_step": self.start_step, "max_steps": cfg.max_steps, "world_size": self.dist.world_size,
                   "compile": cfg.compile})
        self.tokens_seen, self.train_seconds, self.at_target = 0, 0.0, 0
        totals = StepTotals.zeros(self.device)
        window_start = time.perf_counter()
        in_step = False
        try:
            s.model.train()
            while s.step < cfg.max_steps:
                if self._stop_requested():
                    return "interrupted"
                before = s.data.state_dict()
                in_step = True
                loss, labels, tokens = self.step_fn() if self.step_fn else train_step(
                    s, self.config, self.precision, self.device, self.dist, self.tokenizer.pad_id)
                in_step = False
                totals.add(loss, labels, tokens)
                # a step that writes a checkpoint checks the loss first, so NaN weights are never saved
                saves = s.step % cfg.save_every == 0 or bool(cfg.keep_every and s.step % cfg.keep_every == 0)
                log_now = s.step % cfg.log_every == 0 or s.step == cfg.max_steps or saves
                # the end of a cooldown is the end of the run, after one last evaluation
                cooled = s.cooldown_from is not None and s.step >= s.cooldown_from + cooldown_length(
                    s.cooldown_from, self.config)
                eval_now = s.step % cfg.eval_every == 0 or s.step == cfg.max_steps or cooled
                scored = None
                if not eval_now and self._check_due():
                    # a target check: cheap when it fails; one that passes is a full evaluation below
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)  # the steps' queued work is training time
                    paused = time.perf_counter()
                    scored = self._sample_at_target()
                    eval_now = scored is not None
                    window_start += time.perf_counter() - paused  # checking is not training time
                    if not eval_now:
                        self.at_target = 0
                if log_now or eval_now:
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    window = time.perf_counter() - window_start
                    self.train_seconds += window
                    self._log(totals, s.step - 1, window)
                    totals = StepTotals.zeros(self.device)
                if eval_now and self.evaluate_and_checkpoint(scored) and s.cooldown_from is None:
                    cooldown = cooldown_length(s.step, self.config)
                    if not cooldown:
                        return "target_reached"
                    s.cooldown_from = s.step
                    self.emit({"event": "cooldown", "step": s.step, "steps": cooldown,
                               "pool": self.config.train.cooldown_pool})
                if cooled:
                    return "target_reached"
                if cfg.keep_every and s.step % cfg.keep_every == 0:
                    self.save(f"checkpoints/step-{s.step:07d}.pt", with_state=False)
                if s.step % cfg.save_every == 0:
                    self.save("last.pt", with_state=True)
                if log_now or eval_now:
                    window_start = time.perf_counter()  # evaluation and saving are not training time
            return "max_steps"
        except KeyboardInterrupt:
            if in_step:
                self._settle_interrupted_step(before)
            return "interrupted"

    def _settle_interrupted_step(self, data_before: dict) -> None:
        """An interrupt inside a step: count the step if the optimizer took it, else undo its data draw,
        so that last.pt's step, optimizer and data position always agree (an exact resume)."""
        s = self.state
        steps = [int(v["step"]) for v in s.optimizer.state.values() if "step" in v]
        if steps and max(steps) > s.step:
            s.step = max(steps)
        else:
            s.data.load_state_dict(data_before)
        s.optimizer.zero_grad(set_to_none=True)

    def _check_due(self) -> bool:
        cfg = self.config.train
        return bool(cfg.target_check_every and cfg.target_accuracy is not None and self.state.cooldown_from is None
                    and self.state.step % cfg.target_check_every == 0)

    def _sample_at_target(self) -> tuple[float, float] | None:
        """The check: the validation (loss, exact match) when the sample is at the target, else None."""
        scored = at_target(self.state.raw_model, self.val_tensors, self.precision, self.device,
                           self.config.train.target_accuracy)
        self.state.model.train()
        return scored

    def _stop_requested(self) -> bool:
        """Under torchrun all ranks must agree to stop at the same step."""
        wanted = float(self.stop())
        if self.dist.enabled:
            from mct.train.distributed import all_reduce_sum

            wanted = float(all_reduce_sum(torch.tensor([wanted], device=self.device), self.dist)[0])
        return wanted > 0

    # --- finish ----------------------------------------------------------------------------------
    def finish(self, stopped: str) -> TrainResult:
        self.stopped = stopped  # saved in last.pt: a finished run is not resumed, an interrupted one is
        self.folder.close()
        self.save("last.pt", with_state=True)
        files = {name: str(self.folder / name) for name in ("last.pt", "best.pt", "config.toml", "metrics.jsonl")}
        test_report = None
        if stopped != "interrupted" and self.dist.is_main:
            best = self.folder / "best.pt"
            final = load_checkpoint(best, device=self.device).model if best.is_file() else self.state.raw_model
            self.emit({"event": "test_start", "n": len(self.test_records)})
            report = evaluate_records(final, self.tokenizer, self.format, self.test_records, batch_size=512,
                                      device=self.device, step_masking_mode=self.config.data.step_masking_mode)
            test_report = report.to_dict()
            test_report.pop("errors", None)
            hard = evaluate_records(final, self.tokenizer, self.format, self.hard_records, batch_size=512,
                                    device=self.device, step_masking_mode=self.config.data.step_masking_mode)
            test_report["hard"] = {"n": hard.n, "correct": hard.correct, "exact_match": hard.exact_match,
                                   "errors": [e["prompt"] for e in hard.errors][:50]}
            self.folder.write_eval(test_report)
            files.update(eval=str(self.folder / "eval.json"), curves=str(self.folder / "curves.png"))
            self.emit({"event": "test", "exact_match": test_report["exact_match"], "n": test_report["n"],
                       "hard_exact_match": hard.exact_match, "hard_n": hard.n})
        barrier(self.dist)
        best = self.folder / "best.pt"
        files["summary"] = str(self.folder / "summary.json")
        result = TrainResult(
            run_dir=str(self.folder.path), checkpoint=str(self.folder / "last.pt"),
            best_checkpoint=str(best) if best.is_file() else None, steps=self.state.step,
            wall_s=round(time.perf_counter() - self.started, 2), stopped=stopped,
            best_val_exact_match=self.state.best_val_exact_match, test=test_report,
            num_truncated=self.num_truncated, parameters=self.state.raw_model.num_parameters(),
            device=str(self.device), precision=self.precision.name, world_size=self.dist.world_size,
            tokens_per_s=round(self.tokens_seen * self.dist.world_size / max(self.train_seconds, 1e-9), 1),
            train_s=round(self.train_seconds, 3),
            cuda_graphs=self.use_graphs and self.step_fn is not None and self.step_fn.failed is None,
            cuda_graphs_fallback=self.step_fn.failed if self.step_fn is not None else None,
            resumed_from_step=self.start_step if self.resume else None, files=files,
            unique_parameters=self.state.raw_model.num_parameters(), target_step=self.state.cooldown_from,
        )
        self.folder.write_summary(result.to_dict())
        return result


def train(config: Config, run_dir: str | Path, resume: bool = False, force: bool = False,
          progress: Progress | None = None, stop: Callable[[], bool] | None = None) -> TrainResult:
    """Train `config` into `run_dir` and evaluate the best checkpoint on the test set.

    `progress(event)` receives dicts: {"event": "start", ...}, {"event": "step", "step", "loss", ...},
    {"event": "eval", ...}, {"event": "test", ...}; only rank 0 calls it. `stop()` is asked before each
    step (e.g. `stop_on_interrupt()`); a KeyboardInterrupt also ends the run cleanly. Raises MctError
    for a run folder that already holds a run (without force), a resume that does not match, or a
    diverged loss. Changes no process-wide setting (threads, signal handlers, matplotlib backend).
    """
    dist_info, device = setup_distributed(config.train.device)
    emit = progress if (progress is not None and dist_info.is_main) else (lambda event: None)
    python_state = random.getstate()
    # the run seeds torch's and Python's generators; the caller gets its own streams back afterwards
    lock = folder_lock(run_dir) if dist_info.is_main else contextlib.nullcontext()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type), lock:
        try:
            run = _Run(config, Path(run_dir), resume, force, emit, dist_info, device, stop or (lambda: False))
            try:
                run.build()
            except BaseException:
                run.folder.abandon()  # a forced run that cannot start leaves the old one as it was
                raise
            run.folder.started()
            stopped = run.loop()
            return run.finish(stopped)
        finally:
            random.setstate(python_state)


def run_finished(train_state: dict, max_steps: int) -> bool:
    """Whether the run that saved `train_state` ended for good: it reached its target (and cooled down), or
    it ran `max_steps` (a larger max_steps trains it on). An interrupted run is not finished."""
    stopped = train_state.get("stopped")
    return stopped == "target_reached" or (stopped == "max_steps" and int(train_state["step"]) >= max_steps)


def finished_run(run_dir: Path, config: Config) -> TrainResult | None:
    """The summary of the run in `run_dir` when it finished (reached its target, or ran `config`'s
    max_steps), else None (no run, or one to resume). MctError when it is a run of another model or data."""
    if not (run_dir / "last.pt").is_file():
        return None
    saved = read_checkpoint_file(run_dir / "last.pt")  # its config and state: no model to build
    diffs = config_differences(validate_config(saved["config"], source=f"checkpoint {run_dir / 'last.pt'}"), config)
    if diffs:
        raise MctError(f"{run_dir} holds a run of another model or data config ({'; '.join(diffs)}); choose "
                       "another --out, or pass --force to train it again")
    state = saved.get("train_state")
    if not isinstance(state, dict) or type(state.get("step")) is not int or not run_finished(state, config.train.max_steps):
        return None  # to resume (train checks a damaged state and says so)
    summary = run_dir / "summary.json"
    if not summary.is_file():
        raise MctError(f"{run_dir} holds a finished run without summary.json (an older mct wrote it); "
                       "pass --force to train it again")
    try:
        return TrainResult(**json.loads(summary.read_text()))
    except (ValueError, TypeError):
        raise MctError(f"{summary} is damaged; pass --force to train {run_dir} again") from None


def train_seeds(config: Config, run_dir: str | Path, seeds: list[int], force: bool = False,
                progress: Progress | None = None, stop: Callable[[], bool] | None = None) -> list[TrainResult]:
    """The same config once per seed (`train.seed`), one after the other, in `run_dir/seed-N`; small
    models learn for some seeds and not others, so each run folder is kept. Stops after an interrupted run.

    The same sweep again (an interrupted one, or one given more seeds) goes on where it was: a seed whose
    run finished is reported from its summary.json (`progress` gets {"event": "kept", ...}), an
    interrupted one resumes from its last.pt, a new one starts; `force` trains every seed anew."""
    results = []
    for seed in seeds:
        seeded = config.model_copy(deep=True)
        seeded.train.seed = seed
        folder = Path(run_dir) / f"seed-{seed}"
        kept = None if force else finished_run(folder, seeded)
        if kept is not None:
            if progress is not None:
                progress({"event": "kept", "run_dir": str(folder), "steps": kept.steps, "stopped": kept.stopped})
            results.append(kept)
            continue
        resume = not force and (folder / "last.pt").is_file()
        results.append(train(seeded, folder, resume=resume, force=force, progress=progress, stop=stop))
        if results[-1].stopped == "interrupted":
            break
    return results
