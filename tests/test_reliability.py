"""Regression tests for the adversarial run's findings in training and data (docs/reliability.md): data
never lost or overwritten, consistent checkpoints whatever the timing of an interrupt, one clear line
for bad input. Each failed on the code the adversarial run found it in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mct.config import DataConfig, load_config
from mct.errors import MctError

ROOT = Path(__file__).resolve().parent.parent
TINY = {
    "model": {"d_model": 32, "num_layers": 1, "num_heads": 2, "d_ff": 64, "max_seq_len": 24},
    "data": {"max_digits": 2, "max_seq_len": 24, "n_val": 40, "n_test": 50},
    "train": {"batch_size": 16, "max_steps": 4, "eval_every": 2, "eval_samples": 20, "save_every": 2,
              "warmup_steps": 1, "device": "cpu"},
}


def tiny(**tables) -> "object":
    overrides = {name: dict(TINY[name]) for name in TINY}
    for name, values in tables.items():
        overrides.setdefault(name, {}).update(values)
    return load_config(None, overrides=overrides, environ={})


def train(*args, **kwargs):
    from mct.train import train as run

    return run(*args, **kwargs)


# ---- data loss -----------------------------------------------------------------------------------------

def test_files_already_in_run_data_are_not_overwritten(tmp_path):
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    mine = run / "data" / "test.jsonl"
    mine.write_text('{"prompt": "1+1=", "answer": "2"}\n')
    with pytest.raises(MctError, match="data/test.jsonl"):
        train(tiny(), run)
    assert mine.read_text() == '{"prompt": "1+1=", "answer": "2"}\n'


def test_force_keeps_the_old_run_when_the_new_one_fails_to_start(tmp_path):
    run = tmp_path / "run"
    train(tiny(), run)
    before = (run / "last.pt").read_bytes()
    with pytest.raises(MctError):
        train(tiny(data={"val_path": str(tmp_path / "missing.jsonl")}), run, force=True)
    assert (run / "last.pt").read_bytes() == before


def test_an_interrupt_inside_a_step_saves_a_consistent_last_pt(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = torch.amp.GradScaler.update

    def update(self, *args, **kwargs):
        calls["n"] += 1
        original(self, *args, **kwargs)
        if calls["n"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(torch.amp.GradScaler, "update", update)
    run = tmp_path / "run"
    result = train(tiny(train={"max_steps": 10, "save_every": 100}), run)
    assert result.stopped == "interrupted"
    state = torch.load(run / "last.pt", weights_only=True)["train_state"]
    optimizer_steps = {int(s["step"]) for s in state["optimizer"]["state"].values()}
    assert optimizer_steps == {state["step"]}


def test_train_refuses_a_folder_another_process_holds(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from mct.fileio import folder_lock\n"
         "with folder_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)", str(run)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(MctError, match="in use"):
            train(tiny(), run)
    finally:
        holder.kill()
        holder.wait()


def test_an_edited_split_is_refused_naming_the_file(tmp_path):
    from mct.data.generate import data_config_from_folder, write_dataset

    folder = tmp_path / "data"
    write_dataset(DataConfig(max_digits=2, n_train=100, n_val=10, n_test=10), folder)
    with (folder / "train.jsonl").open("a") as handle:
        handle.write('{"prompt": "1+1=", "answer": "3", "target": "#3<eos>"}\n')
    with pytest.raises(MctError, match="train.jsonl"):
        data_config_from_folder(folder)


@pytest.mark.parametrize("existed", [False, True])
def test_an_interrupted_gen_leaves_no_folder_it_made_and_no_partial_file(tmp_path, existed):
    from mct.data.generate import write_dataset

    folder = tmp_path / "d"
    if existed:
        folder.mkdir()
        (folder / "notes.txt").write_text("mine")

    def interrupt(done, total):
        if done:  # after the first chunk of the first split is on disk
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_dataset(DataConfig(max_digits=3, n_train=20_000, n_val=10, n_test=10), folder, progress=interrupt)
    assert folder.exists() == existed
    if existed:
        assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_gen_refuses_a_data_set_too_big_for_memory_before_allocating(tmp_path, monkeypatch):
    from mct.data import generate, sampling

    monkeypatch.setattr(sampling, "draw", lambda *a, **k: pytest.fail("records were drawn before a size check"))
    with pytest.raises(MctError, match="memory|GiB|too many"):
        generate.write_dataset(DataConfig(max_digits=40, n_train=2_000_000_000), tmp_path / "d")


# ---- tracebacks and unclear messages -------------------------------------------------------------------

def test_non_utf8_jsonl_names_the_file_and_line(tmp_path):
    from mct.data.dataset import read_records

    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"prompt": "1+1=", "answer": "2"}\n\xff\xfe\n')
    with pytest.raises(MctError, match=r"d\.jsonl.*line 2"):
        read_records(path)


@pytest.mark.parametrize("text", ["[]", '{"files": {"train": "train.jsonl"}}'])
def test_malformed_manifest_is_one_error(tmp_path, text):
    from mct.data.generate import data_config_from_folder

    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(MctError, match="manifest.json"):
        data_config_from_folder(tmp_path)


def test_resume_with_a_damaged_metrics_file(tmp_path):
    run = tmp_path / "run"
    train(tiny(), run)
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write("{not json\n")
    try:
        train(tiny(train={"max_steps": 6}), run, resume=True)
    except MctError as exc:
        assert "metrics.jsonl" in str(exc)


def test_prompt_over_4300_digits_is_one_error(tiny_trained_checkpoint):
    from mct.data.dataset import Record
    from mct.evaluate import evaluate_records
    from mct.predictor import Predictor

    predictor = Predictor.from_checkpoint(tiny_trained_checkpoint, device="cpu")
    records = [Record(prompt="1" * 5000 + "+2=", answer="3")]
    with pytest.raises(MctError):
        evaluate_records(predictor.model, predictor.tokenizer, predictor.data_format, records)


def test_nan_message_names_only_files_that_exist(tmp_path, monkeypatch):
    from mct.train import step as step_module

    def nan_loss(model, ids, labels, attention_mask=None, **options):
        logits, _, _ = model(ids, attention_mask=attention_mask)
        return logits.sum() * float("nan")

    monkeypatch.setattr(step_module, "summed_loss", nan_loss)
    run = tmp_path / "run"
    with pytest.raises(MctError) as info:
        train(tiny(), run)
    if "last.pt" in str(info.value):
        assert (run / "last.pt").is_file()


def test_context_too_short_for_the_task_is_refused_before_training(tmp_path):
    events = []
    with pytest.raises(MctError, match="max_seq_len"):
        train(tiny(model={"max_seq_len": 12}, data={"max_seq_len": 12, "max_digits": 3}),
              tmp_path / "run", progress=events.append)
    assert not any(e["event"] == "step" for e in events)


def test_problem_kind_reads_as_english():
    from mct.data.format import DataFormat

    with pytest.raises(MctError) as info:
        DataFormat(task="add").operands_from_prompt("1*2=")
    assert "a add" not in str(info.value) and "an add" in str(info.value)


def test_core_errors_name_arguments_not_flags(tmp_path):
    from mct.analysis.attention import select_heads
    from mct.data.generate import plan_splits
    from mct.evaluate import evaluate_records

    messages = []
    from mct.data.dataset import Record
    from mct.data.format import DataFormat
    from mct.model import create_model
    from mct.tokenizer import Tokenizer

    model = create_model({"vocab_size": Tokenizer().vocab_size, "d_model": 8, "num_layers": 1, "num_heads": 2,
                          "d_ff": 8, "max_seq_len": 16})
    for call in (lambda: evaluate_records(model, Tokenizer(), DataFormat("add"), [Record("1+1=", "2")], batch_size=0),
                 lambda: plan_splits(DataConfig(max_digits=3, ood_digits=(2, 3))),
                 lambda: select_heads(2, 2, 5, None),
                 lambda: train(tiny(), tmp_path / "nothing", resume=True)):
        with pytest.raises(MctError) as info:
            call()
        messages.append(str(info.value))
    assert not [m for m in messages if "--" in m], messages
