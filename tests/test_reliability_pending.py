"""Failures from the adversarial run whose fixes belong to files this change does not own (mct/train.py,
mct/data/*, mct/evaluate.py, mct/analysis/*). Each test states the fixed behaviour and is marked
xfail(strict=True): it fails today and flips to a pass (and so to an error of this marker) when the fix
lands, so whoever lands it removes the marker. docs/reliability.md lists them with the fix for each.
"""

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


def pending(reason: str):
    return pytest.mark.xfail(strict=True, reason=reason)


def tiny(**tables) -> "object":
    overrides = {name: dict(TINY[name]) for name in TINY}
    for name, values in tables.items():
        overrides.setdefault(name, {}).update(values)
    return load_config(None, overrides=overrides, environ={})


def train(*args, **kwargs):
    from mct.train import train as run

    return run(*args, **kwargs)


# ---- data loss -----------------------------------------------------------------------------------------

@pending("train.py prepare_run_dir checks only RUN_FILES; RUN/data/val.jsonl and test.jsonl are overwritten")
def test_files_already_in_run_data_are_not_overwritten(tmp_path):
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    mine = run / "data" / "test.jsonl"
    mine.write_text('{"prompt": "1+1=", "answer": "2"}\n')
    with pytest.raises(MctError, match="data/test.jsonl"):
        train(tiny(), run)
    assert mine.read_text() == '{"prompt": "1+1=", "answer": "2"}\n'


@pending("train.py prepare_run_dir deletes the old run's files before the new run has shown it can start")
def test_force_keeps_the_old_run_when_the_new_one_fails_to_start(tmp_path):
    run = tmp_path / "run"
    train(tiny(), run)
    before = (run / "last.pt").read_bytes()
    with pytest.raises(MctError):
        train(tiny(data={"val_path": str(tmp_path / "missing.jsonl")}), run, force=True)
    assert (run / "last.pt").read_bytes() == before


@pending("train.py: a KeyboardInterrupt between the optimizer step and `step += 1` saves a last.pt whose "
         "step and optimizer step disagree (the second Ctrl-C of a quick double press)")
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


@pending("train.py takes no lock: a second process training into the same folder runs and mixes files "
         "(the CLI holds mct.fileio.folder_lock; train() should take the same lock itself)")
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


@pending("data/generate.py data_config_from_folder never checks manifest.json's sha256 of each split")
def test_an_edited_split_is_refused_naming_the_file(tmp_path):
    from mct.data.generate import data_config_from_folder, write_dataset

    folder = tmp_path / "data"
    write_dataset(DataConfig(max_digits=2, n_train=100, n_val=10, n_test=10), folder)
    with (folder / "train.jsonl").open("a") as handle:
        handle.write('{"prompt": "1+1=", "answer": "3", "target": "#3<eos>"}\n')
    with pytest.raises(MctError, match="train.jsonl"):
        data_config_from_folder(folder)


@pending("data/generate.py plans and allocates every record before any size check")
def test_gen_refuses_a_data_set_too_big_for_memory_before_allocating(tmp_path, monkeypatch):
    from mct.data import generate, sampling

    monkeypatch.setattr(sampling, "draw", lambda *a, **k: pytest.fail("records were drawn before a size check"))
    with pytest.raises(MctError, match="memory|GiB|too many"):
        generate.write_dataset(DataConfig(max_digits=40, n_train=2_000_000_000), tmp_path / "d")


# ---- tracebacks and unclear messages -------------------------------------------------------------------

@pending("data/dataset.py read_records opens JSONL as UTF-8 and lets UnicodeDecodeError through "
         "(the CLI only has a generic net that cannot name the file)")
def test_non_utf8_jsonl_names_the_file_and_line(tmp_path):
    from mct.data.dataset import read_records

    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"prompt": "1+1=", "answer": "2"}\n\xff\xfe\n')
    with pytest.raises(MctError, match=r"d\.jsonl.*line 2"):
        read_records(path)


@pending("data/generate.py read_manifest accepts any JSON: a list or a manifest without 'task' is a traceback")
@pytest.mark.parametrize("text", ["[]", '{"files": {"train": "train.jsonl"}}'])
def test_malformed_manifest_is_one_error(tmp_path, text):
    from mct.data.generate import data_config_from_folder

    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(MctError, match="manifest.json"):
        data_config_from_folder(tmp_path)


@pending("train.py read_metrics json-decodes every line of metrics.jsonl on resume without a guard")
def test_resume_with_a_damaged_metrics_file(tmp_path):
    run = tmp_path / "run"
    train(tiny(), run)
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write("{not json\n")
    try:
        train(tiny(train={"max_steps": 6}), run, resume=True)
    except MctError as exc:
        assert "metrics.jsonl" in str(exc)


@pending("evaluate.py / data/format.py: int() of a prompt operand over 4,300 digits raises ValueError")
def test_prompt_over_4300_digits_is_one_error(tiny_trained_checkpoint):
    from mct.data.dataset import Record
    from mct.evaluate import evaluate_records
    from mct.predictor import Predictor

    predictor = Predictor.from_checkpoint(tiny_trained_checkpoint, device="cpu")
    records = [Record(prompt="1" * 5000 + "+2=", answer="3")]
    with pytest.raises(MctError):
        evaluate_records(predictor.model, predictor.tokenizer, predictor.data_format, records)


@pending("train.py names <run>/last.pt in the non-finite-loss message even when no last.pt was written yet")
def test_nan_message_names_only_files_that_exist(tmp_path, monkeypatch):
    import mct.train as train_module

    def nan_loss(model, batch):
        logits, _, _ = model(batch["input_ids"], attention_mask=batch["attention_mask"])
        return logits.sum() * float("nan"), 1

    monkeypatch.setattr(train_module, "summed_loss", nan_loss)
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


@pending("data/format.py operands_from_prompt says 'is not a add problem'")
def test_problem_kind_reads_as_english():
    from mct.data.format import DataFormat

    with pytest.raises(MctError) as info:
        DataFormat(task="add").operands_from_prompt("1*2=")
    assert "a add" not in str(info.value) and "an add" in str(info.value)


@pending("core messages name CLI flags (--batch-size, --limit, --ood-digits, --resume, --layer ...); they "
         "should name the argument or config key, and the CLI adds the flag")
def test_core_errors_name_arguments_not_flags(tmp_path):
    from mct.analysis.attention import select_heads
    from mct.data.generate import plan_splits
    from mct.evaluate import evaluate_records

    messages = []
    for call in (lambda: evaluate_records(None, None, None, [object()], batch_size=0),
                 lambda: plan_splits(DataConfig(max_digits=3, ood_digits=(2, 3))),
                 lambda: select_heads(2, 2, 5, None),
                 lambda: train(tiny(), tmp_path / "nothing", resume=True)):
        with pytest.raises(MctError) as info:
            call()
        messages.append(str(info.value))
    assert not [m for m in messages if "--" in m], messages
