"""The `mct` command line: parse, load config, call the core, render with rich. No logic of its own."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

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
        "max_digits": max_digits, "use_steps": steps, "answer_order": answer_order, "modulus": modulus,
        "train_fraction": train_fraction, "ood_digits": ood, "seed": seed,
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
                      f"{'steps' if fmt['use_steps'] else 'no steps'}, {fmt['answer_order']} answers, seed {manifest['seed']}",
                      highlight=False)
    for name, filename in manifest["files"].items():
        err_console.print(f"  {filename:<16} {manifest['counts'][name]:>10,} records", highlight=False)
    err_console.print(f"  {'manifest.json':<16} splits disjoint, sha256 of each file", highlight=False)


@app.command()
def train() -> None:
    """Train a model (not built yet)."""
    _not_built("train")


@app.command(name="eval")
def eval_() -> None:
    """Evaluate a checkpoint (not built yet)."""
    _not_built("eval")


@app.command()
def generate() -> None:
    """Complete prompts with a checkpoint (not built yet)."""
    _not_built("generate")


@app.command()
def attn() -> None:
    """Show attention patterns (not built yet)."""
    _not_built("attn")


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
