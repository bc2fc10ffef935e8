import importlib
import json
import linecache
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mct.checkpoint import load_checkpoint
from mct.config import load_config
from mct.errors import MctError
from mct.model import create_model
from mct.tokenizer import Tokenizer
from mct.data.format import DataFormat
from mct.train import loop
from mct.train.data import training_batches
from mct.train import build_optimizer, learning_rate, train

TINY = """
[model]
d_model = 32
num_layers = 1
num_heads = 2
d_ff = 64
max_seq_len = 24

[data]
task = "add"
min_digits = 1
max_digits = 2
max_seq_len = 24
n_val = 60
n_test = 80

[train]
batch_size = 16
lr = 3e-3
warmup_steps = 5
max_steps = 30
eval_every = 15
eval_samples = 40
save_every = 10
log_every = 1
device = "cpu"
num_threads = 1
"""


def tiny_config(tmp_path, extra: str = "", **overrides):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY + extra)
    return load_config(path, overrides=overrides, environ={})


def losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def test_run_folder_holds_every_promised_file(tmp_path):
    result = train(tiny_config(tmp_path), tmp_path / "run")
    run = tmp_path / "run"
    for name in ("last.pt", "best.pt", "config.toml", "metrics.jsonl", "curves.png", "eval.json", "summary.json"):
        assert (run / name).is_file(), name
    assert result.steps == 30 and result.stopped == "max_steps"
    assert json.loads((run / "summary.json").read_text()) == json.loads(json.dumps(result.to_dict()))
    report = json.loads((run / "eval.json").read_text())
    assert report["n"] == 80 and 0.0 <= report["exact_match"] <= 1.0
    assert result.test["exact_match"] == report["exact_match"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"step", "loss", "lr", "tokens_per_s"} <= set(rows[0])
    assert [r["step"] for r in rows if "val_exact_match" in r] == [15, 30]
    assert load_checkpoint(run / "best.pt").config.model.d_model == 32
    # the resolved config reproduces the run
    assert load_config(run / "config.toml", environ={}).train.max_steps == 30


def test_loss_goes_down(tmp_path):
    train(tiny_config(tmp_path, max_steps=None), tmp_path / "run")
    sequence = losses(tmp_path / "run")
    assert sum(sequence[-5:]) / 5 < 0.8 * sum(sequence[:5]) / 5


def test_refuses_to_overwrite_a_run_without_force(tmp_path):
    config = tiny_config(tmp_path, train={"max_steps": 2, "eval_every": 2})
    train(config, tmp_path / "run")
    before = (tmp_path / "run" / "last.pt").read_bytes()
    with pytest.raises(MctError, match="already holds a run.*force=True"):
        train(config, tmp_path / "run")
    assert (tmp_path / "run" / "last.pt").read_bytes() == before
    train(config, tmp_path / "run", force=True)


def test_resume_reproduces_the_uninterrupted_loss_sequence(tmp_path):
    config = tiny_config(tmp_path)
    train(config, tmp_path / "straight")

    def interrupt_at_step_20(event):
        if event["event"] == "step" and event["step"] == 20:
            raise KeyboardInterrupt

    result = train(config, tmp_path / "resumed", progress=interrupt_at_step_20)
    assert result.stopped == "interrupted" and result.steps == 20
    assert load_checkpoint(tmp_path / "resumed" / "last.pt", with_train_state=True).train_state["step"] == 20
    resumed = train(config, tmp_path / "resumed", resume=True)
    assert resumed.resumed_from_step == 20 and resumed.steps == 30
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")


def test_resume_with_another_model_names_the_fields(tmp_path):
    train(tiny_config(tmp_path, train={"max_steps": 2, "eval_every": 2}), tmp_path / "run")
    changed = tiny_config(tmp_path, model={"d_ff": 128}, train={"max_steps": 4})
    with pytest.raises(MctError, match=r"model\.d_ff: 64 -> 128"):
        train(changed, tmp_path / "run", resume=True)


def test_resume_needs_a_last_checkpoint(tmp_path):
    with pytest.raises(MctError, match="no last.pt"):
        train(tiny_config(tmp_path), tmp_path / "empty", resume=True)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from mct.train import step as step_module

    real = step_module.summed_loss
    calls = {"n": 0}

    def poisoned(model, ids, labels, **options):
        calls["n"] += 1
        loss = real(model, ids, labels, **options)
        return loss * float("nan") if calls["n"] > 12 else loss

    monkeypatch.setattr(step_module, "summed_loss", poisoned)
    with pytest.raises(MctError, match="loss became nan by step 13.*last good"):
        train(tiny_config(tmp_path), tmp_path / "run")
    state = load_checkpoint(tmp_path / "run" / "last.pt", with_train_state=True).train_state
    assert state["step"] == 10


def test_a_nan_loss_is_caught_before_a_checkpoint_between_log_lines(tmp_path, monkeypatch):
    """log_every 7, save_every 10: the loss turns NaN at step 9, and step 10 writes last.pt; the loss is
    checked there first, so no checkpoint with NaN weights is ever written (the run stays resumable)."""
    from mct.train import step as step_module

    real = step_module.summed_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] > 8 else loss

    monkeypatch.setattr(step_module, "summed_loss", poisoned)
    config = tiny_config(tmp_path, train={"log_every": 7, "eval_every": 15, "save_every": 10})
    with pytest.raises(MctError, match="loss became nan by step 10; training stopped and no checkpoint"):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_early_stop_at_target_accuracy(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "validate", lambda *a, **k: (0.01, 1.0))
    result = train(tiny_config(tmp_path, train={"target_accuracy": 0.99, "max_steps": 60}), tmp_path / "run")
    assert result.stopped == "target_reached" and result.steps == 30  # two evaluations in a row at the target
    once = train(tiny_config(tmp_path, train={"target_accuracy": 0.99, "target_patience": 1}), tmp_path / "once")
    assert once.stopped == "target_reached" and once.steps == 15


