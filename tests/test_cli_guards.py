"""Inputs a tester tried that the CLI used to take: each is now one line on stderr and exit code 2,
refused before any work, and nothing the command reads is overwritten, --force or not."""

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from cli_helpers import run_main
from mct.cli import app, parse_seeds
from mct.errors import MctError



def refused(argv, capsys, *fragments):
    code, out, err = run_main(argv, capsys)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


@pytest.fixture
def ckpt(tiny_trained_checkpoint, tmp_path):
    path = tmp_path / "best.pt"
    shutil.copy(tiny_trained_checkpoint, path)
    return path


@pytest.mark.parametrize("text", ["0-99999999999999999999", "0-300000000", "5000000000", "7-3", "0,0", "0-1000"])
def test_seed_lists_out_of_range_are_refused_before_any_list_is_built(text):
    with pytest.raises(MctError, match="give 1 to 1000 distinct seeds from 0 to 4294967295"):
        parse_seeds(text)
    assert len(parse_seeds("0-999")) == 1000


def test_train_refuses_a_seed_beside_seeds_an_empty_out_and_an_empty_out_dir(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refused(["train", "--seeds", "0-1", "--seed", "5"], capsys, "drop --seed")
    refused(["train", "--set", "train.max_steps=true"], capsys, "true is a true/false value; give a number")
    refused(["train", "--out", ""], capsys, "the current folder")
    monkeypatch.setenv("MCT_TRAIN__OUT_DIR", "")
    refused(["train", "--max-steps", "2"], capsys, "MCT_TRAIN__OUT_DIR", "empty path")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, fragment", [
    (["generate", "CKPT", "12+34", "--seed", "99999999999999999999999"], "less than or equal to 4294967295"),
    (["generate", "CKPT", "12+34", "--temperature", "inf"], "not a finite number"),
    (["analyze", "CKPT", "--out", "OUT", "--problems", "99999999999"], "less than or equal to 100000"),
    (["analyze", "CKPT", "--out", "OUT", "--seed", "-1"], "greater than or equal to 0"),
])
def test_numbers_out_of_range_are_refused(argv, fragment, ckpt, tmp_path, capsys):
    argv = [str(ckpt) if a == "CKPT" else str(tmp_path / "out") if a == "OUT" else a for a in argv]
    refused(argv, capsys, fragment)


def test_outputs_never_replace_an_input_even_with_force(ckpt, tmp_path, capsys):
    data = tmp_path / "t.jsonl"
    data.write_text('{"prompt": "12+34=", "answer": "46"}\n')
    before = data.read_text()
    refused(["eval", str(ckpt), str(data), "--errors", str(data), "--force"], capsys, "a file this command reads")
    refused(["eval", str(ckpt), str(data), "--plot", str(tmp_path / "p.txt")], capsys, ".png, .svg or .pdf")
    refused(["eval", str(ckpt), str(data), "--split", "val"], capsys, "drop --split")
    refused(["export", str(ckpt), str(ckpt), "--force"], capsys, "a file this command reads")
    assert data.read_text() == before
    from mct.checkpoint import load_checkpoint

    load_checkpoint(ckpt)  # still an mct checkpoint


def test_analyze_checks_its_output_folder_before_the_work(ckpt, tmp_path, capsys):
    a_file = tmp_path / "report.txt"
    a_file.write_text("keep")
    refused(["analyze", str(ckpt), "--out", str(a_file), "--problems", "20"], capsys, "is a file, not a folder")
    assert a_file.read_text() == "keep"


def test_analyze_keeps_a_figure_of_an_earlier_report_without_force(ckpt, tmp_path, capsys):
    """Only report.json and index.html were checked: a folder holding ablation.png lost it."""
    out = tmp_path / "analysis"
    out.mkdir()
    (out / "ablation.png").write_text("precious")
    refused(["analyze", str(ckpt), "--out", str(out), "--problems", "20"], capsys, "ablation.png", "--force")
    assert (out / "ablation.png").read_text() == "precious"


def test_gen_refuses_flags_that_do_not_apply_to_the_task_and_a_modulus_too_large(tmp_path, capsys):
    refused(["gen", "mod", "--steps", "--out", str(tmp_path / "m")], capsys, "--steps/--no-steps does not apply to the mod task")
    refused(["gen", "add", "--modulus", "7", "--out", str(tmp_path / "a")], capsys, "--modulus does not apply to the add task")
    refused(["gen", "mod", "--modulus", "1001", "--out", str(tmp_path / "m")], capsys, "less than or equal to 1000")
    assert not (tmp_path / "m").exists() and not (tmp_path / "a").exists()


