"""The `mct` command line: parse, resolve the config, call the core, render with rich. No logic of its own.

Config fields reach the command line two ways: short aliases (`--lr`, `--d-model`, ...) whose help is the
field's own description, and `--set table.key=value` for every key (see docs/configs.md).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from mct.config import MAX_SEED, MIXES, default_config_path, field_help
from mct.errors import ConfigError, MctError
from mct.fileio import check_writable

try:  # typer >= 0.2x vendors click; older typer depends on it
    from typer._click.exceptions import UsageError as _UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import UsageError as _UsageError

# help texts are rich markup: a literal '[' is written '\\[' ('mct\\[tl]'), or rich would take '[tl]' for a style
app = typer.Typer(
    name="mct",
    help="Math-Compact Transformer toolkit: generate arithmetic data, train compact transformers, "
    "evaluate them and look inside.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# emoji=False: `cuda:x` is a device, not an emoji. User text (paths, prompts, messages) is escaped
# before it meets rich markup, so `[/red]` or `[model]` print as written.
err_console = Console(stderr=True, emoji=False)

MAX_ANALYZE_PROBLEMS = 100_000  # every measurement runs over them: more only costs minutes


FIGURE_SUFFIXES = (".png", ".svg", ".pdf")


def _check_output_file(out: Path, option: str, force: bool, inputs: tuple[Path, ...] = (),
                       suffixes: tuple[str, ...] = ()) -> None:
    """Before any work: `out` has a suffix its writer knows, is no file the command reads (--force or
    not), exists only with --force, and can be written."""
    if suffixes and out.suffix.lower() not in suffixes:
        raise MctError(f"{option} {out}: use a {', '.join(suffixes[:-1])} or {suffixes[-1]} file name")
    for source in inputs:
        if out.exists() and source.exists() and os.path.samefile(out, source):
            raise MctError(f"{option} {out} is a file this command reads; choose another file")
    if out.exists() and not force:
        raise MctError(f"{option} {out} already exists; pass --force to overwrite it or choose another file")
    check_writable(out, f"{option} file")


def _named_folder(value: Path | None) -> Path | None:
    if value is not None and value == Path(""):  # '' arrives as '.': both would write into the current folder
        raise typer.BadParameter("empty or '.', the current folder; name a folder")
    return value


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


SET_HELP = ("Set any config key, as table.key=value (repeatable), e.g. --set train.lr=3e-3 "
            "--set model.norm_type=rmsnorm; values are TOML ([4,6] is a list); keys and defaults: docs/configs.md.")

# Short flags of config keys, per command: the config layer names them in its errors, and errors of the
# core that name a key get the flag beside it.
TRAIN_FLAGS = {
    "train.device": "--device", "model.ffn_type": "--ffn", "model.d_model": "--d-model",
    "model.num_layers": "--layers", "model.num_heads": "--heads", "model.d_ff": "--d-ff", "train.lr": "--lr",
    "train.batch_size": "--batch-size", "train.max_steps": "--max-steps", "train.seed": "--seed",
    "train.precision": "--precision", "train.compile": "--compile/--no-compile",
}
GEN_FLAGS = {
    "data.n_train": "--instances", "data.n_val": "--val", "data.n_test": "--test",
    "data.min_digits": "--min-digits", "data.max_digits": "--max-digits", "data.use_steps": "--steps/--no-steps",
    "data.answer_order": "--answer-order", "data.pad_operands": "--pad/--no-pad",
    "data.pad_to_longer": "--pad-to-longer/--no-pad-to-longer", "data.sub_complement": "--complement/--no-complement",
    "data.modulus": "--modulus", "data.residue_tokens": "--residue-tokens/--no-residue-tokens",
    "data.train_fraction": "--train-fraction", "data.ood_digits": "--ood-digits", "data.seed": "--seed",
}
COMMAND_FLAGS = {"train": TRAIN_FLAGS, "gen": GEN_FLAGS, "doctor": {}}


def _flags(table: dict[str, str], **values) -> dict:
    """{"train.lr": (value, "--lr")} for the flags given (None = not given), keyed as in `table`."""
    by_param = {flag.split("/")[0].lstrip("-").replace("-", "_"): key for key, flag in table.items()}
    return {by_param[param]: (value, table[by_param[param]].split("/")[0]) for param, value in values.items()}


def _help(key: str, extra: str = "") -> str:
    return field_help(key) + (f" {extra}" if extra else "")


def _train_help(key: str, extra: str = "") -> str:
    """Help of a `mct train` flag: its default is configs/default.toml's value, where that file sets it."""
    return field_help(key, default_config_path()) + (f" {extra}" if extra else "")


