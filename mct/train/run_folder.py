"""A run folder: what `mct train` writes, and the rules that protect it.

    RUN/last.pt       weights + training state, rewritten atomically (resume from here)
    RUN/best.pt       the best validation checkpoint (weights only)
    RUN/config.toml   the resolved config (reproduces the run)
    RUN/metrics.jsonl one line per log / evaluation point
    RUN/eval.json     the best checkpoint on the test split
    RUN/curves.png    training and validation curves
    RUN/data/         the validation, test and hard sets the run used
    RUN/checkpoints/  step-N.pt every train.keep_every steps (weights only), when asked for
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from mct.checkpoint import save_checkpoint
from mct.config import Config, not_a_run_folder, save_config_toml, validate_config
from mct.errors import MctError
from mct.fileio import atomic_write_text
from mct.figures import plot_curves

RUN_FILES = ("last.pt", "best.pt", "config.toml", "metrics.jsonl", "eval.json", "curves.png", "summary.json",
             "data/val.jsonl", "data/test.jsonl", "data/hard.jsonl", "checkpoints")
# Changing these between a run and its resume would make the resumed run a different experiment.
RESUME_LOCKED_SECTIONS = ("model", "data")
REPLACED = ".replaced"  # the previous run's files while a --force run starts; deleted once it has


class RunFolder:
    """The files of one run; only rank 0 creates one that writes (`writer=False` elsewhere).

    `prepare` refuses to overwrite a run (any file mct would write, `data/*.jsonl` included) unless
    forced; a forced run moves the old files aside and deletes them only once it has started
    (`started`), so a run that fails before its first step leaves the old one as it was (`abandon`)."""

    def __init__(self, path: str | Path, writer: bool = True):
        self.path = Path(path)
        self.writer = writer
        self._metrics = None
        self._replaced: list[str] = []

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def prepare(self, resume: bool, force: bool) -> None:
        if not self.writer:
            return
        if resume:
            if not (self.path / "last.pt").is_file():
                kept = ("best.pt holds weights only, not the training state" if (self.path / "best.pt").is_file()
                        else "the run saved no checkpoint")
                raise MctError(f"run folder {self.path} has no last.pt to resume from ({kept}); "
                               "start it again with force=True")
            return
        existing = [name for name in RUN_FILES if (self.path / name).exists()]
        if existing and not force and "last.pt" not in existing:
            raise MctError(f"{self.path} holds the files of a run that saved no checkpoint ({', '.join(existing)}); "
                           "pass force=True to start over, or another run_dir")
        if existing and not force:
            raise MctError(
                f"{self.path} already holds a run ({', '.join(existing)}); pass resume=True to continue it, "
                "force=True to overwrite it, or another run_dir"
            )
        aside = self.path / REPLACED
        if existing:
            shutil.rmtree(aside, ignore_errors=True)
            for name in existing:
                (aside / name).parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.path / name, aside / name)
        self._replaced = existing
        self.path.mkdir(parents=True, exist_ok=True)

    def started(self) -> None:
        """The new run is under way: the files it replaced are deleted."""
        if self.writer and self._replaced:
            shutil.rmtree(self.path / REPLACED, ignore_errors=True)
            self._replaced = []

    def abandon(self) -> None:
        """The new run failed before it started: put the files it replaced back."""
        if not (self.writer and self._replaced):
            return
        self.close()
        for name in self._replaced:
            os.replace(self.path / REPLACED / name, self.path / name)
        shutil.rmtree(self.path / REPLACED, ignore_errors=True)
        self._replaced = []

    def start(self, config: Config, resumed_step: int | None, heldout: dict) -> None:
        """Write the config and held-out sets; keep the metrics up to the resumed step (none when new)."""
        if not self.writer:
            return
        kept = read_metrics(self.path / "metrics.jsonl", up_to_step=resumed_step if resumed_step is not None else -1)
        atomic_write_text(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in kept))
        save_config_toml(config, self.path / "config.toml")
        for name, records in heldout.items():
            atomic_write_text(self.path / "data" / f"{name}.jsonl", records_to_jsonl(records))
        self._metrics = (self.path / "metrics.jsonl").open("a")

    def log(self, row: dict) -> None:
        if self._metrics is not None:
            self._metrics.write(json.dumps(row) + "\n")
            self._metrics.flush()

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None

    def save(self, name: str, model, config: Config, tokenizer, data_format, train_state: dict | None,
             step: int) -> None:
        if self.writer:
            save_checkpoint(self.path / name, model, config, tokenizer, data_format.to_dict(), train_state, step=step)

    def write_summary(self, summary: dict) -> None:
        """summary.json: what `mct train --json` printed (a sweep reports a finished run from it)."""
        if self.writer:
            atomic_write_text(self.path / "summary.json", json.dumps(summary, indent=2) + "\n")

    def write_eval(self, report: dict) -> None:
        if self.writer:
            atomic_write_text(self.path / "eval.json", json.dumps(
                {"checkpoint": str(self.path / "best.pt"), "split": "test", **report}, indent=2) + "\n")
            plot_curves(read_metrics(self.path / "metrics.jsonl"), self.path / "curves.png")


def new_run_dir(task: str, root: Path = Path("runs")) -> Path:
    """A fresh run folder name: runs/<date>-<time>-<task>, with -2, -3... if that exists."""
    import time

    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate, n = root / f"{stamp}-{task}", 1
    while candidate.exists():
        n += 1
        candidate = root / f"{stamp}-{task}-{n}"
    return candidate


def records_to_jsonl(records) -> str:
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


def config_differences(saved: Config, current: Config) -> list[str]:
    """`section.key: saved -> current` for every model/data field that differs."""
    diffs = []
    for section in RESUME_LOCKED_SECTIONS:
        old, new = getattr(saved, section).model_dump(), getattr(current, section).model_dump()
        diffs += [f"{section}.{k}: {old[k]!r} -> {new[k]!r}" for k in old if old[k] != new[k]]
    return diffs


def read_metrics(path: Path, up_to_step: int | None = None) -> list[dict]:
    """The rows of metrics.jsonl (up to a step); a damaged line (a write cut short by a kill) is skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return [r for r in rows if up_to_step is None or r["step"] <= up_to_step]


def load_run_config(run_dir: Path) -> Config:
    """The resolved config a run folder was trained with (for --resume)."""
    from mct.config import read_toml

    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        raise MctError(f"run folder {run_dir} has no config.toml; {not_a_run_folder(run_dir)}")
    return validate_config(read_toml(path), source=str(path))