def test_a_setting_that_contradicts_the_data_folder_is_refused_before_training(tmp_path, capsys):
    folder = tmp_path / "d"
    code, _, err = run_main(["gen", "add", "--instances", "200", "--val", "20", "--test", "20", "--out", str(folder)],
                            capsys)
    assert code == 0, err
    for setting, fragment in (("data.use_steps=true", "data.use_steps = True contradicts the data folder"),
                              ("data.max_digits=5", "max_digits = 3")):
        refused(["train", "--data", str(folder), "--set", setting, "--out", str(tmp_path / "run")], capsys, fragment)
    assert not (tmp_path / "run").exists()


def test_a_run_that_saved_no_checkpoint_points_to_force(tmp_path, capsys):
    from mct.train.run_folder import RunFolder

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text("")
    refused(["train", "--resume", str(run)], capsys, "saved no checkpoint", "--force")
    with pytest.raises(MctError, match="saved no checkpoint.*force=True"):
        RunFolder(run).prepare(resume=False, force=False)


def test_seeds_do_not_nest_inside_a_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"")
    refused(["train", "--seeds", "0-1", "--out", str(run)], capsys, "holds a run; --seeds writes OUT/seed-N")
    assert sorted(p.name for p in run.iterdir()) == ["last.pt"]


def test_a_resume_with_fewer_steps_than_the_run_took_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    small = ["--set", "data.n_val=40", "--set", "data.n_test=40", "--set", "train.eval_samples=40"]
    code, _, err = run_main(["train", "--max-steps", "4", "--out", str(run), "--device", "cpu", *small], capsys)
    assert code == 0, err
    refused(["train", "--resume", str(run), "--max-steps", "2"], capsys, "is at step 4, past train.max_steps = 2")
    # at its own max_steps it is finished: it evaluated again and rewrote eval.json
    files = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    refused(["train", "--resume", str(run), "--max-steps", "4"], capsys, "is at step 4, at train.max_steps = 4",
            "--max-steps N, N > 4")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == files
    code, out, err = run_main(["train", "--resume", str(run), "--max-steps", "6", "--json"], capsys)
    assert code == 0 and json.loads(out)["steps"] == 6, err  # more steps: it trains on


def test_a_finished_run_that_reached_its_target_is_not_resumed(tmp_path, capsys, monkeypatch):
    """Each resume of a run that had reached its target and cooled down trained one step more (at a
    learning rate of 0) and rewrote the run; `--max-steps 600` did the same."""
    from mct.train import loop

    monkeypatch.setattr(loop, "validate", lambda *a, **k: (0.01, 1.0))
    run = tmp_path / "run"
    small = ["--set", "data.n_val=40", "--set", "data.n_test=40", "--set", "train.eval_samples=40",
             "--set", "train.eval_every=2", "--set", "train.target_patience=1", "--set", "train.cooldown_steps=2"]
    code, out, err = run_main(["train", "--max-steps", "20", "--out", str(run), "--device", "cpu", "--json", *small],
                              capsys)
    assert code == 0 and json.loads(out)["stopped"] == "target_reached" and json.loads(out)["steps"] == 4, err
    files = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    for more in ([], ["--max-steps", "600"]):
        refused(["train", "--resume", str(run), *more], capsys,
                "is finished: it reached its target accuracy at step 2 and stopped at step 4; nothing to resume")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == files


def test_help_prints_square_brackets_as_written():
    runner = CliRunner()
    for command, text in (("export", "mct[tl]"), ("gen", "[data] table"), ("generate", "[generate]"),
                          ("attn", "[layer][head][query][key]")):
        result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0 and text in result.output, (command, result.output)


def test_messages_a_tester_found_without_their_fix(ckpt, tmp_path, capsys):
    """Each of these named the problem but not what to do (or named the wrong problem)."""
    refused(["generate", str(ckpt), " "], capsys, "the prompt is empty; write a problem like 12+34=")
    refused(["train", "--resume", str(ckpt)], capsys, f"resume takes the run folder (the one holding last.pt, "
                                                      f"e.g. {tmp_path}), not a file")
    (tmp_path / "config.toml").write_text("")
    refused(["train", "--resume", str(tmp_path)], capsys, "best.pt holds weights only, not the training state",
            "--force")
    refused(["generate", str(tmp_path), "1+1="], capsys, f"is a folder, not a file; pass {ckpt}")
    raw = torch.load(ckpt, weights_only=True)
    del raw["version"]
    torch.save(raw, tmp_path / "old.pt")
    refused(["generate", str(tmp_path / "old.pt"), "1+1="], capsys, "incomplete mct checkpoint (no format version)")
    raw = torch.load(ckpt, weights_only=True)
    del raw["tokenizer"]
    torch.save(raw, tmp_path / "cut.pt")
    refused(["generate", str(tmp_path / "cut.pt"), "1+1="], capsys, "missing tokenizer",
            "use the original file or train again")


def test_resume_with_seeds_says_how_a_sweep_goes_on(tmp_path, capsys):
    refused(["train", "--seeds", "0-1", "--resume", str(tmp_path)], capsys,
            "a --seeds sweep goes on where it stopped when the same --seeds command runs again")