@app.command()
def gen(
    task: Annotated[str, typer.Argument(help="Task: add, sub, mul or mod.")],
    ood_longest: Annotated[Optional[int], typer.Argument(help="With --ood-digits C, the longest OOD operand D (`--ood-digits 11 50` = `--ood-digits 11-50`).", show_default=False)] = None,
    instances: Annotated[Optional[int], typer.Option("--instances", "-n", help=_help("data.n_train", "mod: set by --train-fraction."))] = None,
    val: Annotated[Optional[int], typer.Option("--val", help=_help("data.n_val"))] = None,
    test: Annotated[Optional[int], typer.Option("--test", help=_help("data.n_test", "Also the size of test_ood."))] = None,
    min_digits: Annotated[Optional[int], typer.Option("--min-digits", help=_help("data.min_digits"))] = None,
    max_digits: Annotated[Optional[int], typer.Option("--max-digits", help=_help("data.max_digits"))] = None,
    steps: Annotated[Optional[bool], typer.Option("--steps/--no-steps", help=_help("data.use_steps"))] = None,
    answer_order: Annotated[Optional[str], typer.Option("--answer-order", help=_help("data.answer_order"))] = None,
    pad: Annotated[Optional[bool], typer.Option("--pad/--no-pad", help=_help("data.pad_operands", "E.g. 012+034=, #6400."))] = None,
    pad_to_longer: Annotated[Optional[bool], typer.Option("--pad-to-longer/--no-pad-to-longer", help=_help("data.pad_to_longer"))] = None,
    complement: Annotated[Optional[bool], typer.Option("--complement/--no-complement", help=_help("data.sub_complement"))] = None,
    modulus: Annotated[Optional[int], typer.Option("--modulus", help=_help("data.modulus"))] = None,
    residue_tokens: Annotated[Optional[bool], typer.Option("--residue-tokens/--no-residue-tokens", help=_help("data.residue_tokens"))] = None,
    train_fraction: Annotated[Optional[float], typer.Option("--train-fraction", help=_help("data.train_fraction"))] = None,
    ood_digits: Annotated[Optional[str], typer.Option("--ood-digits", help=_help("data.ood_digits", "Written C-D or C D, e.g. 11-40: an extra test_ood.jsonl."))] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help=_help("data.seed", "The same arguments and seed give byte-identical files."))] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "--output-dir", "-o", callback=_named_folder, help="Output folder (default data/TASK).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a data set already in the folder.")] = False,
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML config whose \\[data] table gives defaults; flags win.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help=SET_HELP)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON on stdout.")] = False,
) -> None:
    """Generate a data set: disjoint, balanced JSONL splits.

    Writes train/val/test JSONL and manifest.json (counts, format, sha256 of each file).

    Sampling is balanced over operand lengths and (add/sub) carry counts; records hold prompt, answer,
    target, steps and meta (see docs/data-format.md).

    Example: mct gen add --steps --instances 50000 --max-digits 4 --ood-digits 5-6 --out data/add4
    """
    from mct.config import resolve_config
    from mct.data.generate import write_dataset

    given = [flag for flag, value in (("--instances", instances), ("--val", val), ("--test", test)) if value is not None]
    if task == "mod" and given:
        raise MctError(f"the mod task splits every P*P pair by --train-fraction (the rest is halved into val and "
                       f"test), so {', '.join(given)} cannot be set; drop {'it' if len(given) == 1 else 'them'}")
    # flags that shape only the other tasks' data (or only mod's) would be ignored: say so instead
    digit_flags = {"--steps/--no-steps": steps, "--ood-digits": ood_digits,
                   "--pad-to-longer/--no-pad-to-longer": pad_to_longer, "--complement/--no-complement": complement}
    mod_flags = {"--modulus": modulus, "--residue-tokens/--no-residue-tokens": residue_tokens,
                 "--train-fraction": train_fraction}
    unused = [flag for flag, value in (digit_flags if task == "mod" else mod_flags).items() if value is not None]
    if unused:
        raise MctError(f"{', '.join(unused)} {'does' if len(unused) == 1 else 'do'} not apply to the {task} task; "
                       f"drop {'it' if len(unused) == 1 else 'them'}")
    ood = None
    if ood_longest is not None:  # `--ood-digits 11 40`: click reads the 40 as a second argument
        if ood_digits is None or not ood_digits.strip().isdigit():
            raise MctError(f"unexpected argument {ood_longest}; did you mean --ood-digits C {ood_longest}?")
        ood_digits = f"{ood_digits.strip()}-{ood_longest}"
    if ood_digits is not None:
        parts = ood_digits.replace(",", "-").split("-")
        if len(parts) == 1:
            parts = parts * 2
        if len(parts) != 2 or not all(p.strip().isdigit() and len(p.strip()) <= 6 for p in parts):
            raise MctError(f"--ood-digits must look like C-D (e.g. 4-5), got {ood_digits!r}")
        ood = [int(p) for p in parts]
    flags = _flags(GEN_FLAGS, instances=instances, val=val, test=test, min_digits=min_digits,
                   max_digits=max_digits, steps=steps, answer_order=answer_order, pad=pad,
                   pad_to_longer=pad_to_longer, complement=complement, modulus=modulus, residue_tokens=residue_tokens,
                   train_fraction=train_fraction, ood_digits=ood, seed=seed)
    flags["data.task"] = (task, "argument TASK")
    data_config = resolve_config(config, flags=flags, sets=set_ or ()).data
    out_dir = out if out is not None else Path("data") / data_config.task
    check_writable(out_dir, "output folder", folder=True)
    from mct.cli_progress import CountProgress

    with CountProgress(err_console, f"writing {out_dir}", min_total=200_000, enabled=err_console.is_terminal) as bar:
        manifest = write_dataset(data_config, out_dir, force=force, progress=bar)

    if json_out:
        print(json.dumps(manifest, indent=2))
    fmt = manifest["format"]
    complement_note = ", answers in ten's complement with the sign last"
    digits = (f"mod {manifest['modulus']}, train fraction {manifest['train_fraction']}" if data_config.task == "mod"
              else f"{manifest['min_digits']}-{manifest['max_digits']} digits")
    err_console.print(f"[bold green]wrote[/] {escape(str(out_dir))}: {data_config.task}, {digits}, "
                      f"{'steps' if fmt['use_steps'] else 'no steps'}, {fmt['answer_order']} answers"
                      f"{', zero-padded to ' + str(fmt['operand_width']) + ' digits' if fmt.get('operand_width') else ''}"
                      f"{', zero-padded to the longer operand' if fmt.get('pad_to_longer') else ''}"
                      f"{complement_note if fmt.get('sub_complement') else ''}"
                      f"{', one token per residue' if fmt.get('residue_tokens') else ''}"
                      f", seed {manifest['seed']}",
                      highlight=False)
    for name, filename in manifest["files"].items():
        err_console.print(f"  {escape(filename):<16} {manifest['counts'][name]:>10,} records", highlight=False)
    err_console.print(f"  {'manifest.json':<16} splits disjoint, sha256 of each file", highlight=False)


