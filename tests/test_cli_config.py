"""The command line reaches every config key, layers sources as documented (also on --resume), and
turns bad input into one escaped line with exit code 2 before any long work starts."""

import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import torch
import typer.main
from typer.testing import CliRunner

from cli_helpers import run_main, tiny_toml
from mct.cli import app
from mct.config import config_keys, default_config_path, field_info, read_toml, resolve_config
from mct.errors import MctError

TINY = tiny_toml(max_steps=4, eval_every=2, save_every=2)



@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.fixture
def trained_run(tiny, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_main(["train", "--config", str(tiny), "--out", str(run)], capsys)
    assert code == 0, err
    return run


# ---- every key is reachable ------------------------------------------------------------------------

COMPANIONS = {"model.shared_qkv_down": ["model.rank=8"], "data.pad_to_longer": ["data.pad_operands=false"],
              "data.sub_complement": ["data.task=sub"], "data.nines_mix": ["data.task=mul"],
              "data.residue_tokens": ["data.task=mod", "data.answer_order=plain", "data.pad_operands=false",
                                       "data.chain_mix=0"]}


def _other_value(key: str, companions: list[str] = ()):
    """A valid value of `key` that differs from configs/default.toml's (the base `mct doctor` sizes)."""
    base = resolve_config(default_config_path(), environ={})
    info = field_info(key)
    default = info.get_default(call_default_factory=True)
    annotation = info.annotation
    choices = typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else ()
    if choices:
        candidates = list(choices)
    elif isinstance(default, bool):
        candidates = [True, False]
    elif isinstance(default, int):
        candidates = [default * 2, default + 1, max(default // 2, 1), 2, 8, 16]
    elif isinstance(default, float):
        candidates = [default / 2, 0.5, 1.0]
    elif key in ("train.cuda_graphs", "data.sub_complement"):  # none = chosen by the device / the format
        candidates = [False]

    elif isinstance(default, str):
        candidates = ["cpu", "auto"]
    elif key == "data.ood_digits":
        candidates = [[4, 5]]
    elif key == "train.target_accuracy":
        candidates = [0.5]
    elif "path" in key or "dir" in key:
        candidates = ["some/file"]
    else:
        candidates = [2]
    for value in candidates:
        text = json.dumps(value) if not isinstance(value, bool) else str(value).lower()
        try:
            config = resolve_config(default_config_path(), sets=[*companions, f"{key}={text}"], environ={})
        except MctError:
            continue
        table, name = key.split(".")
        if getattr(getattr(config, table), name) != getattr(getattr(base, table), name):
            return text
    raise AssertionError(f"no test value for {key}")


@pytest.mark.parametrize("key", config_keys())
def test_every_config_key_is_reachable_with_set(key, monkeypatch, capsys):
    seen = {}

    def fake_report(config, device_spec="auto", run_check=False):
        seen["config"] = config
        raise SystemExit(0)

    monkeypatch.setattr("mct.doctor.collect_report", fake_report)
    companions = COMPANIONS.get(key, [])  # keys that are only valid together with another
    value = _other_value(key, companions)
    items = [*companions, f"{key}={value}"]
    code, _, err = run_main(["doctor", "--device", "cpu", *[a for i in items for a in ("--set", i)]], capsys)
    assert code == 0, err
    table, name = key.split(".")
    expected = resolve_config(default_config_path(), sets=items, environ={})
    assert getattr(getattr(seen["config"], table), name) == getattr(getattr(expected, table), name)


def test_train_and_gen_help_show_field_descriptions_and_set():
    lr = read_toml(default_config_path())["train"]["lr"]
    for command, fragments in (("train", [f"Peak learning rate (train.lr, default {lr} in configs/default.toml)",
                                          "--set", "table.key=value"]),
                               ("gen", ["Longest operand, in digits (data.max_digits, default 3)", "--set"])):
        result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0
        for fragment in fragments:
            assert fragment in result.output, (command, fragment)


def test_command_summaries_are_one_short_line():
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        first = (command.help or "").split("\n\n")[0]
        assert "\n" not in first.strip() and len(first) <= 60, (name, first)


# ---- layering through the CLI, resume included ------------------------------------------------------

def test_resume_applies_the_environment_above_the_saved_config(trained_run, monkeypatch, capsys):
    monkeypatch.setenv("MCT_TRAIN__MAX_STEPS", "6")
    code, out, err = run_main(["train", "--resume", str(trained_run), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["steps"] == 6 and "max_steps = 6" in (trained_run / "config.toml").read_text()


def test_resume_flag_beats_environment(trained_run, monkeypatch, capsys):
    monkeypatch.setenv("MCT_TRAIN__MAX_STEPS", "8")
    code, out, err = run_main(["train", "--resume", str(trained_run), "--max-steps", "6", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["steps"] == 6


def test_bad_value_in_config_on_resume_is_blamed_on_the_file(trained_run, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nlr = -1\n")
    code, _, err = run_main(["train", "--resume", str(trained_run), "--config", str(bad)], capsys)
    assert code == 2 and f"config file {bad}, key train.lr" in err and "flag" not in err


def test_set_reaches_fields_without_a_short_flag(tiny, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_main(["train", "--config", str(tiny), "--out", str(run), "--max-steps", "2",
                             "--set", "model.norm_type=rmsnorm", "--set", "train.warmup_steps=1"], capsys)
    assert code == 0, err
    saved = (run / "config.toml").read_text()
    assert 'norm_type = "rmsnorm"' in saved and "warmup_steps = 1" in saved


# ---- data loss ---------------------------------------------------------------------------------------

def test_resume_from_a_last_pt_without_training_state_is_refused_and_best_pt_kept(trained_run, capsys):
    best = (trained_run / "best.pt").read_bytes()
    (trained_run / "last.pt").write_bytes(best)  # a copied best.pt: weights only
    code, _, err = run_main(["train", "--resume", str(trained_run), "--max-steps", "8"], capsys)
    assert code == 2 and "cannot resume training: it holds no training state" in err
    assert (trained_run / "best.pt").read_bytes() == best


def test_a_second_run_into_a_folder_in_use_is_refused(tiny, tmp_path, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from mct.fileio import folder_lock\n"
         "with folder_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)", str(run)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, err = run_main(["train", "--config", str(tiny), "--out", str(run)], capsys)
        assert code == 2 and "is in use by another mct process" in err and f"pid {holder.pid}" in err
        assert sorted(p.name for p in run.iterdir()) == [".mct.lock"]
    finally:
        holder.kill()
        holder.wait()


def test_config_toml_with_a_newline_in_a_path_reads_back(tiny, tmp_path, capsys):
    data = tmp_path / "data"
    assert run_main(["gen", "add", "--instances", "200", "--val", "20", "--test", "20", "--max-digits", "2",
                     "--out", str(data)], capsys)[0] == 0
    odd = tmp_path / "da\nta [x]"
    data.rename(odd)
    run = tmp_path / "run"
    code, _, err = run_main(["train", "--config", str(tiny), "--data", str(odd), "--out", str(run),
                             "--max-steps", "2"], capsys)
    assert code == 0, err
    config = resolve_config(None, resume=run, environ={})
    assert config.data.train_path == odd / "train.jsonl"


# ---- refused before the work, in one escaped line ------------------------------------------------

def one_line_exit_2(code, err):
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_out_under_a_file_is_refused_before_training(tiny, tmp_path, capsys):
    code, _, err = run_main(["train", "--config", str(tiny), "--out", str(tiny / "run")], capsys)
    one_line_exit_2(code, err)
    assert "is a file, not a folder" in err


def test_errors_file_under_a_file_is_refused_before_evaluating(tiny_trained_checkpoint, tmp_path, capsys, monkeypatch):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "1+1=", "answer": "2"}) + "\n")
    monkeypatch.setattr("mct.predictor.Predictor.from_checkpoint",
                        lambda *a, **k: pytest.fail("the checkpoint was loaded before the output was checked"))
    code, _, err = run_main(["eval", str(tiny_trained_checkpoint), str(data), "--errors",
                             str(data / "errors.jsonl")], capsys)
    one_line_exit_2(code, err)


def test_gen_out_under_a_file_is_refused(tiny, capsys):
    code, _, err = run_main(["gen", "add", "--out", str(tiny / "data")], capsys)
    one_line_exit_2(code, err)
    assert "is a file, not a folder" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere; docs/reliability.md runs this as nobody")
def test_read_only_run_folder_is_refused(tiny, tmp_path, capsys):
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o555)
    code, _, err = run_main(["train", "--config", str(tiny), "--out", str(locked / "run")], capsys)
    one_line_exit_2(code, err)
    assert "permission denied" in err


def test_a_model_too_big_for_memory_is_refused_before_allocating(tiny, tmp_path, capsys):
    code, _, err = run_main(["train", "--config", str(tiny), "--out", str(tmp_path / "r"), "--d-model", "65536",
                             "--layers", "64"], capsys)
    one_line_exit_2(code, err)
    assert "GiB" in err and "(set with --d-model, --layers, --d-ff)" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv, fragment", [
    (["train", "--seed", "99999999999999999999999"], "flag --seed (train.seed): Input should be less than or equal to 4294967295"),
    (["train", "--set", "train.lr=inf"], "--set train.lr: Input should be a finite number"),
    (["train", "--set", "lr=3"], "did you mean train.lr?"),
    (["train", "--device", "cuda:x"], "device 'cuda:x': bad GPU index"),
    (["train", "--config", "."], "is a folder; pass a TOML file"),
    (["gen", "add", "--ood-digits", "4-5000"], "ood_digits [4, 5000] must be [shortest, longest]"),
    (["gen", "add", "--instances", "100000000000"], "flag --instances (data.n_train): Input should be less than or equal to"),
    (["doctor", "--set", "model.d_model=3"], "d_model (3) must be divisible by num_heads"),
])
def test_bad_values_are_one_line_with_brackets_and_colons_kept(argv, fragment, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(argv, capsys)
    one_line_exit_2(code, err)
    assert fragment in " ".join(err.split()), err
    assert "\u274c" not in err  # cuda:x is not an emoji


def test_env_variable_named_like_a_table(monkeypatch, capsys):
    monkeypatch.setenv("MCT_TRAIN", "5")
    code, _, err = run_main(["train"], capsys)
    one_line_exit_2(code, err)
    assert "MCT_TRAIN: [train] is a table" in err


def test_markup_in_a_message_is_printed_as_written(tmp_path, capsys):
    bad = tmp_path / "[red]c.toml"
    bad.write_text("model = 5\n")
    code, _, err = run_main(["doctor", "--config", str(bad)], capsys)
    one_line_exit_2(code, err)
    assert "[red]c.toml" in err and "[model] must be a table" in err


def test_swapped_eval_arguments_say_which_is_which(tiny_trained_checkpoint, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "1+1=", "answer": "2"}) + "\n")
    code, _, err = run_main(["eval", str(data), str(tiny_trained_checkpoint)], capsys)
    one_line_exit_2(code, err)
    assert "is not an mct checkpoint: it holds JSON text: a data file?" in err


def test_non_utf8_data_is_one_line(tiny_trained_checkpoint, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_bytes(b"\xff\xfe{}\n")
    code, _, err = run_main(["eval", str(tiny_trained_checkpoint), str(data)], capsys)
    one_line_exit_2(code, err)
    assert "not UTF-8" in err


def test_prompt_with_markup_is_shown_as_written(tiny_trained_checkpoint, capsys):
    code, _, err = run_main(["generate", str(tiny_trained_checkpoint), "[/red]"], capsys)
    one_line_exit_2(code, err)
    assert "'[/red]='" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_core_error_naming_a_config_key_gets_its_flag(tiny, tmp_path, capsys):
    code, _, err = run_main(["train", "--config", str(tiny), "--out", str(tmp_path / "r"), "--precision", "fp16"],
                            capsys)
    one_line_exit_2(code, err)
    assert "train.precision" in err and "(set with --precision)" in err


@pytest.mark.parametrize("flag", ["--instances", "--val", "--test"])
def test_gen_mod_refuses_split_counts_instead_of_ignoring_them(flag, tmp_path, capsys):
    code, _, err = run_main(["gen", "mod", "--modulus", "7", flag, "5", "--out", str(tmp_path / "d")], capsys)
    one_line_exit_2(code, err)
    assert flag in err and not (tmp_path / "d").exists()
