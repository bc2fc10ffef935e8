"""Every `mct` command line in README.md and docs/*.md parses, and the cheap ones run as written.

Commands come from shell blocks (```bash, ```console, plain ```): in a block with `$ ` prompts the
prompt lines, otherwise every unindented line; `\\` continuations are joined, `# comments` dropped,
`a && b` split, `VAR=value` prefixes kept as environment, and `python -m mct ...` / `torchrun ... -m mct
...` reduced to the argv after `mct`. Inline code spans that are whole commands (with a flag, and no
placeholder such as CKPT or `...`) are parse-checked too.

Every command is parsed by the real click command (unknown flags, bad choices and wrong types fail,
naming the file and line). Then, in a fresh folder with `configs/` beside it, these run through
`mct.cli.main` and must exit 0: `--help`, `doctor` (exit 1 expected for `--device cuda` without CUDA),
`gen` of at most 20,000 records, and `eval`/`generate`/`attn` on a tiny trained checkpoint copied to the
path the doc names (an eval data file is written there too). A command whose documented output is an
`error:` line must exit 2. `train` and large `gen` runs are parse-checked only (training is tested in
test_cli_train.py and test_train.py).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import typer.main

from mct.cli import app, main

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_FENCES = {"", "bash", "console", "sh", "shell", "shell-session"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
MENTIONS_MCT = re.compile(r"(?:^|[\s/])mct(?:\s|$)")
PLACEHOLDER = re.compile(r"\.\.\.|\b[A-Z][A-Z_]+\b")  # CKPT, DIR, NAME, PROMPT...
GEN_RUN_LIMIT = 20_000
EVAL_RECORDS = [{"prompt": "12+34=", "answer": "46"}, {"prompt": "999+1=", "answer": "1000"},
                {"prompt": "455+38=", "answer": "493"}, {"prompt": "7+5=", "answer": "12"}]


@dataclass(frozen=True)
class DocCommand:
    where: str                           # "docs/cli.md:173"
    argv: tuple[str, ...]                # after `mct`
    env: tuple[tuple[str, str], ...] = ()
    inline: bool = False                 # from a `code span` in prose: parse-checked only
    expects_error: bool = False          # the doc shows `error: ...` as its output

    def __str__(self) -> str:
        return f"{self.where}: mct {shlex.join(self.argv)}"


def mct_argv(tokens: list[str]) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]] | None:
    """(argv after `mct`, env assignments) of one simple command, or None when it does not run mct."""
    env = []
    while tokens and ENV_ASSIGNMENT.match(tokens[0]):
        name, _, value = tokens.pop(0).partition("=")
        env.append((name, value))
    if not tokens:
        return None
    if tokens[0] == "mct" or tokens[0].endswith("/mct"):
        return tuple(tokens[1:]), tuple(env)
    for i in range(len(tokens) - 1):  # python -m mct ..., torchrun --nproc-per-node 2 -m mct ...
        if tokens[i] == "-m" and tokens[i + 1] == "mct":
            return tuple(tokens[i + 2:]), tuple(env)
    return None


def commands_in_line(line: str) -> list[tuple[tuple[str, ...], tuple[tuple[str, str], ...]]]:
    tokens = shlex.split(line, comments=True)
    commands, current = [], []
    for token in tokens + ["&&"]:
        if token == "&&":
            found = mct_argv(current)
            if found is not None:
                commands.append(found)
            current = []
        else:
            current.append(token)
    return commands


def extract_commands(text: str, name: str) -> list[DocCommand]:
    """Every mct command of a Markdown text, from shell blocks and from whole-command inline code spans."""
    lines = text.splitlines()
    commands: list[DocCommand] = []
    prose = list(lines)  # the text outside fences, for inline spans (fence lines blanked, numbering kept)
    i = 0
    while i < len(lines):
        opening = re.match(r"^(\s*)```(\S*)\s*$", lines[i])
        if not opening:
            i += 1
            continue
        indent, language = opening.group(1), opening.group(2).lower()
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        body = [(n + 1, line[len(indent):] if line.startswith(indent) else line.lstrip())
                for n, line in zip(range(i + 1, end), lines[i + 1:end])]
        for n in range(i, min(end + 1, len(lines))):
            prose[n] = ""
        if language in SHELL_FENCES:
            commands += _block_commands(body, name)
        i = end + 1
    prose_text = "\n".join(prose)
    for match in re.finditer(r"`([^`\n]*(?:\n[^`\n]*)?)`", prose_text):
        span = " ".join(match.group(1).split())
        if (not span.startswith(("mct ", "torchrun ", "python -m mct ")) or PLACEHOLDER.search(span)
                or not any(token.startswith("-") for token in span.split())):  # `mct gen` names a command
            continue
        line_number = prose_text[: match.start()].count("\n") + 1
        for argv, env in commands_in_line(span):
            commands.append(DocCommand(f"{name}:{line_number}", argv, env, inline=True))
    return commands


def _block_commands(body: list[tuple[int, str]], name: str) -> list[DocCommand]:
    prompted = any(line.startswith("$ ") for _, line in body)
    commands = []
    k = 0
    while k < len(body):
        number, line = body[k]
        k += 1
        if prompted:
            if not line.startswith("$ "):
                continue
            line = line[2:]
        elif not line or line[0].isspace():
            continue
        while line.rstrip().endswith("\\") and k < len(body):  # continuation lines
            line = line.rstrip()[:-1] + " " + body[k][1].strip()
            k += 1
        if not MENTIONS_MCT.search(line.split("#")[0]) and "-m mct" not in line:
            continue
        output = next((out for _, out in body[k:] if out.strip()), "") if prompted else ""
        expects_error = output.startswith("error:")
        for argv, env in commands_in_line(line):
            commands.append(DocCommand(f"{name}:{number}", argv, env, expects_error=expects_error))
    return commands


def all_doc_commands() -> list[DocCommand]:
    commands = []
    for path in DOC_FILES:
        commands += extract_commands(path.read_text(), path.relative_to(ROOT).as_posix())
    return commands


DOC_COMMANDS = all_doc_commands()


def parse(command: DocCommand):
    """(subcommand name, its click context with typed params), or the parse error as an AssertionError."""
    group = typer.main.get_command(app)
    argv = list(command.argv)
    if not argv or argv[0].startswith("-"):  # `mct`, `mct --help`: the group itself
        return "mct", None
    with group.make_context("mct", [], resilient_parsing=True) as group_ctx:
        try:
            name, subcommand, rest = group.resolve_command(group_ctx, argv)
            if "--help" in rest:
                return name, None
            return name, subcommand.make_context(name, rest, parent=group_ctx, resilient_parsing=False)
        except Exception as exc:  # a click UsageError/BadParameter: the message is the point
            message = exc.format_message() if hasattr(exc, "format_message") else repr(exc)
            raise AssertionError(f"{command} does not parse: {message}") from None


def cheap_run_reason(name: str, ctx, command: DocCommand) -> str | None:
    """None when the command is cheap enough to run here, else why it is only parse-checked."""
    if command.inline:
        return "an inline example: parse-checked only"
    if ctx is None or name in ("doctor", "eval", "generate", "attn"):
        return None
    if name == "gen":
        p = ctx.params
        total = (p["modulus"] or 113) ** 2 if p["task"] == "mod" else (
            (p["instances"] or 100_000) + (p["val"] or 3_000) + (p["test"] or 2_000) * (2 if p["ood_digits"] else 1))
        if total <= GEN_RUN_LIMIT:
            return None
        return f"gen of {total:,} records: parse-checked only"
    return f"{name}: parse-checked only (training is tested in test_cli_train.py)"


def prepare(name: str, ctx, checkpoint: Path) -> None:
    """Create what the command reads, at the relative paths the doc names."""
    if name not in ("eval", "generate", "attn"):
        return
    target = Path(ctx.params["checkpoint"])
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(checkpoint, target)
    if name == "eval":
        data = Path(ctx.params["data"])
        path = data if data.suffix == ".jsonl" else data / f"{ctx.params['split'] or 'test'}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(record) + "\n" for record in EVAL_RECORDS))


def expected_exit_code(name: str, ctx, command: DocCommand) -> int:
    if command.expects_error:
        return 2
    if name == "doctor" and ctx is not None and (ctx.params["device"] or "").startswith("cuda") \
            and not torch.cuda.is_available():
        return 1
    return 0


def test_the_extractor_finds_every_kind_of_command_line():
    text = "\n".join([
        "Run `mct gen add --instances 10` or `mct eval CKPT DATA` (a placeholder: skipped).",
        "```bash",
        "MCT_TRAIN__DEVICE=cuda mct train --max-steps 5   # a comment",
        "mct gen add --out d \\",
        "    --seed 3 && .venv/bin/mct eval a.pt d",
        "torchrun --nproc-per-node 2 -m mct train --device cpu",
        "make demo",
        "```",
        "```console",
        "$ mct generate a.pt 12x",
        "error: character 'x' ...",
        "                 mct generate",
        "```",
    ])
    found = [(c.where, c.argv, c.env, c.inline, c.expects_error) for c in extract_commands(text, "x.md")]
    assert found == [
        ("x.md:3", ("train", "--max-steps", "5"), (("MCT_TRAIN__DEVICE", "cuda"),), False, False),
        ("x.md:4", ("gen", "add", "--out", "d", "--seed", "3"), (), False, False),
        ("x.md:4", ("eval", "a.pt", "d"), (), False, False),
        ("x.md:6", ("train", "--device", "cpu"), (), False, False),
        ("x.md:10", ("generate", "a.pt", "12x"), (), False, True),
        ("x.md:1", ("gen", "add", "--instances", "10"), (), True, False),
    ]


def test_the_docs_show_every_command():
    shown = {c.argv[0] for c in DOC_COMMANDS if c.where.startswith("README.md") and c.argv}
    assert shown >= {"doctor", "gen", "train", "eval", "generate", "attn"}
    assert len([c for c in DOC_COMMANDS if not c.inline]) >= 20


def test_a_wrong_flag_fails_the_parse_check():
    with pytest.raises(AssertionError, match=r"x\.md:1: .*does not parse: No such option: --colour"):
        parse(DocCommand("x.md:1", ("attn", "a.pt", "1+1=", "--colour")))
    with pytest.raises(AssertionError, match="does not parse: .*--layer"):
        parse(DocCommand("x.md:2", ("attn", "a.pt", "1+1=", "--layer", "one")))


def _runnable(command) -> bool:
    """Cheap enough to run here (the rest are parse-checked only); a command that does not parse is
    kept, so that running it reports the failure."""
    try:
        name, ctx = parse(command)
    except AssertionError:
        return True
    return cheap_run_reason(name, ctx, command) is None


RUNNABLE = [c for c in DOC_COMMANDS if _runnable(c)]


@pytest.mark.parametrize("command", RUNNABLE, ids=[f"{c.where}:{' '.join(c.argv[:1])}" for c in RUNNABLE])
def test_doc_command_runs_as_written(command, tiny_trained_checkpoint, tmp_path, monkeypatch, capsys):
    name, ctx = parse(command)
    (tmp_path / "configs").symlink_to(ROOT / "configs")  # the docs run from the repository root
    monkeypatch.chdir(tmp_path)
    for key, value in command.env:
        monkeypatch.setenv(key, value)
    prepare(name, ctx, tiny_trained_checkpoint)
    with pytest.raises(SystemExit) as info:
        main(list(command.argv))
    err = capsys.readouterr().err
    assert info.value.code == expected_exit_code(name, ctx, command), f"{command} exited {info.value.code}:\n{err}"