@app.command()
def train(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config (default: configs/default.toml; on --resume: the run's own).")] = None,
    device: Annotated[Optional[str], typer.Option(help=_train_help("train.device"))] = None,
    ffn: Annotated[Optional[str], typer.Option(help=_train_help("model.ffn_type", "gelu, geglu or swiglu."))] = None,
    d_model: Annotated[Optional[int], typer.Option(help=_train_help("model.d_model"))] = None,
    layers: Annotated[Optional[int], typer.Option(help=_train_help("model.num_layers"))] = None,
    heads: Annotated[Optional[int], typer.Option(help=_train_help("model.num_heads"))] = None,
    d_ff: Annotated[Optional[int], typer.Option(help=_train_help("model.d_ff"))] = None,
    lr: Annotated[Optional[float], typer.Option(help=_train_help("train.lr"))] = None,
    batch_size: Annotated[Optional[int], typer.Option(help=_train_help("train.batch_size"))] = None,
    max_steps: Annotated[Optional[int], typer.Option(help=_train_help("train.max_steps"))] = None,
    seed: Annotated[Optional[int], typer.Option(help=_train_help("train.seed"))] = None,
    precision: Annotated[Optional[str], typer.Option(help=_train_help("train.precision"))] = None,
    compile: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help=_train_help("train.compile"))] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help=SET_HELP)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "--output-dir", callback=_named_folder, help="Run folder (default: train.out_dir, else a new folder under runs/).")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Train on a folder written by `mct gen` (its splits and format).")] = None,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="With --data: skip the check of each split against manifest.json's sha256.")] = False,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the run in this folder from its last.pt (its config, under env and flags).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite a run folder that already holds a run.")] = False,
    seeds: Annotated[Optional[str], typer.Option("--seeds", help="Train once per seed (0-7 or 0,3,5), one run folder each (OUT/seed-N), and print a table of their results. The same command again goes on where it stopped: finished seeds are kept, an interrupted one resumes.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
) -> None:
    """Train a model and evaluate it on a held-out test set.

    With no arguments: 3-digit addition from configs/default.toml, on a 2-core CPU in about 10 seconds (300 steps to 100% test).
    Writes last.pt, best.pt, config.toml, metrics.jsonl, curves.png and eval.json to the run folder.
    Values: defaults < --config < MCT_* environment < --data < flags < --set (on --resume the run's
    config.toml replaces the defaults and --config's file sits above it).

    Example: mct train --device cuda --ffn geglu --out runs/geglu

    Example: mct train --set train.warmup_steps=50 --set model.norm_type=rmsnorm --out runs/rms

    Example: mct gen add --steps --out data/add && mct train --data data/add --out runs/add-steps

    Example: mct train --config configs/add10-tiny.toml --seeds 0-7 --out runs/tiny
    """
    from mct.config import default_config_path, resolve_config
    from mct.data.format import slow_format_fix
    from mct.data.generate import data_config_from_folder
    from mct.fileio import folder_lock
    from mct.train import stop_on_interrupt, torch_threads, train as run_training
    from mct.train.distributed import is_main_process
    from mct.train.run_folder import new_run_dir

    if resume is not None and out is not None and out != resume:
        raise MctError("--resume DIR continues DIR; do not also give a different --out")
    if seeds is not None:
        if resume is not None:
            raise MctError("--resume continues one run; a --seeds sweep goes on where it stopped when the same --seeds "
                           "command runs again (or resume one seed with --resume OUT/seed-N)")
        if seed is not None:
            raise MctError("--seeds gives each run its seed; drop --seed")
        seed_list = parse_seeds(seeds)
    flags = _flags(TRAIN_FLAGS, device=device, ffn=ffn, d_model=d_model, layers=layers, heads=heads, d_ff=d_ff,
                   lr=lr, batch_size=batch_size, max_steps=max_steps, seed=seed, precision=precision,
                   compile=compile)
    folder = data_config_from_folder(data, verify=not no_verify) if data is not None else None
    cfg = resolve_config(config if (config is not None or resume is not None) else default_config_path(),
                         resume=resume, data=folder, data_source=f"data folder {data}", flags=flags,
                         sets=set_ or ())
    if folder is not None:
        _check_folder_kept(cfg.data, folder, data)
    main_process = is_main_process()
    run_dir = resume or out or cfg.train.out_dir or new_run_dir(cfg.data.task)
    if main_process:
        check_writable(run_dir, "run folder", folder=True)
    from mct.doctor import check_training_fits

    check_training_fits(cfg)
    from mct.cli_progress import TrainProgress

    if seeds is not None:
        if (Path(run_dir) / "last.pt").exists():  # OUT/seed-N would nest inside a run folder
            raise MctError(f"{run_dir} holds a run; --seeds writes OUT/seed-N for each seed: choose another --out")
        _train_seeds(cfg, run_dir, seed_list, force, json_out)
        return
    with (folder_lock(run_dir) if main_process else contextlib.nullcontext()), \
            TrainProgress(err_console, enabled=main_process) as progress, stop_on_interrupt() as stop, \
            torch_threads(cfg.train.num_threads):
        result = run_training(cfg, run_dir, resume=resume is not None, force=force, progress=progress.update,
                              stop=stop)
    if not main_process:
        return
    if json_out:
        print(json.dumps(result.to_dict(), indent=2))
    unpadded = not (cfg.data.pad_operands or cfg.data.pad_to_longer or cfg.model.place_values)
    no_positions = not cfg.model.use_rope and cfg.model.absolute_positions == "none"
    _render_train_summary(result, cfg.train.target_accuracy, slow_format_fix(
        cfg.data.task, cfg.data.use_steps, unpadded, cfg.data.step_masking_mode, no_positions,
        plain_answers=cfg.data.answer_order == "plain"))
    if result.stopped == "interrupted":
        raise typer.Exit(130)


# a data folder's settings a run may change (seeds, the unused stream's mixes, a longer context); any other
# (task, format, digits, split files) changed by a flag or --set would train on data the folder does not hold
FOLDER_ADJUSTABLE = ("seed", *MIXES, "max_seq_len")


def _check_folder_kept(data_config, folder: dict, data: Path) -> None:
    for key in folder:
        if key not in FOLDER_ADJUSTABLE and str(getattr(data_config, key)) != str(folder[key]):
            raise MctError(f"data.{key} = {getattr(data_config, key)!r} contradicts the data folder {data} "
                           f"({key} = {folder[key]!r}); drop that setting, or write a folder with it (mct gen)")


def _train_seeds(cfg, run_dir: Path, seeds: list[int], force: bool, json_out: bool) -> None:
    """One run per seed, one after the other, each in RUN/seed-N; then one table of their results."""
    from rich.table import Table

    from mct.cli_progress import TrainProgress
    from mct.train import stop_on_interrupt, torch_threads, train_seeds

    with TrainProgress(err_console) as progress, stop_on_interrupt() as stop, torch_threads(cfg.train.num_threads):
        results = train_seeds(cfg, run_dir, seeds, force=force, progress=progress.update, stop=stop)
    if json_out:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    table = Table(title=f"mct train --seeds ({len(results)} runs in {escape(str(run_dir))})")
    for column in ("seed", "steps", "stopped", "best val", "test", "hard", "train s", "run folder"):
        table.add_column(column)
    for seed, r in zip(seeds, results):
        test = r.test or {}
        hard = test.get("hard") or {}
        table.add_row(str(seed), str(r.steps), r.stopped, _pct(r.best_val_exact_match),
                      _pct(test.get("exact_match")), _pct(hard.get("exact_match")), f"{r.train_s:.0f}",
                      escape(r.run_dir))
    err_console.print(table)
    if any(r.stopped == "interrupted" for r in results):
        raise typer.Exit(130)


def parse_seeds(text: str) -> list[int]:
    """'0-7' -> [0..7], '0,3,5' -> [0, 3, 5]; MctError otherwise."""
    seeds: list[int] = []
    wrong = MctError(f"--seeds {text!r}: give 1 to 1000 distinct seeds from 0 to {MAX_SEED}, e.g. 0-7")
    try:
        for part in text.split(","):
            low_text, dash, high_text = part.strip().partition("-")
            low = int(low_text)
            high = int(high_text) if dash else low
            if not 0 <= low <= high <= MAX_SEED or len(seeds) + high - low >= 1000:
                raise wrong  # checked before the range is built: '0-99999999999' must not fill the memory
            seeds += range(low, high + 1)
    except ValueError:
        raise MctError(f"--seeds {text!r} is not a list of seeds; write 0-7 or 0,3,5") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise wrong
    return seeds


def _render_train_summary(result, target: float | None = None, fix: str | None = None) -> None:
    from rich.table import Table

    table = Table(title="mct train", show_header=False)
    table.add_column("item", style="bold")
    table.add_column("value")
    reasons = {"target_reached": "reached the target accuracy", "max_steps": "reached max_steps",
               "interrupted": "interrupted (resume with --resume)"}
    reason = reasons[result.stopped]
    if result.target_step is not None:  # a cooldown followed the target
        reason = (f"reached the target accuracy at step {result.target_step}, then cooled down"
                  if result.stopped == "target_reached" else f"{reason}, cooling down after the target")
    table.add_row("stopped", f"after {result.steps} steps: {reason}")
    best = result.best_val_exact_match
    if result.stopped == "max_steps" and target is not None and result.target_step is None and best is not None \
            and best < target:  # say how to go on rather than leave a half-trained model looking finished
        train_on = f"train on with mct train --resume {result.run_dir} --max-steps {2 * result.steps}"
        if fix is not None:  # a format that learns slowly (mul without steps) or has a recipe (mod)
            train_on = f"{train_on} {fix}"
        table.add_row("target", escape(f"not reached: best validation {best:.2%}, target {target:.2%}; {train_on}"))
    table.add_row("wall time", f"{result.wall_s:.1f} s on {result.device} ({result.precision}, "
                  f"{result.world_size} process{'es' if result.world_size > 1 else ''})")
    table.add_row("model", f"{result.parameters:,} parameters")
    table.add_row("unique parameters", f"{result.unique_parameters:,} (tied and shared tensors counted once)")
    table.add_row("throughput", f"{result.tokens_per_s:,.0f} tokens/s")
    if result.cuda_graphs_fallback:
        table.add_row("cuda graph", escape(f"capture failed, trained without it: {result.cuda_graphs_fallback}"))
    if result.best_val_exact_match is not None:
        table.add_row("best val exact match", f"{result.best_val_exact_match:.2%}")
    if result.test is not None:
        table.add_row("test exact match", f"[bold]{result.test['exact_match']:.2%}[/] of {result.test['n']:,} problems")
        hard = result.test.get("hard")
        if hard:
            table.add_row("hard split", f"{hard['exact_match']:.2%} of {hard['n']:,} (carry chains, boundaries, zeros)")
    if result.num_truncated:
        table.add_row("dropped (too long)", f"{result.num_truncated:,} examples longer than data.max_seq_len")
    table.add_row("checkpoint", escape(result.checkpoint))
    if result.best_checkpoint:
        table.add_row("best checkpoint", escape(result.best_checkpoint))
    table.add_row("run folder", escape(result.run_dir))
    err_console.print(table)


@app.command(name="eval")
def eval_(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (.pt) written by `mct train`.")],
    data: Annotated[Path, typer.Argument(help="A JSONL file of records (prompt, answer), or a data folder from `mct gen`.")],
    split: Annotated[Optional[str], typer.Option(help="Split to read from a data folder: test (the default), val, test_ood or hard.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Problems decoded together.")] = 256,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    limit: Annotated[Optional[int], typer.Option(min=1, help="Evaluate only the first N records.")] = None,
    errors: Annotated[Optional[Path], typer.Option("--errors", help="Write the failures as JSONL (prompt, expected, got).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing --errors or --plot file.")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Decode without the KV cache (slower; for checks).")] = False,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Draw exact match by operand length into this PNG (the length-generalisation curve).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object on stdout.")] = False,
) -> None:
    """Evaluate a checkpoint: exact match and where it fails.

    Batched greedy decoding; reports exact match, per-digit accuracy, accuracy by operand lengths,
    carries and longest carry chain, step correctness and malformed outputs.

    Records need only `prompt` and `answer`; everything else is recomputed, so external test sets work.

    Example: mct eval runs/add/best.pt data/add --split test_ood --errors failures.jsonl

    Example: mct eval runs/abacus/best.pt data/add10 --split test_ood --plot length.png
    """
    from mct.data.dataset import read_records
    from mct.evaluate import evaluate_records
    from mct.fileio import atomic_write_text
    from mct.predictor import Predictor
    from mct.tokenizer import Tokenizer

    path = _eval_data_path(data, split)
    if errors is not None:
        _check_output_file(errors, "--errors", force, (path, checkpoint))
    if plot is not None:
        _check_output_file(plot, "--plot", force, (path, checkpoint), FIGURE_SUFFIXES)
    predictor = Predictor.from_checkpoint(checkpoint, device=device)
    # records in any format (a residue model reads "060+060=" as "60+60="): check the characters here, the
    # model's own tokens when each prompt is rendered in its format; evaluate_records checks the answers
    records = read_records(path, tokenizer=Tokenizer())
    if not records:
        raise MctError(f"{path} holds no records; pass a JSONL file with one {{\"prompt\", \"answer\"}} object a line")
    from mct.cli_progress import CountProgress

    with CountProgress(err_console, f"eval {path.name}", min_total=1000) as progress:
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
    if plot is not None:
        from mct.figures import plot_by_length

        plot_by_length(report.by_length, plot, title=f"{checkpoint} on {path.name}",
                       trained_up_to=predictor.config.data.max_digits if predictor.config else None)
    if json_out:
        print(json.dumps(result, indent=2))
        return
    _render_eval(result)
    if errors is not None:
        err_console.print(f"wrote {len(report.errors)} failure(s) to {escape(str(errors))}", highlight=False,
                          soft_wrap=True)
    if plot is not None:
        err_console.print(f"wrote exact match by operand length to {escape(str(plot))}", highlight=False,
                          soft_wrap=True)