def lr_rows(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["lr"] for r in rows if "lr" in r}


def test_a_cooldown_after_the_target_lowers_the_rate_to_zero_then_stops(tmp_path, monkeypatch):
    """The target at step 15 starts 7 more steps with the rate falling linearly from the schedule's to 0;
    the run ends at step 22 with one last evaluation, and no target checks run in the cooldown."""
    monkeypatch.setattr(loop, "validate", lambda *a, **k: (0.01, 1.0))
    checks = []
    monkeypatch.setattr(loop, "at_target", lambda *a, **k: checks.append(1))  # fails: only evaluations count
    events = []
    config = tiny_config(tmp_path, train={"target_accuracy": 0.99, "target_patience": 1, "max_steps": 60,
                                          "cooldown_steps": 7, "target_check_every": 1})
    result = train(config, tmp_path / "run", progress=events.append)
    assert result.stopped == "target_reached" and result.steps == 22
    assert len(checks) == 14  # steps 1-14; none in the cooldown
    assert [e for e in events if e["event"] == "cooldown"] == [{"event": "cooldown", "step": 15, "steps": 7, "pool": 1}]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val_exact_match" in r] == [15, 22]
    lr = lr_rows(tmp_path / "run")  # the rate of the step that ended at each logged step
    at_target = learning_rate(15, config)
    assert lr[15] == pytest.approx(learning_rate(14, config))
    assert [lr[s] for s in range(16, 23)] == pytest.approx([at_target * (7 - k) / 7 for k in range(7)])


def test_learning_rate_in_a_cooldown_falls_linearly_and_ends_by_max_steps(tmp_path):
    config = tiny_config(tmp_path, train={"lr": 1.0, "warmup_steps": 10, "max_steps": 110, "cooldown_steps": 20})
    start = learning_rate(40, config)
    assert learning_rate(40, config, cooldown_from=40) == pytest.approx(start)  # no jump where it begins
    assert learning_rate(50, config, cooldown_from=40) == pytest.approx(start / 2)
    assert learning_rate(59, config, cooldown_from=40) == pytest.approx(start / 20)
    assert learning_rate(60, config, cooldown_from=40) == 0
    assert learning_rate(39, config, cooldown_from=40) == learning_rate(39, config)  # before it: the schedule
    # a target reached 10 steps before max_steps cools down in those 10
    assert learning_rate(105, config, cooldown_from=100) == pytest.approx(learning_rate(100, config) / 2)


def test_a_cooldown_is_cut_at_max_steps_and_a_target_at_the_end_stops_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "validate", lambda *a, **k: (0.01, 1.0))
    config = tiny_config(tmp_path, train={"target_accuracy": 0.99, "target_patience": 1, "max_steps": 20,
                                          "cooldown_steps": 10})
    result = train(config, tmp_path / "cut")  # target at 15, cooldown 15-20
    assert result.stopped == "target_reached" and result.steps == 20
    assert lr_rows(tmp_path / "cut")[20] == pytest.approx(learning_rate(15, config) / 5)
    config = tiny_config(tmp_path, train={"target_accuracy": 0.99, "target_patience": 1, "max_steps": 15,
                                          "cooldown_steps": 10})
    assert train(config, tmp_path / "end").steps == 15


@pytest.mark.parametrize("pool", [1, 3])
def test_an_interrupted_cooldown_resumes_where_it_was(pool, tmp_path, monkeypatch):
    """With `cooldown_pool` too: the stream has moved on by `pool` batches a cooldown step, and a resume
    picks it up there."""
    monkeypatch.setattr(loop, "validate", lambda *a, **k: (0.01, 1.0))
    config = tiny_config(tmp_path, train={"target_accuracy": 0.99, "target_patience": 1, "max_steps": 60,
                                          "cooldown_steps": 7, "save_every": 1, "cooldown_pool": pool})
    train(config, tmp_path / "straight")

    def interrupt_at_step_18(event):
        if event["event"] == "step" and event["step"] == 18:
            raise KeyboardInterrupt

    assert train(config, tmp_path / "resumed", progress=interrupt_at_step_18).stopped == "interrupted"
    resumed = train(config, tmp_path / "resumed", resume=True)
    assert resumed.stopped == "target_reached" and resumed.steps == 22
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")
    assert lr_rows(tmp_path / "resumed") == lr_rows(tmp_path / "straight")


