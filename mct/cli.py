"""The `mct` command line: parse, load config, call the core, render with rich. No logic of its own."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from mct.config import deep_merge, drop_none, read_toml
from mct.errors import MctError

try:  # typer >= 0.2x vendors click; older typer depends on it
    from typer._click.exceptions import UsageError as _UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import UsageError as _UsageError

app = typer.Typer(
    name="mct",
    help="Math-Compact Transformer toolkit: generate arithmetic data, train compact transformers, "
    "evaluate them and look inside.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


def _not_built(command: str) -> None:
    raise MctError(f"`mct {command}` is not built yet in this version")


@app.command()
def gen(
    task: Annotated[str, typer.Argument(help="Task: add, sub, mul or mod.")],
    instances: Annotated[Optional[int], typer.Option("--instances", "-n", help="Training records (default 100000; mod: set by --train-fraction).")] = None,
    val: Annotated[Optional[int], typer.Option("--val", help="Validation records (default 1000).")] = None,
    test: Annotated[Optional[int], typer.Option("--test", help="Test records (default 2000; also the size of test_ood).")] = None,
    min_digits: Annotated[Optional[int], typer.Option("--min-digits", help="Shortest operand in digits (default 1).")] = None,
    max_digits: Annotated[Optional[int], typer.Option("--max-digits", help="Longest operand in digits (default 3).")] = None,
    steps: Annotated[Optional[bool], typer.Option("--steps/--no-steps", help="Write step-by-step traces before the answer.")] = None,
    answer_order: Annotated[Optional[str], typer.Option("--answer-order", help="reversed (least significant digit first) or plain.")] = None,
    pad: Annotated[Optional[bool], typer.Option("--pad/--no-pad", help="Zero-pad operands to --max-digits digits and the answer to its full width (012+034=, #6400).")] = None,
    modulus: Annotated[Optional[int], typer.Option("--modulus", help="Modulus P of the mod task (default 113).")] = None,
    train_fraction: Annotated[Optional[float], typer.Option("--train-fraction", help="mod: share of all P*P pairs used for training (default 0.3).")] = None,
    ood_digits: Annotated[Optional[str], typer.Option("--ood-digits", help="Extra test_ood.jsonl with operand lengths C-D, longer than --max-digits (e.g. 4-5).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed; the same arguments and seed give byte-identical files.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "--output-dir", "-o", help="Output folder (default data/TASK).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a data set already in the folder.")] = False,
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML config whose [data] table gives defaults; flags win.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON on stdout.")] = False,
) -> None:
    """Generate an arithmetic data set: train/val/test JSONL (disjoint, balanced) and manifest.json.

    Sampling is balanced over operand lengths and (add/sub) carry counts; records hold prompt, answer,
    target, steps and meta (see docs/data-format.md).

    Example: mct gen add --steps --instances 50000 --max-digits 4 --ood-digits 5-6 --out data/add4
    """
    from mct.config import load_config
    from mct.data.generate import write_dataset

    if task not in ("add", "sub", "mul", "mod"):
        raise MctError(f"unknown task {task!r}; use add, sub, mul or mod")
    if task == "mod" and instances is not None:
        raise MctError("the mod task uses every P*P pair; set its training share with --train-fraction, not --instances")
    if answer_order is not None and answer_order not in ("reversed", "plain"):
        raise MctError(f"--answer-order must be reversed or plain, got {answer_order!r}")
    ood = None
    if ood_digits is not None:
        parts = ood_digits.replace(",", "-").split("-")
        if len(parts) == 1:
            parts = parts * 2
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise MctError(f"--ood-digits must look like C-D (e.g. 4-5), got {ood_digits!r}")
        ood = [int(p) for p in parts]
    data_flags = {
        "task": task, "n_train": instances, "n_val": val, "n_test": test, "min_digits": min_digits,
        "max_digits": max_digits, "use_steps": steps, "answer_order": answer_order, "pad_operands": pad,
        "modulus": modulus, "train_fraction": train_fraction, "ood_digits": ood, "seed": seed,
    }
    data_config = load_config(config, {"data": data_flags}).data
    out_dir = out if out is not None else Path("data") / task
    total = (data_config.modulus**2 if task == "mod"
             else data_config.n_train + data_config.n_val + data_config.n_test * (2 if ood else 1))

    if total >= 200_000 and err_console.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn(f"writing {out_dir}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=err_console, transient=True) as bar:
            bar_task = bar.add_task("gen", total=total)
            manifest = write_dataset(data_config, out_dir, force=force,
                                     progress=lambda done, all_: bar.update(bar_task, completed=done, total=all_))
    else:
        manifest = write_dataset(data_config, out_dir, force=force)

    if json_out:
        print(json.dumps(manifest, indent=2))
    fmt = manifest["format"]
    digits = (f"mod {manifest['modulus']}, train fraction {manifest['train_fraction']}" if task == "mod"
              else f"{manifest['min_digits']}-{manifest['max_digits']} digits")
    err_console.print(f"[bold green]wrote[/] {out_dir}: {task}, {digits}, "
                      f"{'steps' if fmt['use_steps'] else 'no steps'}, {fmt['answer_order']} answers"
                      f"{', zero-padded to ' + str(fmt['operand_width']) + ' digits' if fmt.get('operand_width') else ''}"
                      f", seed {manifest['seed']}",
                      highlight=False)
    for name, filename in manifest["files"].items():
        err_console.print(f"  {filename:<16} {manifest['counts'][name]:>10,} records", highlight=False)
    err_console.print(f"  {'manifest.json':<16} splits disjoint, sha256 of each file", highlight=False)


@app.command()
def train(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config (default: configs/default.toml).")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = None,
    ffn: Annotated[Optional[str], typer.Option(help="Feed-forward type: gelu, geglu or swiglu.")] = None,
    d_model: Annotated[Optional[int], typer.Option(help="Width of the residual stream.")] = None,
    layers: Annotated[Optional[int], typer.Option(help="Number of transformer blocks.")] = None,
    heads: Annotated[Optional[int], typer.Option(help="Attention heads per block.")] = None,
    d_ff: Annotated[Optional[int], typer.Option(help="Feed-forward hidden width.")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Examples per optimizer step (global).")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Optimizer steps at most.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of initialisation and data order.")] = None,
    precision: Annotated[Optional[str], typer.Option(help="auto, fp32, bf16 or fp16.")] = None,
    compile: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the model.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "--output-dir", help="Run folder (default: a new folder under runs/).")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Train on a folder written by `mct gen` (its splits and format).")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the run in this folder from its last.pt.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite a run folder that already holds a run.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
) -> None:
    """Train a model and evaluate it on a held-out test set.

    With no arguments: 3-digit addition from configs/default.toml, on the CPU in about a minute.
    Writes last.pt, best.pt, config.toml, metrics.jsonl, curves.png and eval.json to the run folder.

    Example: mct train --device cuda --ffn geglu --out runs/geglu

    Example: mct gen add --steps --out data/add && mct train --data data/add --out runs/add-steps
    """
    from mct.config import default_config_path, load_config
    from mct.data.generate import data_config_from_folder
    from mct.train import load_run_config, stop_on_interrupt, torch_threads, train as run_training

    overrides = {
        "model": {"ffn_type": ffn, "d_model": d_model, "num_layers": layers, "num_heads": heads, "d_ff": d_ff},
        "train": {"device": device, "lr": lr, "batch_size": batch_size, "max_steps": max_steps, "seed": seed,
                  "precision": precision, "compile": compile},
    }
    if data is not None:
        overrides["data"] = data_config_from_folder(data)
    if resume is not None:
        if out is not None and out != resume:
            raise MctError("--resume DIR continues DIR; do not also give a different --out")
        # The run's own config, then --config (if any), then flags.
        base = load_run_config(resume).to_toml_dict()
        if config is not None:
            base = deep_merge(base, read_toml(config))
        cfg = load_config(None, overrides=deep_merge(base, drop_none(overrides)))
        run_dir = resume
    else:
        cfg = load_config(config if config is not None else default_config_path(), overrides=overrides)
        run_dir = out or cfg.train.out_dir or _new_run_dir(cfg.data.task)
    from mct.cli_progress import TrainProgress

    with TrainProgress(err_console, enabled=_is_main_process()) as progress, stop_on_interrupt() as stop, \
            torch_threads(cfg.train.num_threads):
        result = run_training(cfg, run_dir, resume=resume is not None, force=force, progress=progress.update,
                              stop=stop)
    if not _is_main_process():
        return
    if json_out:
        print(json.dumps(result.to_dict(), indent=2))
    _render_train_summary(result)
    if result.stopped == "interrupted":
        raise typer.Exit(130)


def _is_main_process() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def _new_run_dir(task: str) -> Path:
    import time

    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate, n = Path("runs") / f"{stamp}-{task}", 1
    while candidate.exists():
        n += 1
        candidate = Path("runs") / f"{stamp}-{task}-{n}"
    return candidate


def _render_train_summary(result) -> None:
    from rich.table import Table

    table = Table(title="mct train", show_header=False)
    table.add_column("item", style="bold")
    table.add_column("value")
    reasons = {"target_reached": "reached the target accuracy", "max_steps": "reached max_steps",
               "interrupted": "interrupted (resume with --resume)"}
    table.add_row("stopped", f"after {result.steps} steps: {reasons[result.stopped]}")
    table.add_row("wall time", f"{result.wall_s:.1f} s on {result.device} ({result.precision}, "
                  f"{result.world_size} process{'es' if result.world_size > 1 else ''})")
    table.add_row("model", f"{result.parameters:,} parameters")
    table.add_row("unique parameters", f"{result.unique_parameters:,} (tied and shared tensors counted once)")
    table.add_row("throughput", f"{result.tokens_per_s:,.0f} tokens/s")
    if result.best_val_exact_match is not None:
        table.add_row("best val exact match", f"{result.best_val_exact_match:.2%}")
    if result.test is not None:
        table.add_row("test exact match", f"[bold]{result.test['exact_match']:.2%}[/] of {result.test['n']:,} problems")
    if result.num_truncated:
        table.add_row("dropped (too long)", f"{result.num_truncated:,} examples longer than data.max_seq_len")
    table.add_row("checkpoint", result.checkpoint)
    if result.best_checkpoint:
        table.add_row("best checkpoint", result.best_checkpoint)
    table.add_row("run folder", result.run_dir)
    err_console.print(table)


@app.command(name="eval")
def eval_(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (.pt) written by `mct train`.")],
    data: Annotated[Path, typer.Argument(help="A JSONL file of records (prompt, answer), or a data folder from `mct gen`.")],
    split: Annotated[str, typer.Option(help="Split to read from a data folder: test, val or test_ood.")] = "test",
    batch_size: Annotated[int, typer.Option(min=1, help="Problems decoded together.")] = 256,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    limit: Annotated[Optional[int], typer.Option(min=1, help="Evaluate only the first N records.")] = None,
    errors: Annotated[Optional[Path], typer.Option("--errors", help="Write the failures as JSONL (prompt, expected, got).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing --errors file.")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Decode without the KV cache (slower; for checks).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object on stdout.")] = False,
) -> None:
    """Evaluate a checkpoint with batched greedy decoding: exact match, per-digit accuracy, accuracy by
    operand lengths, carries and longest carry chain, step correctness, malformed outputs.

    Records need only `prompt` and `answer`; everything else is recomputed, so external test sets work.

    Example: mct eval runs/add/best.pt data/add --split test_ood --errors failures.jsonl
    """
    from mct.data.dataset import read_records
    from mct.evaluate import evaluate_records
    from mct.fileio import atomic_write_text
    from mct.predictor import Predictor

    if errors is not None and errors.exists() and not force:
        raise MctError(f"--errors {errors} already exists; pass --force to overwrite it or choose another file")
    path = _eval_data_path(data, split)
    predictor = Predictor.from_checkpoint(checkpoint, device=device)
    records = read_records(path, tokenizer=predictor.tokenizer)
    if not records:
        raise MctError(f"{path} holds no records; pass a JSONL file with one {{\"prompt\", \"answer\"}} object a line")
    total = min(len(records), limit) if limit is not None else len(records)
    with _progress_bar(f"eval {path.name}", total, enabled=total >= 1000) as progress:
        report = evaluate_records(predictor.model, predictor.tokenizer, predictor.data_format, records,
                                  batch_size=batch_size, device=predictor.device, limit=limit,
                                  use_cache=not no_cache, progress=progress,
                                  step_masking_mode=predictor.step_masking_mode)
    if errors is not None:
        lines = [json.dumps({"prompt": e["prompt"], "expected": e["expected"], "got": e["got"],
                             "completion": e["completion"], "malformed": e["malformed"]}) for e in report.errors]
        atomic_write_text(errors, "".join(line + "\n" for line in lines))
    result = report.to_dict()
    result.update(checkpoint=str(checkpoint), data=str(path), device=str(predictor.device),
                  unique_parameters=predictor.model.num_parameters())
    if json_out:
        print(json.dumps(result, indent=2))
        return
    _render_eval(result)
    if errors is not None:
        err_console.print(f"wrote {len(report.errors)} failure(s) to {errors}", highlight=False, soft_wrap=True)


EVAL_SPLITS = ("test", "val", "test_ood")


def _eval_data_path(data: Path, split: str) -> Path:
    if split not in EVAL_SPLITS:
        raise MctError(f"--split {split!r} is not one of {', '.join(EVAL_SPLITS)}")
    if data.is_dir():
        path = data / f"{split}.jsonl"
        if not path.is_file():
            found = ", ".join(sorted(p.stem for p in data.glob("*.jsonl"))) or "none"
            raise MctError(f"data folder {data} has no {split}.jsonl (splits there: {found}); "
                           "choose one with --split or run `mct gen`")
        return path
    if not data.is_file():
        raise MctError(f"data {data} does not exist; pass a JSONL file or a data folder written by `mct gen`")
    return data


class _progress_bar:
    """A transient rich progress bar on stderr, used as `progress(done, total)`; a no-op when disabled."""

    def __init__(self, description: str, total: int, enabled: bool = True):
        self.description, self.total, self.enabled = description, total, enabled
        self._progress = self._task = None

    def __enter__(self):
        if not self.enabled:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeRemainingColumn(), console=err_console, transient=True)
        self._progress.start()
        self._task = self._progress.add_task(self.description, total=self.total)
        return self

    def __call__(self, done: int, total: int) -> None:
        self._progress.update(self._task, completed=done, total=total)

    def __exit__(self, *exc_info) -> None:
        if self._progress is not None:
            self._progress.stop()


def _pct(share: float) -> str:
    return f"{100 * share:.2f}%"


def _render_eval(result: dict) -> None:
    from rich.table import Table

    summary = Table(title="mct eval", show_header=False)
    summary.add_column("item", style="bold")
    summary.add_column("value")
    summary.add_row("checkpoint", result["checkpoint"])
    summary.add_row("unique parameters", f"{result['unique_parameters']:,}")
    summary.add_row("data", result["data"])
    summary.add_row("format", f"{result['task']}, answer {result['answer_order']}"
                    + (", with steps" if result["steps"] is not None or result["steps_supplied"] else ""))
    mode = result["step_masking_mode"]
    decoding = {"none": f"the model writes {'the steps and ' if result['steps'] else ''}the answer",
                "mask_steps": "the reference steps are supplied, the model writes the answer",
                "mask_answer": "the model writes the steps, which are scored (its answer was not trained)"}
    summary.add_row("step masking", f"{mode}: {decoding[mode]}")
    summary.add_row("problems", f"{result['n']:,}")
    summary.add_row(f"exact match ({result['scored']})", f"{_pct(result['exact_match'])} ({result['correct']:,} right)")
    malformed = result["malformed"]
    reasons = ", ".join(f"{reason}: {count}" for reason, count in malformed["by_reason"].items())
    summary.add_row("malformed", f"{malformed['count']:,}" + (f" ({reasons})" if reasons else ""))
    if result["steps"] is not None:
        steps = result["steps"]
        summary.add_row("steps correct", _pct(steps["steps_correct"]))
        if "right_answer_after_wrong_steps" in steps:
            summary.add_row("right answer after wrong steps",
                            f"{steps['right_answer_after_wrong_steps']:,} "
                            f"({_pct(steps['right_answer_after_wrong_steps_share'])} of wrong-step problems)")
            summary.add_row("wrong answer after right steps", f"{steps['wrong_answer_after_right_steps']:,}")
    err_console.print(summary)

    from rich.columns import Columns

    def group_table(title: str, label: str) -> Table:
        table = Table(title=title, min_width=len(title) + 2)
        table.add_column(label, justify="right")
        table.add_column("n", justify="right")
        table.add_column("exact match" if label != "digit" else "accuracy", justify="right")
        return table

    tables = []
    if result["per_digit_accuracy"]:  # empty when the answer is not scored
        digits = group_table("by answer digit", "digit")
        for position, accuracy in result["per_digit_accuracy"].items():
            label = f"{position} (units)" if position == "0" else position
            digits.add_row(label, f"{result['per_digit_count'][position]:,}", _pct(accuracy))
        tables.append(digits)
    for key, title, label in (("by_digits", "by operand lengths", "a,b"),
                              ("by_carries", "by number of carries", "carries"),
                              ("by_max_carry_chain", "by longest carry chain", "chain")):
        if not result[key]:
            continue
        table = group_table(title, label)
        for group, stats in result[key].items():
            table.add_row(group, f"{stats['n']:,}", _pct(stats["exact_match"]))
        tables.append(table)
    err_console.print(Columns(tables, padding=(1, 2)))


@app.command()
def generate(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (.pt) written by `mct train`.")],
    prompts: Annotated[list[str], typer.Argument(help="One or more problems, e.g. 12+34= (a missing '=' is added).")],
    temperature: Annotated[Optional[float], typer.Option(min=0.0, help="0 = greedy (default: the checkpoint's [generate] temperature).")] = None,
    top_k: Annotated[Optional[int], typer.Option(min=1, help="Sample among the k most likely tokens.")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option(min=1, help="Tokens to generate at most (default: until <eos> or the context is full).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for sampling (temperature > 0).")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Show the top candidates and their probabilities for every generated token.")] = False,
    top: Annotated[int, typer.Option(min=1, help="Candidates shown per token with --explain.")] = 5,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as one JSON object on stdout.")] = False,
) -> None:
    """Complete prompts with a checkpoint: the raw completion and the answer in natural order.

    Example: mct generate runs/add/best.pt 12+34= 999+1= --explain
    """
    from mct.device import seed_everything
    from mct.predictor import Predictor

    predictor = Predictor.from_checkpoint(checkpoint, device=device)
    gen_config = getattr(predictor.config, "generate", None)
    if temperature is None:
        temperature = gen_config.temperature if gen_config is not None else 0.0
    if top_k is None and gen_config is not None:
        top_k = gen_config.top_k
    if max_new_tokens is None and gen_config is not None:
        max_new_tokens = gen_config.max_new_tokens
    prompt_list = [predictor.normalize_prompt(p) for p in prompts]
    for prompt in prompt_list:
        predictor.encode(prompt)  # vocabulary and length errors before any work
    if seed is not None:
        seed_everything(seed)
    completions = predictor.complete(prompt_list, max_new_tokens=max_new_tokens, temperature=temperature,
                                     top_k=top_k)
    results = []
    for prompt, completion in zip(prompt_list, completions):
        entry = predictor.grade(prompt, completion)
        if explain:
            if seed is not None:
                seed_everything(seed)
            entry["explain"] = [choice.to_dict() for choice in predictor.explain(
                prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_n=top)]
        results.append(entry)
    if json_out:
        print(json.dumps({"checkpoint": str(checkpoint), "temperature": temperature, "top_k": top_k,
                          "results": results}, indent=2))
        return
    _render_generate(results)


def _render_generate(results: list[dict]) -> None:
    from rich.table import Table

    scored = results[0]["scored"] if results else "answer"
    supplied = any(entry["supplied"] for entry in results)
    table = Table(title="mct generate" + (" (reference steps supplied after the prompt)" if supplied else ""))
    for column in ("prompt + steps" if supplied else "prompt", "completion", scored, "expected", ""):
        table.add_column(column, no_wrap=True)
    for entry in results:
        mark = "" if entry["correct"] is None else ("[green]✓[/]" if entry["correct"] else "[red]✗[/]")
        got = entry["answer"] if scored == "answer" else "".join(step + "|" for step in entry["steps"])
        if entry["malformed"] is not None:
            got = f"[red]malformed: {entry['malformed']}[/]"
        table.add_row(entry["prompt"] + entry["supplied"], entry["completion"], got, entry["expected"] or "?", mark)
    err_console.print(table, highlight=False)
    for entry in results:
        if "explain" not in entry:
            continue
        steps = Table(title=f"{entry['prompt']} token by token")
        steps.add_column("#", justify="right")
        steps.add_column("token")
        steps.add_column("p", justify="right")
        steps.add_column("top candidates")
        for index, choice in enumerate(entry["explain"]):
            candidates = "  ".join(f"{c['token']} {c['probability']:.3f}" for c in choice["candidates"])
            steps.add_row(str(index), choice["token"], f"{choice['probability']:.3f}", candidates)
        err_console.print(steps, highlight=False)


@app.command()
def attn(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (.pt) written by `mct train`.")],
    prompt: Annotated[str, typer.Argument(help="A problem, e.g. 12+34= (a missing '=' is added).")],
    layer: Annotated[Optional[int], typer.Option(help="Show only this layer (0-based).")] = None,
    head: Annotated[Optional[int], typer.Option(help="Show only this head (0-based).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Save a figure of the chosen layers and heads (.png, .svg or .pdf).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing --out file.")] = False,
    max_new_tokens: Annotated[Optional[int], typer.Option(min=1, help="Tokens the model may generate (default: until <eos>).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    json_out: Annotated[bool, typer.Option("--json", help="Print tokens and weights [layer][head][query][key] as JSON on stdout.")] = False,
) -> None:
    """Show the attention patterns of a prompt plus the model's own completion, one heatmap per head
    (rows = query token, columns = key token; all layers and heads unless --layer/--head).

    Example: mct attn runs/add/best.pt 12+34= --layer 1 --out attn.png
    """
    from mct.analysis.attention import render_attention, save_attention_figure, select_heads
    from mct.predictor import Predictor

    if out is not None:
        if out.suffix.lower() not in (".png", ".svg", ".pdf"):
            raise MctError(f"--out {out}: use a .png, .svg or .pdf file name")
        if out.exists() and not force:
            raise MctError(f"--out {out} already exists; pass --force to overwrite it or choose another file")
    predictor = Predictor.from_checkpoint(checkpoint, device=device)
    maps = predictor.attention(predictor.normalize_prompt(prompt), max_new_tokens=max_new_tokens)
    layers, heads = select_heads(maps.num_layers, maps.num_heads, layer, head)
    if out is not None:
        save_attention_figure(maps.tokens, maps.weights, out, layers=layers, heads=heads,
                              title=f"{maps.prompt} {maps.completion}")
    if json_out:
        print(json.dumps(maps.to_dict(layers, heads)))
        return
    err_console.print(f"[bold]{maps.prompt}[/] -> {maps.completion}   "
                      f"({maps.num_layers} layers x {maps.num_heads} heads; E = <eos>)", highlight=False)
    for table in render_attention(maps.tokens, maps.weights, layers, heads):
        err_console.print(table)
    if out is not None:
        err_console.print(f"wrote {out}", highlight=False, soft_wrap=True)


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


@app.command()
def doctor(
    device: Annotated[str, typer.Option(help="Device to check and size for: auto, cpu, cuda, cuda:N, mps.")] = "auto",
    config: Annotated[Optional[Path], typer.Option(help="Config whose model is sized (default: configs/default.toml).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")] = False,
) -> None:
    """Check Python, torch, CUDA/MPS and memory, and estimate the largest batch that fits.

    With --device cuda it runs a real matrix product on the GPU and exits 1 when CUDA is not usable.

    Example: mct doctor --device cuda --config configs/gpu-small.toml
    """
    import torch

    from mct.config import default_config_path, load_config
    from mct.doctor import collect_report

    cfg = load_config(config if config is not None else default_config_path())
    wants_cuda = device.strip().lower().startswith("cuda")
    if wants_cuda and not torch.cuda.is_available():
        report = collect_report(cfg, "cpu")
        report["requested_device"] = device
        report["ok"] = False
        _render_doctor(report, json_out)
        err_console.print(f"[bold red]error:[/] --device {device}: CUDA is not usable: {report['cuda_reason']}",
                          highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    report = collect_report(cfg, device, run_check=wants_cuda)
    report["ok"] = report.get("matmul_check", {}).get("ok", True)
    _render_doctor(report, json_out)
    if not report["ok"]:
        err_console.print("[bold red]error:[/] the GPU matrix product gave wrong results", highlight=False)
        raise typer.Exit(1)


def _render_doctor(report: dict, json_out: bool) -> None:
    from rich.table import Table

    if json_out:
        print(json.dumps(report, indent=2))
        return
    table = Table(title="mct doctor", show_header=False)
    table.add_column("item", style="bold")
    table.add_column("value")
    table.add_row("Python", report["python"])
    table.add_row("torch", f"{report['torch']} ({report['torch_build']})")
    table.add_row("CPU threads", f"{report['threads']} torch threads, {report['cpu_count']} cores")
    table.add_row("CPU memory available", _gib(report["cpu_memory_available_bytes"]))
    cuda = "yes" if report["cuda_available"] else f"no: {report['cuda_reason']}"
    table.add_row("CUDA", cuda)
    for gpu in report["devices"]:
        table.add_row(
            f"cuda:{gpu['index']}",
            f"{gpu['name']}, compute {gpu['compute_capability']}, {_gib(gpu['free_memory_bytes'])} free "
            f"of {_gib(gpu['total_memory_bytes'])}, bf16 {'yes' if gpu['bf16'] else 'no'}",
        )
    table.add_row("MPS", "yes" if report["mps_available"] else "no")
    if "matmul_check" in report:
        check = report["matmul_check"]
        table.add_row("GPU matmul check", f"{'ok' if check['ok'] else 'WRONG'}: {check['size']}x{check['size']} "
                      f"in {check['seconds'] * 1e3:.2f} ms ({check['gflops']:.0f} GFLOP/s)")
    est = report["estimate"]
    table.add_row(
        "Batch estimate",
        f"{est['parameters']:,} parameters, seq {est['seq_len']}: about {est['max_batch_size']:,} examples fit "
        f"{_gib(est['free_bytes'])} free on {est['device']} (config asks for {est['configured_batch_size']})",
    )
    err_console.print(table)


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: user mistakes become one line on stderr and exit code 2; bugs keep tracebacks."""
    try:
        result = app(args=argv, prog_name="mct", standalone_mode=False)
    except MctError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except _UsageError as exc:
        if not exc.format_message():  # `mct` alone: the help was shown
            sys.exit(2)
        command = exc.ctx.command_path if exc.ctx else "mct"
        err_console.print(f"[bold red]error:[/] {command}: {exc.format_message()} (see `{command} --help`)",
                          highlight=False, soft_wrap=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(result if isinstance(result, int) else 0)