EVAL_SPLITS = ("test", "val", "test_ood", "hard")


def _eval_data_path(data: Path, split: str | None) -> Path:
    if data.is_file() and split is not None:
        raise MctError(f"--split chooses a file in a data folder, and {data} is a file; drop --split or pass the folder")
    split = "test" if split is None else split
    if split not in EVAL_SPLITS:
        raise MctError(f"--split {split!r} is not one of {', '.join(EVAL_SPLITS)}")
    if data.is_dir():
        from mct.data.generate import folder_split

        path = folder_split(data, split)
        if not path.is_file():
            found = ", ".join(sorted(p.stem for p in data.glob("*.jsonl") if p.stem in EVAL_SPLITS)) or "none"
            raise MctError(f"data folder {data} has no {split}.jsonl (splits there: {found}); "
                           "choose one with --split or run `mct gen`")
        return path
    if not data.is_file():
        raise MctError(f"data {data} does not exist; pass a JSONL file or a data folder written by `mct gen`")
    return data


def _pct(share: float | None) -> str:
    """0.9995 -> '99.95%'; None (an interrupted run has no test, a run stopped before its first
    evaluation no best) -> '-'."""
    return "-" if share is None else f"{100 * share:.2f}%"


def _render_eval(result: dict) -> None:
    from rich.table import Table

    summary = Table(title="mct eval", show_header=False)
    summary.add_column("item", style="bold")
    summary.add_column("value")
    summary.add_row("checkpoint", escape(result["checkpoint"]))
    summary.add_row("unique parameters", f"{result['unique_parameters']:,}")
    summary.add_row("data", escape(result["data"]))
    summary.add_row("format", f"{result['task']}, answer {result['answer_order']}"
                    + (", with steps" if result["steps"] is not None or result["steps_supplied"] else "")
                    + (", ten's complement (the sign last)" if result.get("sub_complement") else ""))
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
    for key, title, label in (("by_length", "by operand length", "longer"),
                              ("by_digits", "by operand lengths", "a,b"),
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
    temperature: Annotated[Optional[float], typer.Option(min=0.0, callback=_finite, help="0 = greedy (default: MCT_GENERATE__TEMPERATURE, else the checkpoint's \\[generate] temperature).")] = None,
    top_k: Annotated[Optional[int], typer.Option(min=1, help="Sample among the k most likely tokens.")] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option(min=1, help="Tokens to generate at most (default: until <eos> or the context is full).")] = None,
    seed: Annotated[Optional[int], typer.Option(min=0, max=MAX_SEED, help="Seed for sampling (temperature > 0).")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Show the top candidates and their probabilities for every generated token.")] = False,
    top: Annotated[Optional[int], typer.Option(min=1, help="Candidates shown per token with --explain (default 5).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as one JSON object on stdout.")] = False,
) -> None:
    """Complete prompts with a checkpoint and show the answers.

    Shows the raw completion and the answer in natural order.

    Example: mct generate runs/add/best.pt 12+34= 999+1= --explain
    """
    from mct.config import resolve_generate
    from mct.device import seed_everything
    from mct.predictor import Predictor

    predictor = Predictor.from_checkpoint(checkpoint, device=device)
    top_k_flag = top_k
    settings = resolve_generate(getattr(predictor.config, "generate", None), {
        "generate.temperature": (temperature, "--temperature"), "generate.top_k": (top_k, "--top-k"),
        "generate.max_new_tokens": (max_new_tokens, "--max-new-tokens")})
    temperature, top_k, max_new_tokens = settings.temperature, settings.top_k, settings.max_new_tokens
    # a flag that would change nothing is refused, not ignored
    if top is not None and not explain:
        raise MctError("--top sets how many candidates --explain shows; add --explain or drop --top")
    for flag, value in (("--top-k", top_k_flag), ("--seed", seed)):
        if value is not None and not temperature:
            raise MctError(f"{flag} applies to sampling, and with temperature 0 decoding is greedy; pass "
                           f"--temperature T (T > 0) or drop {flag}")
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
                prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_n=top or 5)]
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
        got = escape(entry["answer"] or "") if scored == "answer" else escape("".join(step + "|" for step in entry["steps"]))
        if entry["malformed"] is not None:
            got = f"[red]malformed: {escape(entry['malformed'])}[/]"
        table.add_row(escape(entry["prompt"] + entry["supplied"]), escape(entry["completion"]), got,
                      escape(entry["expected"] or "?"), mark)
    err_console.print(table, highlight=False)
    for entry in results:
        if entry.get("note"):
            err_console.print(f"note: {escape(entry['note'])}", highlight=False)
    for entry in results:
        if "explain" not in entry:
            continue
        steps = Table(title=f"{escape(entry['prompt'])} token by token")
        steps.add_column("#", justify="right")
        steps.add_column("token")
        steps.add_column("p", justify="right")
        steps.add_column("top candidates")
        for index, choice in enumerate(entry["explain"]):
            candidates = "  ".join(f"{escape(c['token'])} {c['probability']:.3f}" for c in choice["candidates"])
            steps.add_row(str(index), escape(choice["token"]), f"{choice['probability']:.3f}", candidates)
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
    json_out: Annotated[bool, typer.Option("--json", help="Print tokens and weights \\[layer]\\[head]\\[query]\\[key] as JSON on stdout.")] = False,
) -> None:
    """Show a prompt's attention patterns, one heatmap per head.

    The prompt plus the model's own completion; rows = query token, columns = key token; all layers
    and heads unless --layer/--head.

    Example: mct attn runs/add/best.pt 12+34= --layer 1 --out attn.png
    """
    from mct.analysis.attention import render_attention, save_attention_figure, select_heads
    from mct.predictor import Predictor

    if out is not None:
        _check_output_file(out, "--out", force, (checkpoint,), FIGURE_SUFFIXES)
    predictor = Predictor.from_checkpoint(checkpoint, device=device)
    maps = predictor.attention(predictor.normalize_prompt(prompt), max_new_tokens=max_new_tokens)
    layers, heads = select_heads(maps.num_layers, maps.num_heads, layer, head)
    if out is not None:
        save_attention_figure(maps.tokens, maps.weights, out, layers=layers, heads=heads,
                              title=f"{maps.prompt} {maps.completion}")
    if json_out:
        print(json.dumps(maps.to_dict(layers, heads)))
        return
    err_console.print(f"[bold]{escape(maps.prompt)}[/] -> {escape(maps.completion)}   "
                      f"({maps.num_layers} layers x {maps.num_heads} heads; E = <eos>)", highlight=False)
    for table in render_attention(maps.tokens, maps.weights, layers, heads):
        err_console.print(table)
    if out is not None:
        err_console.print(f"wrote {escape(str(out))}", highlight=False, soft_wrap=True)


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


