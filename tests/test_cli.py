import json

import pytest
import torch
from typer.testing import CliRunner

from cli_helpers import run_main
from mct.cli import app

runner = CliRunner()
COMMANDS = ["doctor", "gen", "train", "eval", "generate", "attn"]


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output or "example" in result.output



def test_wrong_flag_is_one_line_and_exit_2(capsys):
    code, _, err = run_main(["doctor", "--no-such-flag"], capsys)
    assert code == 2
    assert "No such option" in err and "mct doctor --help" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_prompt_with_a_negative_number_is_named_not_called_an_unknown_option(capsys, tmp_path):
    code, _, err = run_main(["generate", str(tmp_path / "none.pt"), "-5+3="], capsys)
    assert code == 2 and "-5 looks like a prompt with a negative number" in err and "non-negative" in err
    assert "No such option" not in err and len(err.strip().splitlines()) == 1


def test_unknown_command_exit_2(capsys):
    code, _, err = run_main(["frobnicate"], capsys)
    assert code == 2 and "No such command" in err


def test_doctor_json_has_the_promised_keys(capsys):
    code, out, _ = run_main(["doctor", "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    for key in ("python", "torch", "cuda_available", "devices", "threads"):
        assert key in report
    assert report["torch"] == torch.__version__
    assert report["estimate"]["max_batch_size"] > 0


def test_doctor_sizes_the_given_config(capsys, tmp_path):
    small = tmp_path / "s.toml"
    small.write_text("[model]\nd_model = 32\nnum_heads = 2\nnum_layers = 1\nd_ff = 64\n")
    _, out_small, _ = run_main(["doctor", "--json", "--config", str(small)], capsys)
    _, out_big, _ = run_main(["doctor", "--json", "--config", "configs/gpu-small.toml"], capsys)
    small_est, big_est = json.loads(out_small)["estimate"], json.loads(out_big)["estimate"]
    assert small_est["parameters"] < big_est["parameters"]
    assert small_est["max_batch_size"] > big_est["max_batch_size"]


def test_doctor_missing_config_exit_2(capsys, tmp_path):
    code, _, err = run_main(["doctor", "--config", str(tmp_path / "none.toml")], capsys)
    assert code == 2 and "does not exist" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_doctor_cuda_without_cuda_exits_1_and_says_why(capsys):
    code, _, err = run_main(["doctor", "--device", "cuda"], capsys)
    assert code == 1
    assert "CUDA is not usable" in err and "CPU-only" in err



@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_doctor_checks_the_configs_device_when_no_flag_is_given(capsys, monkeypatch):
    monkeypatch.setenv("MCT_TRAIN__DEVICE", "cuda")
    code, _, err = run_main(["doctor"], capsys)
    assert code == 1 and "train.device cuda: CUDA is not usable" in err
    monkeypatch.setenv("MCT_TRAIN__DEVICE", "cpu")
    code, out, _ = run_main(["doctor", "--json"], capsys)
    assert code == 0 and json.loads(out)["ok"]
