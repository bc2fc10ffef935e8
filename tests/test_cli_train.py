import json
from pathlib import Path

import pytest
import torch

from cli_helpers import run_main, tiny_toml

TINY = tiny_toml()



@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def test_json_summary_has_the_promised_keys(tiny, tmp_path, capsys):
    code, out, err = run_main(["train", "--config", str(tiny), "--out", str(tmp_path / "run"), "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    for key in ("checkpoint", "best_checkpoint", "steps", "wall_s", "test", "cuda_graphs", "cuda_graphs_fallback"):
        assert key in summary
    assert summary["steps"] == 6 and 0 <= summary["test"]["exact_match"] <= 1
    assert summary["checkpoint"].endswith("last.pt") and "test exact match" in err
    assert summary["cuda_graphs"] is False and summary["cuda_graphs_fallback"] is None  # the CPU: no graph tried


def test_the_summary_says_why_the_cuda_graph_was_not_used(capsys):
    from mct.cli import _render_train_summary
    from mct.train.loop import TrainResult

    result = TrainResult(run_dir="r", checkpoint="r/last.pt", best_checkpoint=None, steps=10, wall_s=1.0,
                         stopped="max_steps", best_val_exact_match=None, test=None, num_truncated=0, parameters=5,
                         device="cuda:0", precision="bf16", world_size=1, tokens_per_s=1.0,
                         cuda_graphs_fallback="RuntimeError: operation not permitted when stream is capturing")
    _render_train_summary(result)
    captured = capsys.readouterr()
    shown = " ".join((captured.err + captured.out).replace("│", " ").split())  # the table may wrap the reason
    assert "capture failed" in shown and "not permitted" in shown


@pytest.mark.parametrize("stopped, says", [
    ("target_reached", "reached the target accuracy at step 290, then cooled down"),
    ("interrupted", "interrupted (resume with --resume), cooling down after the target"),
])
def test_the_summary_says_where_the_target_was_reached_before_a_cooldown(stopped, says, capsys):
    from mct.cli import _render_train_summary
    from mct.train.loop import TrainResult

    result = TrainResult(run_dir="r", checkpoint="r/last.pt", best_checkpoint=None, steps=340, wall_s=1.0,
                         stopped=stopped, best_val_exact_match=None, test=None, num_truncated=0, parameters=5,
                         device="cpu", precision="fp32", world_size=1, tokens_per_s=1.0, target_step=290)
    _render_train_summary(result)
    captured = capsys.readouterr()
    shown = " ".join((captured.err + captured.out).replace("│", " ").split())
    assert f"after 340 steps: {says}" in shown


def test_flags_override_the_config(tiny, tmp_path, capsys):
    code, out, _ = run_main(["train", "--config", str(tiny), "--out", str(tmp_path / "run"), "--json",
                             "--ffn", "geglu", "--d-model", "48", "--heads", "4", "--max-steps", "3"], capsys)
    assert code == 0
    resolved = (tmp_path / "run" / "config.toml").read_text()
    assert 'ffn_type = "geglu"' in resolved and "d_model = 48" in resolved and "max_steps = 3" in resolved
    assert json.loads(out)["steps"] == 3


def test_existing_run_needs_force(tiny, tmp_path, capsys):
    argv = ["train", "--config", str(tiny), "--out", str(tmp_path / "run"), "--max-steps", "2"]
    assert run_main(argv, capsys)[0] == 0
    code, _, err = run_main(argv, capsys)
    assert code == 2 and "already holds a run" in err and "--force" in err
    assert run_main(argv + ["--force"], capsys)[0] == 0


def test_resume_continues_to_the_new_max_steps(tiny, tmp_path, capsys):
    run = str(tmp_path / "run")
    assert run_main(["train", "--config", str(tiny), "--out", run, "--max-steps", "3"], capsys)[0] == 0
    code, out, err = run_main(["train", "--resume", run, "--max-steps", "6", "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["resumed_from_step"] == 3 and summary["steps"] == 6


@pytest.mark.parametrize("argv, message", [
    (["--ffn", "relu"], "'gelu', 'geglu' or 'swiglu'"),
    (["--config", "no/such.toml"], "does not exist"),
    (["--precision", "fp8"], "'auto', 'fp32', 'bf16' or 'fp16'"),
    (["--d-model", "30", "--heads", "4"], "divisible by num_heads"),
    (["--resume", "no/such/run"], "no config.toml"),
])
def test_bad_arguments_are_one_line_exit_2(argv, message, capsys):
    code, _, err = run_main(["train", *argv], capsys)
    assert code == 2
    assert message in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_on_a_cpu_machine_is_refused(tiny, tmp_path, capsys):
    code, _, err = run_main(["train", "--config", str(tiny), "--out", str(tmp_path / "run"),
                             "--device", "cuda", "--ffn", "geglu"], capsys)
    assert code == 2 and "CUDA is not available" in err


def test_trains_on_a_generated_data_folder(tiny, tmp_path, capsys):
    data = tmp_path / "data"
    # one-digit operands (76 besides the hard split): with steps the longest example fits the tiny context
    assert run_main(["gen", "add", "--steps", "--instances", "16", "--val", "20", "--test", "40",
                     "--max-digits", "1", "--out", str(data)], capsys)[0] == 0
    code, out, err = run_main(["train", "--config", str(tiny), "--data", str(data), "--out", str(tmp_path / "run"),
                               "--max-steps", "2", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["test"]["n"] == 40
    resolved = (tmp_path / "run" / "config.toml").read_text()
    assert "use_steps = true" in resolved and "train.jsonl" in resolved


@pytest.mark.parametrize("pad", [False, True])
def test_a_run_short_of_its_target_on_unpadded_operands_is_told_to_pad_them(tiny, tmp_path, capsys, pad):
    """Learned positions find the digits of unpadded operands slowly (a `mct gen add` folder under the default
    config: 14.6% test after its 500 steps, the target at step 1,920 of 3,000); the summary says so."""
    data = tmp_path / "data"
    assert run_main(["gen", "add", "--instances", "16", "--val", "20", "--test", "40", "--max-digits", "1",
                     *(["--pad"] if pad else []), "--out", str(data)], capsys)[0] == 0
    code, _, err = run_main(["train", "--config", str(tiny), "--data", str(data), "--out", str(tmp_path / "run"),
                             "--max-steps", "2", "--set", "train.target_accuracy=0.9995"], capsys)
    shown = " ".join(err.replace("│", " ").split())
    assert code == 0 and "target not reached" in shown
    assert ("or zero-pad the operands (`mct gen add --pad`" in shown) is not pad
    assert ("--max-steps 3000" in shown) is not pad


def test_a_data_folder_of_longer_examples_widens_the_context(tiny, tmp_path, capsys):
    # 3-digit problems with steps are 41 tokens long: the folder raises the tiny config's 24, and every
    # training example is kept (before, most were dropped as too long and the run learned nothing)
    data = tmp_path / "data"
    assert run_main(["gen", "add", "--steps", "--instances", "300", "--val", "20", "--test", "20",
                     "--out", str(data)], capsys)[0] == 0
    code, out, err = run_main(["train", "--config", str(tiny), "--data", str(data), "--out", str(tmp_path / "run"),
                               "--max-steps", "2", "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["num_truncated"] == 0
    resolved = (tmp_path / "run" / "config.toml").read_text()
    assert resolved.count("max_seq_len = 41") == 2  # [model] and [data]


def test_a_mul_folder_trains_under_the_default_config_whose_chain_mix_is_for_add(tmp_path, capsys):
    # configs/default.toml sets data.chain_mix (a shape of the generated add stream); a folder's file replaces
    # that stream, so its mixes are off and a mul folder is not refused
    data = tmp_path / "data"
    assert run_main(["gen", "mul", "--steps", "--max-digits", "1", "--instances", "30", "--val", "10", "--test", "10",
                     "--out", str(data)], capsys)[0] == 0
    code, out, err = run_main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--max-steps", "2",
                               "--json"], capsys)
    assert code == 0, err
    resolved = (tmp_path / "run" / "config.toml").read_text()
    assert 'task = "mul"' in resolved and "chain_mix = 0.0" in resolved


def test_the_summary_says_when_the_target_was_not_reached(tiny, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_main(["train", "--config", str(tiny), "--out", str(run), "--set", "train.target_accuracy=0.99"],
                            capsys)
    shown = " ".join(err.replace("│", " ").split())
    assert code == 0 and "not reached: best validation" in shown and "target 99.00%" in shown

    from mct.cli import _render_train_summary
    from mct.train.loop import TrainResult

    result = TrainResult(run_dir="r", checkpoint="r/last.pt", best_checkpoint=None, steps=500, wall_s=1.0,
                         stopped="max_steps", best_val_exact_match=0.0683, test=None, num_truncated=0, parameters=5,
                         device="cpu", precision="fp32", world_size=1, tokens_per_s=1.0)
    _render_train_summary(result, target=0.9995)
    shown = " ".join(capsys.readouterr().err.replace("│", " ").split())
    assert "best validation 6.83%, target 99.95%; train on with mct train --resume r --max-steps 1000" in shown
    _render_train_summary(result, target=None)  # no target: nothing to say
    assert "not reached" not in capsys.readouterr().err
    from mct.data.format import slow_format_fix

    _render_train_summary(result, target=0.9995, fix=slow_format_fix("mul", use_steps=False))
    shown = " ".join(capsys.readouterr().err.replace("│", " ").split())
    assert "--max-steps 1000 or train with steps, --set data.use_steps=true or configs/mul3.toml" in shown
    assert "configs/mul3-direct.toml" in shown
    _render_train_summary(result, target=0.9995, fix=slow_format_fix("mod", use_steps=False))
    shown = " ".join(capsys.readouterr().err.replace("│", " ").split())
    assert "--max-steps 1000 or train configs/mod113.toml" in shown
    assert slow_format_fix("mul", use_steps=True) is None and slow_format_fix("add", use_steps=False) is None
    # unpadded operands: slow unless the supplied steps line the digits up (unpadded sub steps written by the
    # model reached the target at step 1,015, read from the data at step 315)
    assert "`mct gen sub --pad`" in slow_format_fix("sub", True, True, step_masking_mode="none")
    assert slow_format_fix("sub", True, True, step_masking_mode="mask_steps") is None
    # no positions: 6,220 steps to the target on the default (docs/recipes.md, "Every knob on the default")
    assert "--max-steps 8000 or --layers 3" in slow_format_fix("add", False, False, no_positions=True)
    # plain answers: target at step 875 of 3,000; resumed from 500 to 1,000 steps, hard 99.15%
    assert "data.answer_order = reversed" in slow_format_fix("add", False, plain_answers=True)
    assert slow_format_fix("add", True, plain_answers=True) is None  # the supplied steps carry the carries


def test_data_folder_without_manifest_is_refused(tmp_path, capsys):
    code, _, err = run_main(["train", "--data", str(tmp_path)], capsys)
    assert code == 2 and "manifest.json does not exist" in err


def test_seeds_train_one_run_folder_each_and_report_them(tiny, tmp_path, capsys):
    code, out, err = run_main(["train", "--config", str(tiny), "--out", str(tmp_path / "runs"), "--max-steps", "2",
                               "--seeds", "3,5", "--json"], capsys)
    assert code == 0, err
    results = json.loads(out)
    assert [Path(r["run_dir"]).name for r in results] == ["seed-3", "seed-5"]
    assert all((tmp_path / "runs" / f"seed-{s}" / "best.pt").is_file() for s in (3, 5))
    assert "seed = 3" in (tmp_path / "runs" / "seed-3" / "config.toml").read_text()


def test_an_interrupted_seed_sweep_reports_its_table_and_exits_130(tiny, tmp_path, capsys, monkeypatch):
    """Ctrl-C in a sweep: the interrupted run has no test result (it printed a TypeError instead of the
    table); its last.pt is kept and the later seeds are not started."""
    import contextlib

    import mct.train

    monkeypatch.setattr(mct.train, "stop_on_interrupt", lambda: contextlib.nullcontext(lambda: True))
    code, _, err = run_main(["train", "--config", str(tiny), "--out", str(tmp_path / "runs"), "--seeds", "3,5"],
                            capsys)
    assert code == 130 and "Traceback" not in err
    assert "interrupted" in err and "seed-3" in err
    assert (tmp_path / "runs" / "seed-3" / "last.pt").is_file() and not (tmp_path / "runs" / "seed-5").exists()

    # the same command again goes on: seed 3 resumes where it stopped, seed 5 starts
    monkeypatch.undo()
    argv = ["train", "--config", str(tiny), "--out", str(tmp_path / "runs"), "--seeds", "3,5", "--json"]
    code, out, err = run_main(argv, capsys)
    assert code == 0, err
    first = json.loads(out)
    assert [r["resumed_from_step"] for r in first] == [0, None] and [r["steps"] for r in first] == [6, 6]
    # and once more: both finished, so both are kept as they were, reported from their summary.json
    files = {p: p.read_bytes() for p in (tmp_path / "runs").rglob("*") if p.is_file()}
    code, out, err = run_main(argv, capsys)
    assert code == 0 and json.loads(out) == first and err.count("finished before") == 2, err
    assert {p: p.read_bytes() for p in (tmp_path / "runs").rglob("*") if p.is_file()} == files
    code, _, err = run_main(argv + ["--set", "model.d_ff=32"], capsys)
    assert code == 2 and "holds a run of another model or data config" in err and "--force" in err


@pytest.mark.parametrize("text,expected", [("0-3", [0, 1, 2, 3]), ("2", [2]), ("0,4,7", [0, 4, 7]), ("1-2,5", [1, 2, 5])])
def test_seed_lists(text, expected):
    from mct.cli import parse_seeds

    assert parse_seeds(text) == expected


@pytest.mark.parametrize("compile_model", [True, False])
def test_train_progress_says_when_the_first_step_compiles(compile_model):
    import io

    from rich.console import Console

    from mct.cli_progress import TrainProgress

    out = io.StringIO()
    with TrainProgress(Console(file=out, width=200)) as progress:
        progress.update({"event": "start", "run_dir": "runs/x", "device": "cpu", "precision": "fp32",
                         "parameters": 1234, "start_step": 0, "max_steps": 10, "world_size": 1,
                         "compile": compile_model})
    text = out.getvalue()
    assert "training 1,234 parameters on cpu (fp32) -> runs/x" in text
    assert ("torch.compile: the first step compiles the model" in text) is compile_model


@pytest.mark.parametrize("pool, says_pool", [(1, False), (4, True)])
def test_train_progress_says_when_the_cooldown_starts_and_how_it_draws(pool, says_pool):
    import io

    from rich.console import Console

    from mct.cli_progress import TrainProgress

    out = io.StringIO()
    with TrainProgress(Console(file=out, width=300)) as progress:
        progress.update({"event": "cooldown", "step": 210, "steps": 50, "pool": pool})
    text = out.getvalue()
    assert "target reached at step 210: 50 more steps while the learning rate falls to 0 (train.cooldown_steps)" in text
    assert ("half of each batch the hardest problems of 4 batches (train.cooldown_pool)" in text) is says_pool
