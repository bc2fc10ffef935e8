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
def gen() -> None:
    """Generate an arithmetic data set (not built yet)."""
    _not_built("gen")


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