@app.command()
def doctor(
    device: Annotated[Optional[str], typer.Option(help="Device to check and size for: auto, cpu, cuda, cuda:N, mps (default: the config's train.device, so MCT_TRAIN__DEVICE too).")] = None,
    config: Annotated[Optional[Path], typer.Option(help="Config whose model is sized (default: configs/default.toml).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help=SET_HELP)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")] = False,
) -> None:
    """Check torch, GPUs and memory; estimate the largest batch.

    Reports Python, the torch build, CUDA/MPS, CPU and GPU memory, and the largest batch that fits.

    With --device cuda it runs a real matrix product on the GPU and exits 1 when CUDA is not usable.

    Example: mct doctor --device cuda --config configs/gpu-small.toml
    """
    import torch

    from mct.config import default_config_path, resolve_config
    from mct.doctor import collect_report

    cfg = resolve_config(config if config is not None else default_config_path(), sets=set_ or ())
    named = "--device" if device is not None else "train.device"
    device = device if device is not None else cfg.train.device
    wants_cuda = device.strip().lower().startswith("cuda")
    if wants_cuda and not torch.cuda.is_available():
        report = collect_report(cfg, "cpu")
        report["requested_device"] = device
        report["ok"] = False
        _render_doctor(report, json_out)
        err_console.print(f"[bold red]error:[/] {named} {escape(device)}: CUDA is not usable: "
                          f"{escape(report['cuda_reason'])}",
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


def _printable(text: str) -> str:
    """`text` safe for any terminal: bytes that were not UTF-8 (surrogate escapes) shown as \\xNN."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(_printable(message))}", highlight=False, soft_wrap=True)


# Core messages name the arguments of the library call; these are the flags that pass them.
ARGUMENT_FLAGS = {"train": {"resume=True": "--resume RUN", "force=True": "--force", "another run_dir": "another --out",
                            "verify=False": "--no-verify"},
                  "gen": {"force=True": "--force", "another output folder": "another --out"}}


def _with_flags(message: str, command: str | None) -> str:
    """A core message names config keys (`train.batch_size`) or call arguments; add the flags that set them."""
    import re

    from mct.config import config_keys

    for argument, flag in ARGUMENT_FLAGS.get(command, {}).items():
        message = message.replace(argument, flag)
    if command not in COMMAND_FLAGS or "--" in message:
        return message
    named = [key for key in config_keys() if re.search(rf"(?<![\w.]){re.escape(key)}(?!\w)", message)]
    if not named:
        return message
    flags = [f"{COMMAND_FLAGS[command][key]}" if key in COMMAND_FLAGS[command] else f"--set {key}=..."
             for key in named]
    return f"{message} (set with {', '.join(flags)})"


def _command(argv: Optional[list[str]]) -> str | None:
    args = sys.argv[1:] if argv is None else argv
    return next((a for a in args if not a.startswith("-")), None)


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: user mistakes become one line on stderr and exit code 2; bugs keep tracebacks."""
    import errno

    try:
        result = app(args=argv, prog_name="mct", standalone_mode=False)
    except MctError as exc:
        _error(str(exc) if isinstance(exc, ConfigError) else _with_flags(str(exc), _command(argv)))
        sys.exit(2)
    except _UsageError as exc:
        if not exc.format_message():  # `mct` alone: the help was shown
            sys.exit(2)
        command = exc.ctx.command_path if exc.ctx else "mct"
        option = getattr(exc, "option_name", "") or ""
        if option[1:2].isdigit():  # "-5+3=": a prompt the parser took for an option
            _error(f"{command}: {option} looks like a prompt with a negative number, which the parser reads as an "
                   "option; mct's problems have non-negative operands (a subtraction model writes -2 for 3-5=)")
        else:
            _error(f"{command}: {exc.format_message()} (see `{command} --help`)")
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except UnicodeDecodeError as exc:
        # An input file that is not UTF-8 text (a binary file given as data, say). The reader should
        # name the file; until every reader does, this says what is wrong instead of a traceback.
        _error(f"an input file is not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} at offset "
               f"{exc.start}); data, config and prompt files must be UTF-8 text (was a checkpoint given as data?)")
        sys.exit(2)
    except OSError as exc:
        # The system refused a read or write that no check could foresee (a full disk mid-run, a file
        # removed under us): one line naming the file, not a traceback. Other errors are bugs.
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR,
                             errno.EISDIR, errno.ENOENT, errno.ENAMETOOLONG, errno.EIO):
            raise
        from mct.fileio import describe_os_error

        where = f" {exc.filename}" if exc.filename else ""
        _error(f"cannot access{where}: {describe_os_error(exc)}")
        sys.exit(2)
    sys.exit(result if isinstance(result, int) else 0)


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (.pt) written by `mct train`.")],
    out: Annotated[Path, typer.Argument(help="Output file (.pt) for the exported model.")],
    to: Annotated[str, typer.Option("--to", help="Target library: transformer-lens.")] = "transformer-lens",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the export summary as JSON on stdout.")] = False,
) -> None:
    """Export a model to TransformerLens.

    OUT holds {"cfg": HookedTransformerConfig arguments, "state_dict"} (tensors and plain data). The export
    is checked: the HookedTransformer's logits on a batch of the model's own problems must equal mct's
    within 1e-4. Needs the tl extra: pip install 'mct\\[tl]'.

    Example: mct export runs/demo/best.pt --to transformer-lens runs/demo/demo_tl.pt
    """
    from mct.analysis.problems import problem_set, sample_operands
    from mct.checkpoint import load_checkpoint
    from mct.data.format import DataFormat
    from mct.export import export_transformer_lens

    if to.strip().lower().replace("_", "-") not in ("transformer-lens", "transformerlens", "tl"):
        raise MctError(f"--to {to}: the only export target is transformer-lens")
    _check_output_file(out, "OUT", force, (checkpoint,))
    loaded = load_checkpoint(checkpoint, device="cpu")
    fmt = DataFormat.from_dict(loaded.data_format)
    problems = problem_set(fmt, loaded.tokenizer, sample_operands(fmt, loaded.config.data, 64),
                           loaded.model.config.max_seq_len)
    result = export_transformer_lens(loaded.model, out, check_ids=problems.input_ids)
    if json_out:
        print(json.dumps(result, indent=2))
        return
    err_console.print(f"wrote {out}: HookedTransformer with {result['cfg']['n_layers']} layers, "
                      f"{result['cfg']['positional_embedding_type']} positions; logits on {len(problems)} problems "
                      f"within {result['max_abs_logit_diff']:.1e} of mct's", highlight=False, soft_wrap=True)


