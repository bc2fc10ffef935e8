"""The `mct` command line: parse, load config, call the core, render with rich. No logic of its own."""

from __future__ import annotations

import sys
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


@app.command()
def doctor() -> None:
    """Check Python, torch, CUDA and memory (not built yet)."""
    _not_built("doctor")


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
