"""Rich progress on stderr, the CLI layer's renderers of the core's progress callbacks.

- `CountProgress`: `progress(done, total)` of `write_dataset` and `evaluate_records`, a transient bar
  that appears only for work of at least `min_total` items.
- `TrainProgress`: `train()`'s events: step, loss, val exact-match, tokens/s, ETA.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class CountProgress:
    """`with CountProgress(console, "eval test.jsonl", min_total=1000) as progress: work(progress=progress)`.

    The bar starts at the first call whose total reaches `min_total`; nothing shows for small work or
    when `enabled` is false.
    """

    def __init__(self, console: Console, description: str, min_total: int = 0, enabled: bool = True):
        self.console, self.description, self.min_total, self.enabled = console, description, min_total, enabled
        self._progress = self._task = None

    def __enter__(self):
        return self

    def __call__(self, done: int, total: int) -> None:
        if self._progress is None:
            if not self.enabled or total < self.min_total:
                return
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeRemainingColumn(), console=self.console, transient=True)
            self._progress.start()
            self._task = self._progress.add_task(escape(self.description), total=total)
        self._progress.update(self._task, completed=done, total=total)

    def __exit__(self, *exc_info) -> bool:
        if self._progress is not None:
            self._progress.stop()
        return False


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
                f"{', %d processes' % event['world_size'] if event['world_size'] > 1 else ''}) -> "
                f"{escape(str(event['run_dir']))}"
                + (f", resuming at step {event['start_step']}" if event["start_step"] else ""),
                highlight=False,
            )
            if event.get("compile"):  # the bar would otherwise sit at step 0 for half a minute
                self.console.print("torch.compile: the first step compiles the model (20-30 s the first time, "
                                   "about 2 s once inductor's cache holds it)", highlight=False)
            self.progress.start()
            self.started = True
            self.task = self.progress.add_task("train", total=event["max_steps"], completed=event["start_step"],
                                               loss="-", val="-", tps="-")
        elif kind == "step" and self.task is not None:
            self.progress.update(self.task, completed=event["step"], loss=f"{event['loss']:.4f}",
                                 tps=f"{event['tokens_per_s']:,.0f}")
        elif kind == "eval" and self.task is not None:
            self.progress.update(self.task, val=f"{event['val_exact_match']:.1%}")
        elif kind == "cooldown":
            pool = event.get("pool", 1)
            hard = (f", half of each batch the hardest problems of {pool} batches (train.cooldown_pool)"
                    if pool > 1 else "")
            self.console.print(f"target reached at step {event['step']:,}: {event['steps']:,} more steps while the "
                               f"learning rate falls to 0 (train.cooldown_steps){hard}", highlight=False)
        elif kind == "kept":  # a sweep run again: this seed had finished
            self.console.print(f"{escape(event['run_dir'])} finished before ({event['stopped'].replace('_', ' ')} "
                               f"after {event['steps']:,} steps): kept; --force trains it again", highlight=False)
        elif kind == "test_start":
            self.console.print(f"evaluating the best checkpoint on {event['n']:,} test problems", highlight=False)
