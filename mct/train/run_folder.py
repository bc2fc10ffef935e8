"""A run folder: what `mct train` writes, and the rules that protect it.

    RUN/last.pt       weights + training state, rewritten atomically (resume from here)
    RUN/best.pt       the best validation checkpoint (weights only)
    RUN/config.toml   the resolved config (reproduces the run)
    RUN/metrics.jsonl one line per log / evaluation point
    RUN/eval.json     the best checkpoint on the test split
    RUN/curves.png    training and validation curves
    RUN/data/         the validation and test sets the run used
"""

from __future__ import annotations

import json
from pathlib import Path

from mct.checkpoint import save_checkpoint
from mct.config import Config, save_config_toml, validate_config
from mct.errors import MctError
from mct.fileio import atomic_write_text
from mct.figures import plot_curves

RUN_FILES = ("last.pt", "best.pt", "config.toml", "metrics.jsonl", "eval.json")
# Changing these between a run and its resume would make the resumed run a different experiment.
RESUME_LOCKED_SECTIONS = ("model", "data")


class RunFolder:
    """The files of one run; only rank 0 creates one that writes (`writer=False` elsewhere)."""

    def __init__(self, path: str | Path, writer: bool = True):
        self.path = Path(path)
        self.writer = writer
        self._metrics = None

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def prepare(self, resume: bool, force: bool) -> None:
        """Refuse to overwrite a run without `force`; with `force`, clear only mct's own files."""
        if not self.writer:
            return
        if resume:
            if not (self.path / "last.pt").is_file():
                raise MctError(f"--resume {self.path}: no last.pt there to resume from")
            return
        existing = [name for name in RUN_FILES if (self.path / name).exists()]
        if existing and not force:
            raise MctError(
                f"{self.path} already holds a run ({', '.join(existing)}); use --resume {self.path} to continue "
                "it, --force to overwrite it, or --out for a new folder"
            )
        for name in existing + ["curves.png"]:
            (self.path / name).unlink(missing_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)

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

    def write_eval(self, report: dict) -> None:
        if self.writer:
            atomic_write_text(self.path / "eval.json", json.dumps(
                {"checkpoint": str(self.path / "best.pt"), "split": "test", **report}, indent=2) + "\n")
            plot_curves(read_metrics(self.path / "metrics.jsonl"), self.path / "curves.png")


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
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if up_to_step is None or r["step"] <= up_to_step]


def load_run_config(run_dir: Path) -> Config:
    """The resolved config a run folder was trained with (for --resume)."""
    from mct.config import read_toml

    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        raise MctError(f"--resume {run_dir}: there is no config.toml in it; is it an mct run folder?")
    return validate_config(read_toml(path), source=str(path))