@app.command()
def analyze(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (.pt) written by `mct train`.")],
    out: Annotated[Path, typer.Option("--out", "-o", callback=_named_folder, help="Report folder: report.json, PNG figures, index.html.")],
    problems: Annotated[int, typer.Option(min=20, max=MAX_ANALYZE_PROBLEMS, help="Problems of the model's task to analyse.")] = 512,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Seed of the problem sample and the control heads.")] = 0,
    checkpoints: Annotated[Optional[list[Path]], typer.Option("--checkpoints", help="mod: the run's checkpoints (files or folders; default: the .pt files beside CKPT and in its checkpoints/ folder).")] = None,
    max_checkpoints: Annotated[int, typer.Option(min=2, help="mod: at most this many checkpoints on the progress curve.")] = 40,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "cpu",
    force: Annotated[bool, typer.Option("--force", help="Overwrite a report already in --out.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print report.json on stdout too.")] = False,
) -> None:
    """Report how an arithmetic model computes.

    Per answer digit: the heads that attend to the aligned operand digits, zero/mean ablation of every
    head and a causal check of the heads it names, direct logit attribution, carry probes; for a mod model
    the key Fourier frequencies and, over the run's saved checkpoints, train/test loss with restricted and
    excluded loss. Open OUT/index.html (offline).

    Example: mct analyze runs/demo/best.pt --out runs/demo/analysis
    """
    from mct.analysis.report import analyze as run_analysis, existing_report
    from mct.device import resolve_device

    check_writable(out, "--out", folder=True)  # before the work, not after it
    existing = existing_report(out)
    if existing and not force:
        raise MctError(f"{out} already holds a report ({', '.join(existing)}); pass --force to overwrite it")
    with err_console.status("analysing") as status:
        report = run_analysis(checkpoint, out, problems=problems, seed=seed, checkpoints=checkpoints,
                              max_checkpoints=max_checkpoints, device=str(resolve_device(device)),
                              progress=lambda message: status.update(f"analysing: {message}"))
    if json_out:
        print(json.dumps(report, indent=1))
    for line in report["findings"]:
        err_console.print(f"- {line}", highlight=False, soft_wrap=True)
    err_console.print(f"wrote {out / 'index.html'} and {len(report['figures'])} figures", highlight=False,
                      soft_wrap=True)