def test_target_checks_between_evaluations_stop_at_their_cadence(tmp_path, monkeypatch):
    """A check that passes is a full, logged evaluation and counts towards the patience; one that fails
    resets it and logs nothing."""
    monkeypatch.setattr(loop, "validate", lambda *a, **k: (0.01, 1.0))
    checked = []

    def check(model, tensors, precision, device, target):
        checked.append(len(checked))
        return None if len(checked) == 1 else (0.01, 1.0)  # the first check (step 5) fails, the next ones pass

    monkeypatch.setattr(loop, "at_target", check)
    config = tiny_config(tmp_path, train={"target_accuracy": 0.99, "max_steps": 60, "target_check_every": 5})
    result = train(config, tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val_exact_match" in r] == [10, 15]  # step 5's check failed: no row
    assert result.stopped == "target_reached" and result.steps == 15 and len(checked) == 2  # 15 is an evaluation


def test_time_spent_in_target_checks_is_not_training_time(tmp_path, monkeypatch):
    import time

    def slow_failing_check(*args):
        time.sleep(0.05)
        return None

    monkeypatch.setattr(loop, "at_target", slow_failing_check)
    config = tiny_config(tmp_path, train={"target_accuracy": 0.99, "target_check_every": 1, "eval_every": 30})
    result = train(config, tmp_path / "run")  # 29 checks: 1.45 s of sleeping
    assert result.stopped == "max_steps" and result.train_s < result.wall_s - 1.4


def test_target_check_agrees_with_the_validation_exact_match(tiny_trained_checkpoint):
    """`at_target` (chunked, stopping at the first error too many) is `validate`'s exact match >= target,
    and then returns `validate`'s loss and exact match."""
    from mct.data.generate import sample_heldout
    from mct.device import choose_precision
    from mct.train.data import validation_tensors

    ckpt = load_checkpoint(tiny_trained_checkpoint)
    records, _ = sample_heldout(ckpt.config.data, 300, 10, seed=7)
    tensors = validation_tensors(records, ckpt.tokenizer, ckpt.config)
    precision, cpu = choose_precision(torch.device("cpu")), torch.device("cpu")
    ids, labels, scored = tensors
    scored = scored.clone()
    scored[:200:2] = False  # nothing scored: right by definition (the tiny model gets most problems wrong)
    tensors = ids, labels, scored
    loss, exact = loop.validate(ckpt.model, tensors, precision, cpu)
    wrong = round((1 - exact) * 300)
    assert 10 < wrong < 300 - 10  # the check is judged on both sides of the model's accuracy
    for target in (exact - 2 / 300, exact - 1 / 300, exact, exact + 1 / 300, 1.0, 0.5):
        for chunk in (1, 7, 256, 1024):
            scored = loop.at_target(ckpt.model, tensors, precision, cpu, min(target, 1.0), batch_size=chunk)
            assert (scored is not None) == (exact >= min(target, 1.0))
            if scored is not None:
                assert scored[1] == exact and scored[0] == pytest.approx(loss, rel=1e-6)


def test_allowed_errors_is_the_most_misses_at_the_target():
    for n in (1, 7, 1000, 2000, 3000):
        for target in (0.5, 0.9, 0.99, 0.999, 0.9995, 1.0, 1 / 3):
            expected = max((w for w in range(n + 1) if (n - w) / n >= target), default=-1)
            assert loop.allowed_errors(n, target) == expected


def test_teacher_forced_validation_exact_match_equals_decoding_on_a_trained_model(tiny_trained_checkpoint):
    """Argmax along the reference at every scored token <=> greedy decoding writes the reference."""
    from mct.checkpoint import load_checkpoint
    from mct.data.generate import sample_heldout
    from mct.device import choose_precision
    from mct.evaluate import evaluate_records
    from mct.train.data import validation_tensors

    ckpt = load_checkpoint(tiny_trained_checkpoint)
    data_format = DataFormat.from_dict(ckpt.data_format)
    records, _ = sample_heldout(ckpt.config.data, 300, 10, seed=7)
    tensors = validation_tensors(records, ckpt.tokenizer, ckpt.config)
    precision, cpu = choose_precision(torch.device("cpu")), torch.device("cpu")
    wrong = {e["prompt"] for e in evaluate_records(ckpt.model, ckpt.tokenizer, data_format, records).errors}
    for i, record in enumerate(records):  # problem by problem: teacher-forced right <=> decoded right
        one = tuple(t[i:i + 1] for t in tensors)
        assert (loop.validate(ckpt.model, one, precision, cpu)[1] == 1.0) == (record.prompt not in wrong)
    _, teacher_forced = loop.validate(ckpt.model, tensors, precision, cpu)
    assert teacher_forced == 1 - len(wrong) / len(records)


def test_learning_rate_warms_up_then_decays_to_the_floor(tmp_path):
    config = tiny_config(tmp_path, train={"lr": 1.0, "warmup_steps": 10, "max_steps": 110, "min_lr_ratio": 0.1})
    assert learning_rate(0, config) == pytest.approx(0.1)
    assert learning_rate(9, config) == pytest.approx(1.0)
    assert learning_rate(60, config) == pytest.approx(0.55)
    assert learning_rate(110, config) == pytest.approx(0.1)
    values = [learning_rate(s, config) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_weight_decay_only_on_matrices(tmp_path):
    config = tiny_config(tmp_path)
    config.model.vocab_size = 19
    optimizer = build_optimizer(create_model(config.model), config)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] > 0 and all(p.dim() >= 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0 and all(p.dim() < 2 for p in no_decay["params"])
    config.train.decay_all = True  # the grokking papers' AdamW: norms and biases decay too
    model = create_model(config.model)
    decay, no_decay = build_optimizer(model, config).param_groups
    assert len(decay["params"]) == len(list(model.parameters())) and not no_decay["params"]


def test_a_cooldown_pool_trains_on_the_hardest_rows_of_that_many_batches(tmp_path):
    """Before the cooldown (or with a pool of 1) a step's batch is the stream's next one; in it, the first
    half of the stream's next batch and, for the other half, the rows of the rest of the next
    `cooldown_pool` batches with the highest summed loss."""
    from mct.device import choose_precision
    from mct.train.step import TrainState, draw_batch, summed_loss

    config = tiny_config(tmp_path, train={"cooldown_pool": 3})
    tokenizer, cpu = Tokenizer(), torch.device("cpu")
    config.model.vocab_size = tokenizer.vocab_size
    torch.manual_seed(0)
    model = create_model(config.model)

    def stream():
        return training_batches(config, tokenizer, DataFormat.from_config(config.data), set(), cpu)[0]

    state, twin = TrainState(model, model, build_optimizer(model, config), None, stream()), stream()
    ids, labels = draw_batch(state, config, choose_precision(cpu), cpu)  # no cooldown yet: a plain batch
    plain_ids, plain_labels = twin.next_batch()
    assert torch.equal(ids, plain_ids) and torch.equal(labels, plain_labels)

    state.cooldown_from = 0
    ids, labels = draw_batch(state, config, choose_precision(cpu), cpu)
    drawn = [twin.next_batch() for _ in range(3)]
    pool_ids, pool_labels = torch.cat([d[0] for d in drawn]), torch.cat([d[1] for d in drawn])
    half = config.train.batch_size // 2
    with torch.no_grad():
        row_losses = torch.stack([summed_loss(model, pool_ids[i:i + 1], pool_labels[i:i + 1])
                                  for i in range(half, len(pool_ids))])
    hardest = half + row_losses.topk(config.train.batch_size - half).indices
    assert ids.shape == plain_ids.shape and torch.equal(ids[:half], drawn[0][0][:half])
    def rows(ids, labels):  # (ids, labels) pairs: each problem keeps its own labels
        return sorted(zip(map(tuple, ids.tolist()), map(tuple, labels.tolist())))

    assert rows(ids[half:], labels[half:]) == rows(pool_ids[hardest], pool_labels[hardest])
    assert torch.equal(state.data.next_batch()[0], twin.next_batch()[0])  # the stream moved on by 3 batches

    config.train.cooldown_pool = 1
    assert torch.equal(draw_batch(state, config, choose_precision(cpu), cpu)[0], twin.next_batch()[0])


def test_summed_loss_without_the_last_position_equals_the_models_full_loss(tmp_path):
    """The step does not feed the last position (it predicts nothing); causal attention leaves every other
    logit as it was, so the summed loss over labelled tokens is the model's own mean loss times their count."""
    from mct.train.step import labelled, summed_loss

    config = tiny_config(tmp_path)
    config.model.vocab_size = 19
    torch.manual_seed(0)
    model = create_model(config.model)
    data, _ = training_batches(config, Tokenizer(), DataFormat.from_config(config.data), set(), torch.device("cpu"))
    ids, labels = data.next_batch()
    assert (labels[:, -1] != -100).any()  # the last column carries loss: the trim must not lose it
    with torch.no_grad():
        _, mean_loss, _ = model(ids, labels=labels)
        total = summed_loss(model, ids, labels)
    assert float(total) == pytest.approx(float(mean_loss * labelled(labels)), rel=1e-5)


def test_the_marker_loss_weight_scales_the_answer_marker_and_eos_only(tmp_path):
    from mct.train.step import summed_loss

    config = tiny_config(tmp_path)
    config.model.vocab_size = 19
    torch.manual_seed(0)
    model = create_model(config.model)
    tokenizer = Tokenizer()
    data, _ = training_batches(config, tokenizer, DataFormat.from_config(config.data), set(), torch.device("cpu"))
    ids, labels = data.next_batch()
    fixed = (labels == tokenizer.token_to_id["#"]) | (labels == tokenizer.eos_id)
    assert fixed.any() and ((labels != -100) & ~fixed).any()
    with torch.no_grad():
        full = summed_loss(model, ids, labels)
        answer_only = summed_loss(model, ids, torch.where(fixed, -100, labels))
        assert float(summed_loss(model, ids, labels, marker_weight=0.0)) == pytest.approx(float(answer_only), rel=1e-5)
        half = summed_loss(model, ids, labels, marker_weight=0.5)
    assert float(half) == pytest.approx(float(answer_only + 0.5 * (full - answer_only)), rel=1e-5)


def test_the_cpu_optimizer_is_fused_where_torch_has_the_kernel(tmp_path):
    from torch.torch_version import TorchVersion

    config = tiny_config(tmp_path)
    config.model.vocab_size = 19
    optimizer = build_optimizer(create_model(config.model), config)
    assert optimizer.defaults["fused"] is (True if TorchVersion(torch.__version__) >= "2.4" else None)


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    one = train(tiny_config(tmp_path, train={"max_steps": 6, "eval_every": 6}), tmp_path / "one")
    two = train(tiny_config(tmp_path, train={"max_steps": 6, "eval_every": 6, "grad_accum_steps": 2}), tmp_path / "two")
    assert one.steps == two.steps
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-4)


def test_torchrun_two_cpu_processes_match_one_process(tmp_path):
    """Same global batch, 2 gloo processes vs 1: the loss sequences agree to 1e-4 (float sums differ in order)."""
    config_path = tmp_path / "tiny.toml"
    config_path.write_text(TINY.replace("max_steps = 30", "max_steps = 8").replace("eval_every = 15", "eval_every = 8"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCT_")}
    env["OMP_NUM_THREADS"] = "1"
    single = subprocess.run([sys.executable, "-m", "mct", "train", "--config", str(config_path), "--out",
                             str(tmp_path / "one"), "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr
    double = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             "-m", "mct", "train", "--config", str(config_path),
                             "--out", str(tmp_path / "two"), "--json"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert double.returncode == 0, double.stderr
    summary = json.loads(double.stdout)
    assert summary["world_size"] == 2 and summary["steps"] == 8
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-4, abs=1e-5)


def _write_data(tmp_path, n_train=200):
    from mct.data.generate import write_dataset

    config = load_config(None, overrides={"data": {"max_digits": 2, "n_train": n_train, "n_val": 30, "n_test": 40}},
                         environ={})
    write_dataset(config.data, tmp_path / "data")
    return {"train_path": str(tmp_path / "data" / "train.jsonl"), "val_path": str(tmp_path / "data" / "val.jsonl"),
            "test_path": str(tmp_path / "data" / "test.jsonl")}


def test_resume_from_a_training_file_reproduces_the_loss_sequence(tmp_path):
    """Batch 16 x 30 steps crosses the 200-record file twice: the epoch and position resume too."""
    config = tiny_config(tmp_path, data=_write_data(tmp_path))
    train(config, tmp_path / "straight")

    def interrupt_at_step_17(event):
        if event["event"] == "step" and event["step"] == 17:
            raise KeyboardInterrupt

    train(config, tmp_path / "resumed", progress=interrupt_at_step_17)
    train(config, tmp_path / "resumed", resume=True)
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")


def test_a_training_file_never_trains_on_held_out_problems(tmp_path):
    from mct.data.dataset import read_records
    from mct.data.format import DataFormat
    from mct.tokenizer import Tokenizer

    paths = _write_data(tmp_path)
    config = tiny_config(tmp_path, data=paths)
    data_format = DataFormat.from_config(config.data)
    records = read_records(paths["train_path"])
    held_out = {data_format.operands_from_prompt(r.prompt) for r in records[:50]}
    data, _ = training_batches(config, Tokenizer(), data_format, held_out, "cpu")
    assert data.size == len(records) - 50
    seen = set()
    for _ in range(40):
        seen |= {tuple(row) for row in data.next_batch()[0].tolist()}
    tokenizer = Tokenizer()
    padded = lambda ids: tuple(ids + [tokenizer.pad_id] * (data.width - len(ids)))  # noqa: E731
    assert not any(padded(tokenizer.encode(r.prompt + r.target)) in seen for r in records[:50])
    assert len(seen) == len(records) - 50  # every other problem is seen (40 batches of 16 > 150)


def test_training_leaves_the_callers_random_streams_and_backend_alone(tmp_path):
    import random

    import matplotlib

    torch.manual_seed(123)
    random.seed(123)
    expected_torch, expected_python = torch.rand(3), random.random()
    torch.manual_seed(123)
    random.seed(123)
    backend = matplotlib.get_backend()
    train(tiny_config(tmp_path, train={"max_steps": 2, "eval_every": 2}), tmp_path / "run")
    assert torch.equal(torch.rand(3), expected_torch) and random.random() == expected_python
    assert matplotlib.get_backend() == backend


class _ReplayingGraph:
    """Stands in for a CUDA graph on the CPU: capture records the step function without running it, and
    replay runs it and writes into the captured output tensors, as a real graph does. A captured backward
    writes the gradients it allocated (it does not add to them), hence the reset before each replay."""

    def __init__(self, fn, optimizer):
        self.fn, self.optimizer = fn, optimizer
        self.outputs = (torch.zeros(()), torch.zeros((), dtype=torch.long))

    def replay(self):
        self.optimizer.zero_grad(set_to_none=True)
        for static, fresh in zip(self.outputs, self.fn()):
            static.copy_(fresh)


class _NoStream:
    def wait_stream(self, other):
        pass


# a place-value model (coupled ids, a relative place bias, far keys masked) in the tiny config
PLACE_VALUE = {"model": {"absolute_positions": "coupled", "place_codes": "relative", "place_window": 2, "max_place": 12,
                         "place_far": "masked", "place_base": 2, "use_rope": False},
               "data": {"pad_operands": False, "pad_to_longer": True, "answer_order": "reversed"}}


def _fresh_state(config, tokenizer, device, cooldown_from=None, capturable=False, wrap=None):
    """A TrainState of the config's model (seed 0) and stream on `device`; `wrap` (e.g. torch.compile) gives
    the model that is called."""
    from mct.train.step import TrainState

    torch.manual_seed(0)
    model = create_model(config.model).to(device)
    data, _ = training_batches(config, tokenizer, DataFormat.from_config(config.data), set(), device)
    state = TrainState((wrap or (lambda m: m))(model), model, build_optimizer(model, config, capturable=capturable),
                       torch.amp.GradScaler(device.type, enabled=False), data)
    state.cooldown_from = cooldown_from
    return state


def _graphed_against_eager(tmp_path, monkeypatch, capture, steps: int, cooldown_from=None, wrap=None, **overrides):
    """Run `steps` of GraphedStep (CUDA streams faked for the CPU; `capture(fn, state)` stands in for
    `capture_graph`) and as many eager `train_step`s from the same start. Returns (the GraphedStep, its
    losses, the eager losses)."""
    import contextlib

    from mct.device import choose_precision
    from mct.train import step as step_module
    from mct.train.distributed import Dist

    config = tiny_config(tmp_path, **overrides)
    tokenizer = Tokenizer()
    config.model.vocab_size = tokenizer.vocab_size
    cpu = torch.device("cpu")
    precision = choose_precision(cpu)
    eager_state, graphed_state = (_fresh_state(config, tokenizer, cpu, cooldown_from, wrap=wrap) for _ in range(2))
    monkeypatch.setattr(step_module, "capture_graph", lambda fn: capture(fn, graphed_state))
    monkeypatch.setattr(torch.cuda, "Stream", _NoStream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: _NoStream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    graphed = step_module.GraphedStep(graphed_state, config, precision, cpu, tokenizer.pad_id, warmup=2)
    eager = [float(step_module.train_step(eager_state, config, precision, cpu, Dist(), tokenizer.pad_id)[0])
             for _ in range(steps)]
    return graphed, [float(graphed()[0]) for _ in range(steps)], eager


def test_graphed_step_bookkeeping_matches_the_eager_step(tmp_path, monkeypatch):
    """Warm-up, capture and replay of GraphedStep (faked on the CPU) give the eager loss sequence."""
    def fake_capture(fn, state):
        graph = _ReplayingGraph(fn, state.optimizer)
        return graph, graph.outputs

    graphed, replayed, eager = _graphed_against_eager(tmp_path, monkeypatch, fake_capture, 8, train={"grad_clip": 0.5})
    assert graphed.graph is not None and graphed.failed is None and graphed.state.step == 8
    assert replayed == pytest.approx(eager, rel=1e-5)
    # in a cooldown with a pool, the graph replays on the hardest rows, as the eager step trains on them
    graphed, replayed, eager = _graphed_against_eager(tmp_path, monkeypatch, fake_capture, 6, cooldown_from=0,
                                                      train={"cooldown_pool": 3, "cooldown_steps": 10})
    assert graphed.graph is not None and replayed == pytest.approx(eager, rel=1e-5)
    # a place-value model: its place ids and random offsets are drawn inside the step, the same in both
    graphed, replayed, eager = _graphed_against_eager(tmp_path, monkeypatch, fake_capture, 6, **PLACE_VALUE)
    assert graphed.graph is not None and replayed == pytest.approx(eager, rel=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (the CPU tests above fake the capture)")
@pytest.mark.parametrize("cooldown_from, model", [(None, {}), (0, {}), (None, PLACE_VALUE)],
                         ids=["plain", "pooled-cooldown", "place-value"])
def test_the_step_captured_on_a_gpu_trains_as_the_eager_step(tmp_path, cooldown_from, model):
    """A real CUDA graph: GraphedStep's warm-up, capture and replays give the eager step's losses and
    weights (fp32), with plain batches, with a pooled cooldown (the hardest rows chosen before the
    replay), and for a place-value model (place ids and offsets drawn inside the captured step)."""
    from mct.device import choose_precision
    from mct.train import step as step_module
    from mct.train.distributed import Dist

    config = tiny_config(tmp_path, train={"cooldown_pool": 3, "cooldown_steps": 10}, **model)
    tokenizer = Tokenizer()
    config.model.vocab_size = tokenizer.vocab_size
    cuda = torch.device("cuda")
    precision = choose_precision(cuda, "fp32")
    eager_state, graphed_state = (_fresh_state(config, tokenizer, cuda, cooldown_from, capturable=True)
                                  for _ in range(2))
    graphed = step_module.GraphedStep(graphed_state, config, precision, cuda, tokenizer.pad_id, warmup=2)
    replayed = [float(graphed()[0]) for _ in range(8)]
    eager = [float(step_module.train_step(eager_state, config, precision, cuda, Dist(), tokenizer.pad_id)[0])
             for _ in range(8)]
    assert graphed.graph is not None and graphed.failed is None
    assert replayed == pytest.approx(eager, rel=1e-4)
    for a, b in zip(graphed_state.raw_model.parameters(), eager_state.raw_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_a_compiled_model_compiles_in_the_warm_up_and_nothing_recompiles_in_the_capture(tmp_path, monkeypatch):
    """--compile keeps the CUDA graph: the warm-up steps and the capture see the same input buffers, so
    torch.compile (which guards on strides; the stream's batches were then views of wider tensors) does not
    recompile inside the capture. On an H200 it did, and the capture failed ("operation failed due to a
    previous error during capture"), so --compile trained without the graph."""
    def capture_running_once(fn, state):
        fn()  # a real capture runs the step's Python once, so the compiler's guards are checked here
        graph = _ReplayingGraph(fn, state.optimizer)
        return graph, graph.outputs

    graphed, _, _ = _graphed_against_eager(tmp_path, monkeypatch, capture_running_once, 5,
                                           wrap=lambda m: torch.compile(m, backend="eager"))
    assert graphed.failed is None and graphed.graph is not None


def test_a_failed_capture_trains_on_eagerly_and_says_why(tmp_path, monkeypatch):
    """A step that cannot be captured (as place ids were on an H200) keeps training, eagerly, with the same
    losses as the eager step, and the reason is kept for the run's summary."""
    def refusing_capture(fn, state):
        raise RuntimeError("operation not permitted when stream is capturing")

    fallback, losses, eager = _graphed_against_eager(tmp_path, monkeypatch, refusing_capture, 6)
    assert fallback.graph is None and fallback.state.step == 6
    assert fallback.failed == "RuntimeError: operation not permitted when stream is capturing"
    assert losses == pytest.approx(eager, rel=1e-5)


class _CaptureGuard(torch.overrides.TorchFunctionMode):
    """Fails on the torch calls of mct's code that CUDA graph capture forbids, so a CPU test finds what
    would make `GraphedStep`'s capture fail on a GPU (the run then trains eagerly: 3-5x slower on an H200).

    Legal under capture, so passed: Python numbers given to ops (`ids == 5`, `torch.where(m, x, 0)`),
    factories with a device (`torch.zeros`, `torch.randint`), integer-tensor indexing. Only calls made
    from mct's files are checked: torch's own Python helpers (AdamW, clip_grad_norm_) branch on the
    device, and their CPU branches say nothing of their CUDA ones (AdamW wraps its step increment in
    `torch.tensor(1.0, device="cpu")` when its steps live on the CPU); capturable AdamW and foreach
    clipping are capture-safe on CUDA by design."""

    # a tensor made from Python or numpy data: a copy from pageable host memory to the device
    FROM_HOST = {"torch.tensor", "torch.Tensor.new_tensor"}
    MAYBE_FROM_HOST = {"torch.as_tensor", "torch.asarray"}  # fine when given a tensor (no copy)
    # a tensor's value read on the host: waits for the device
    HOST_READS = {f"torch.Tensor.{name}" for name in
                  ("item", "tolist", "numpy", "__array__", "__bool__", "__int__", "__float__", "__index__",
                   "__complex__")}
    # results whose shape depends on the values: the host must read their size
    DATA_SHAPED = {"torch.nonzero", "torch.Tensor.nonzero", "torch.argwhere", "torch.Tensor.argwhere",
                   "torch.masked_select", "torch.Tensor.masked_select", "torch.unique", "torch.Tensor.unique",
                   "torch.unique_consecutive", "torch.Tensor.unique_consecutive"}
    # torch's Python front ends of the functions above, between the caller and this mode
    FRONT_ENDS = ("torch/overrides.py", "torch/_tensor.py", "torch/functional.py")

    def __init__(self, code: Path | None = None):
        super().__init__()
        import mct

        self.code = str(code or Path(mct.__file__).parent).replace("\\", "/") + "/"  # whose calls are checked

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = torch.overrides.resolve_name(func) or getattr(func, "__name__", repr(func))
        why = None
        if name in self.FROM_HOST or (name in self.MAYBE_FROM_HOST and not torch.is_tensor(args[0])):
            why = "a tensor from host data"
        elif name in self.HOST_READS:
            why = "a read of a tensor's value on the host"
        elif name in self.DATA_SHAPED or (name == "torch.where" and len(args) + len(kwargs) == 1):
            why = "a result whose shape depends on the data"
        elif name in ("torch.repeat_interleave", "torch.Tensor.repeat_interleave") and "output_size" not in kwargs:
            why = "a result whose shape depends on the data (no output_size)"
        elif name == "torch.Tensor.__getitem__" and _has_mask(args[1]):
            why = "boolean-mask indexing (a result whose shape depends on the data)"
        elif name == "torch.Tensor.__setitem__" and _has_mask(args[1]) and torch.is_tensor(args[2]):
            # x[mask] = number becomes masked_fill_ (fine); a device tensor's value takes index_put_'s nonzero
            why = "boolean-mask assignment of a tensor"
        if why:
            frame = sys._getframe(1)
            while frame is not None and frame.f_code.co_filename.replace("\\", "/").endswith(self.FRONT_ENDS):
                frame = frame.f_back
            path = frame.f_code.co_filename.replace("\\", "/") if frame is not None else ""
            if path.startswith(self.code):
                line = linecache.getline(path, frame.f_lineno).strip()
                raise AssertionError(f"CUDA graph capture forbids {name} ({why}) at "
                                     f"{path[len(self.code):]}:{frame.f_lineno}: {line}")
        return func(*args, **kwargs)


def _has_mask(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(torch.is_tensor(p) and p.dtype in (torch.bool, torch.uint8) for p in parts)


def test_the_capture_guard_flags_what_capture_forbids_and_passes_what_it_allows():
    import numpy as np

    x, mask = torch.arange(6.0), torch.arange(6) > 2
    forbidden = [lambda: torch.tensor([1, 2]), lambda: torch.as_tensor([1, 2]), lambda: x.new_tensor([1.0]),
                 lambda: x[0].item(), lambda: x.tolist(), lambda: bool(x[1]), lambda: int(x[1]),
                 lambda: float(x[1]), lambda: [0, 1][x.long()[1]], lambda: x.numpy(), lambda: np.asarray(x),
                 lambda: torch.nonzero(x), lambda: x.nonzero(), lambda: torch.argwhere(x), lambda: x.unique(),
                 lambda: torch.masked_select(x, mask), lambda: x[mask], lambda: x[:, None][mask],
                 lambda: torch.where(mask), lambda: torch.repeat_interleave(x.long()),
                 lambda: x.clone().__setitem__(mask, torch.ones(3))]
    allowed = [lambda: x == 5, lambda: torch.where(mask, x, 0), lambda: x.masked_fill(mask, 0),
               lambda: torch.zeros(3), lambda: torch.randint(0, 3, (2, 1)), lambda: torch.as_tensor(x),
               lambda: x[torch.arange(2)], lambda: x[1:], lambda: x.clone().__setitem__(mask, 0.0),
               lambda: (x > 2).any(), lambda: x.max(), lambda: x.long().cumsum(-1)]
    guard = _CaptureGuard(code=Path(__file__).parent)
    for call in forbidden:
        with pytest.raises(AssertionError, match="CUDA graph capture forbids"), guard:
            call()
    for call in allowed:
        with guard:
            call()


@pytest.mark.parametrize("name", ["default", "add-coupled", "add10-tiny", "add-abacus", "sub-coupled", "rope-add5"])
def test_the_graphed_step_does_nothing_cuda_graph_capture_forbids(name, monkeypatch):
    """GraphedStep._body (positions, forward, loss, backward, clipping, AdamW) of each kind of model calls
    nothing that stops CUDA graph capture: on the GPU the coupled and abacus configs trained eagerly
    because their place ids were built from Python lists (torch.tensor) inside the step."""
    from mct.device import choose_precision
    from mct.train import step as step_module

    # the capturable AdamW the GPU uses (state on the device, no reads of it), allowed on the CPU here
    adam = importlib.import_module("torch.optim.adam")  # the module (torch.optim.adam names the function)
    monkeypatch.setattr(adam, "_get_capturable_supported_devices", lambda supports_xla=True: ["cpu"])

    def from_numpy(array):  # a tensor from host data, which a torch function mode does not see
        raise AssertionError("CUDA graph capture forbids torch.from_numpy: a tensor from host data")

    root = Path(__file__).resolve().parent.parent
    config = load_config(root / "configs" / f"{name}.toml", environ={},
                         overrides={"train": {"batch_size": 8, "device": "cpu", "num_threads": 1, "grad_clip": 1.0}})
    tokenizer = Tokenizer()
    config.model.vocab_size = tokenizer.vocab_size
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = create_model(config.model)
    data, _ = training_batches(config, tokenizer, DataFormat.from_config(config.data), set(), cpu)
    state = step_module.TrainState(model, model, build_optimizer(model, config, capturable=True),
                                   torch.amp.GradScaler("cpu", enabled=False), data)
    graphed = step_module.GraphedStep(state, config, choose_precision(cpu), cpu, tokenizer.pad_id)
    ids, labels = data.next_batch()  # outside the graph, as in GraphedStep.__call__
    graphed._body(ids, labels)  # a warm-up step (creates the optimizer's state), as before a capture
    state.optimizer.zero_grad(set_to_none=True)
    monkeypatch.setattr(torch, "from_numpy", from_numpy)
    with _CaptureGuard():
        loss, count = graphed._body(ids, labels)
    monkeypatch.undo()
    assert torch.isfinite(loss) and int(count) > 0


@pytest.mark.parametrize("overrides, wanted", [
    ({}, True),
    ({"compile": True}, True),  # the compiled step is captured too
    ({"cuda_graphs": False}, False),
    ({"compile": True, "cuda_graphs": False}, False),
    ({"grad_accum_steps": 2}, False),  # auto: quietly off where a graph cannot hold the step
])
def test_cuda_graphs_are_chosen_on_cuda_with_or_without_compile(overrides, wanted):
    from types import SimpleNamespace

    from mct.train.distributed import Dist

    config = load_config(None, overrides={"train": overrides})
    run = SimpleNamespace(config=config, device=torch.device("cuda"), dist=Dist(),
                          precision=SimpleNamespace(use_scaler=False))
    assert loop._Run._graphs_wanted(run) is wanted
    run.device = torch.device("cpu")
    assert loop._Run._graphs_wanted(run) is False


def test_cuda_graphs_asked_for_where_they_cannot_hold_the_step_is_refused():
    from types import SimpleNamespace

    from mct.train.distributed import Dist

    config = load_config(None, overrides={"train": {"cuda_graphs": True, "compile": True, "grad_accum_steps": 2}})
    run = SimpleNamespace(config=config, device=torch.device("cuda"), dist=Dist(),
                          precision=SimpleNamespace(use_scaler=False))
    with pytest.raises(MctError, match="grad_accum_steps = 1 and precision bf16 or fp32"):
        loop._Run._graphs_wanted(run)


def test_a_compiled_model_does_not_recompile_when_the_cooldown_starts(tmp_path, monkeypatch):
    """--compile on the CPU: the stream's batches and the cooldown's hardest-problem batches have the same
    strides, so the compiled model compiles once. The stream's batches were column views of wider tensors
    (a scratch column cut off) and the cooldown's a fresh `torch.cat`: a second compilation where the
    cooldown began, 20-40 s on a cold inductor cache (here dynamo's eager backend, and a recompile fails)."""
    import functools

    monkeypatch.setattr(loop, "validate", lambda *a, **k: (0.01, 1.0))  # the target at the first evaluation
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    torch._dynamo.reset()
    config = tiny_config(tmp_path, train={"target_accuracy": 0.99, "target_patience": 1, "eval_every": 4,
                                          "max_steps": 20, "cooldown_steps": 4, "cooldown_pool": 4,
                                          "compile": True})
    with torch._dynamo.config.patch(error_on_recompile=True):
        result = train(config, tmp_path / "run")
    assert result.stopped == "target_reached" and result.steps == 8  # 4 steps, then 4 of cooldown
