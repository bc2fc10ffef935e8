"""Rich progress display for `mct train` on stderr (the CLI layer's renderer of training events)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainProgress:
    """Turns `train()`'s progress events into a bar: step, loss, val exact-match, tokens/s, ETA."""

    def __init__(self, console: Console, enabled: bool = True):
        self.enabled = enabled
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("val EM {task.fields[val]}"),
            TextColumn("{task.fields[tps]} tok/s"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, transient=False, disable=not enabled,
        )
        self.task = None
        self.started = False

    def __enter__(self):
        return self  # the bar starts with the run, so an early error leaves no empty bar behind

    def __exit__(self, *exc):
        if self.started:
            self.progress.stop()
        return False

    def update(self, event: dict) -> None:
        kind = event["event"]
        if kind == "start":
            self.console.print(
                f"training {event['parameters']:,} parameters on {event['device']} ({event['precision']}"
                f"{', %d processes' % event['world_size'] if event['world_size'] > 1 else ''}) -> {event['run_dir']}"
                + (f", resuming at step {event['start_step']}" if event["start_step"] else ""),
                highlight=False,
            )
            self.progress.start()
            self.started = True
            self.task = self.progress.add_task("train", total=event["max_steps"], completed=event["start_step"],
                                               loss="-", val="-", tps="-")
        elif kind == "step" and self.task is not None:
            self.progress.update(self.task, completed=event["step"], loss=f"{event['loss']:.4f}",
                                 tps=f"{event['tokens_per_s']:,.0f}")
        elif kind == "eval" and self.task is not None:
            self.progress.update(self.task, val=f"{event['val_exact_match']:.1%}")
        elif kind == "test_start":
            self.console.print(f"evaluating the best checkpoint on {event['n']:,} test problems", highlight=False)
