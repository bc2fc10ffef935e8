import pickle
import random
from pathlib import Path

import pytest
import torch

from mct.checkpoint import (FORMAT_NAME, FORMAT_VERSION, inspect_checkpoint, load_checkpoint,
                            save_checkpoint)
from mct.config import Config
from mct.errors import MctError
from mct.model import create_model
from mct.tokenizer import Tokenizer

DATA_FORMAT = {"task": "add", "answer_order": "reversed", "use_steps": False, "modulus": 113}


def small_config(**model_overrides) -> Config:
    tokenizer = Tokenizer()
    model = dict(vocab_size=tokenizer.vocab_size, d_model=32, num_layers=2, num_heads=4, d_ff=64,
                 max_seq_len=24)
    model.update(model_overrides)
    return Config(model=model, data={"max_seq_len": 24})


def make_model(config: Config):
    torch.manual_seed(0)
    return create_model(config)


@pytest.fixture
def saved(tmp_path):
    config = small_config()
    model = make_model(config)
    path = save_checkpoint(tmp_path / "ckpt.pt", model, config, Tokenizer(), DATA_FORMAT)
    return path, model, config


def probe(model):
    ids = torch.tensor([[2, 3, 4, 12, 5, 6, 17], [0, 0, 7, 12, 8, 9, 17]])
    mask = ids != 0
    model.eval()
    with torch.no_grad():
        return model(ids, mask)[0]


def test_round_trip_restores_model_config_tokenizer_and_data_format(saved):
    path, model, config = saved
    loaded = load_checkpoint(path)
    assert not loaded.model.training
    assert torch.equal(probe(loaded.model), probe(model))
    assert loaded.config == config
    assert loaded.model.config == model.config
    assert loaded.tokenizer == Tokenizer()
    assert loaded.data_format == DATA_FORMAT
    assert loaded.train_state is None and loaded.step is None
    assert loaded.model.unembed.weight is loaded.model.embed.weight


def test_train_state_round_trips_only_when_asked_for(tmp_path):
    config = small_config(tie_weights=False, use_rope=False)
    model = make_model(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.tensor([[2, 3, 4]]), labels=torch.tensor([[2, 3, 4]]))[1].backward()
    optimizer.step()
    train_state = {
        "step": 7, "optimizer": optimizer.state_dict(), "data": {"position": 123, "seed": 0},
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
    }
    path = save_checkpoint(tmp_path / "last.pt", model, config, Tokenizer(), DATA_FORMAT, train_state)
    assert load_checkpoint(path).train_state is None
    loaded = load_checkpoint(path, with_train_state=True)
    assert loaded.step == 7
    state = loaded.train_state
    assert state["data"] == {"position": 123, "seed": 0}
    assert torch.equal(state["rng"]["torch"], train_state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
    fresh = torch.optim.AdamW(loaded.model.parameters(), lr=1e-3)
    fresh.load_state_dict(state["optimizer"])
    assert fresh.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]
    assert torch.equal(probe(loaded.model), probe(model))


def test_compiled_model_checkpoint_loads_into_a_plain_model(tmp_path):
    config = small_config()
    model = make_model(config)
    compiled = torch.compile(model, backend="eager")
    assert any(k.startswith("_orig_mod.") for k in compiled.state_dict())
    path = save_checkpoint(tmp_path / "c.pt", compiled, config, Tokenizer(), DATA_FORMAT)
    raw = torch.load(path, weights_only=True)
    assert not any(k.startswith("_orig_mod.") for k in raw["model_state"])
    assert torch.equal(probe(load_checkpoint(path).model), probe(model))


def test_file_layout_is_plain_data_with_format_and_version(saved):
    path, _, config = saved
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT_NAME and raw["version"] == FORMAT_VERSION == 1
    assert raw["config"] == config.model_dump(mode="json")
    assert raw["model_config"] == config.model.model_dump(mode="json")
    assert raw["tokenizer"] == Tokenizer().to_dict()


def test_save_is_atomic_and_a_failed_save_keeps_the_old_file(saved):
    path, model, config = saved
    before = path.read_bytes()

    class NotPlain:
        pass

    with pytest.raises(TypeError, match="plain data"):
        save_checkpoint(path, model, config, Tokenizer(), DATA_FORMAT, {"step": 1, "bad": NotPlain()})
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]


@pytest.mark.parametrize("free,reason", [(0, "no space left on the device"), (10 << 30, "the write failed")])
def test_a_write_that_fails_midway_is_one_error_and_keeps_the_old_file(saved, monkeypatch, free, reason):
    """A full disk while torch.save writes: torch 2.13 raises a RuntimeError that names no cause
    ("unexpected pos ... vs ..."); it printed a traceback where it should name the path and the fix."""
    import shutil
    from collections import namedtuple

    path, model, config = saved
    before = path.read_bytes()

    def failing_save(payload, target):
        Path(target).write_bytes(b"PK\x03\x04 half")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 128064 vs 127952")

    monkeypatch.setattr(torch, "save", failing_save)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: namedtuple("usage", "total used free")(1 << 40, 0, free))
    with pytest.raises(MctError, match=rf"cannot write {path}: {reason}.*previous file, if any, is kept"):
        save_checkpoint(path, model, config, Tokenizer(), DATA_FORMAT)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_tied_copies_that_differ_are_refused_and_equal_ones_load(saved, tmp_path):
    """embed.weight and unembed.weight are one tensor saved twice; a file with NaN in one copy loaded the
    other silently (load_state_dict keeps the copy it loads last)."""
    path, model, _ = saved
    raw = torch.load(path, weights_only=True)
    assert torch.equal(raw["model_state"]["embed.weight"], raw["model_state"]["unembed.weight"])
    raw["model_state"]["embed.weight"] = torch.full_like(raw["model_state"]["embed.weight"], float("nan"))
    torch.save(raw, tmp_path / "edited.pt")
    with pytest.raises(MctError, match="embed.weight and unembed.weight are one tied tensor.*different values"):
        load_checkpoint(tmp_path / "edited.pt")
    raw["model_state"]["unembed.weight"] = raw["model_state"]["embed.weight"].clone()  # the same NaNs: one tensor
    torch.save(raw, tmp_path / "both.pt")
    assert load_checkpoint(tmp_path / "both.pt").model.embed.weight.isnan().all()


def test_inspect_checkpoint_summarises_without_building_the_model(saved):
    path, model, _ = saved
    info = inspect_checkpoint(path)
    assert info["format"] == FORMAT_NAME and info["version"] == 1 and info["step"] is None
    assert info["parameters"] == model.num_parameters()
    assert info["model"]["d_model"] == 32 and info["vocab_size"] == Tokenizer().vocab_size
    assert info["has_train_state"] is False and info["size_bytes"] > 0


# ---- refusals ----------------------------------------------------------------------------------

class RunsCodeOnUnpickling:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def assert_one_line_error(excinfo, *fragments):
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_missing_file_and_directory_are_refused(tmp_path):
    with pytest.raises(MctError) as excinfo:
        load_checkpoint(tmp_path / "nope.pt")
    assert_one_line_error(excinfo, "does not exist")
    with pytest.raises(MctError, match="not a file"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("content", [b"hello, I am a text file\n", b"", b"\x00\x01\x02garbage"])
def test_files_that_are_not_pytorch_files_are_refused(tmp_path, content):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(MctError) as excinfo:
        load_checkpoint(path)
    assert_one_line_error(excinfo, "not", str(path))


@pytest.mark.parametrize("payload", [torch.zeros(3), {"weights": torch.zeros(3)}, [1, 2, 3]])
def test_pytorch_files_that_are_not_mct_checkpoints_are_refused(tmp_path, payload):
    path = tmp_path / "foreign.pt"
    torch.save(payload, path)
    with pytest.raises(MctError) as excinfo:
        load_checkpoint(path)
    assert_one_line_error(excinfo, "not an mct checkpoint")


def test_truncated_checkpoint_is_refused(saved):
    path, _, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MctError) as excinfo:
        load_checkpoint(path)
    assert_one_line_error(excinfo, "truncated")


def test_wrong_format_version_is_refused(saved):
    path, _, _ = saved
    raw = torch.load(path, weights_only=True)
    raw["version"] = 99
    torch.save(raw, path)
    with pytest.raises(MctError) as excinfo:
        load_checkpoint(path)
    assert_one_line_error(excinfo, "version 99")


def test_weights_that_do_not_fit_the_config_are_refused(saved):
    path, _, _ = saved
    raw = torch.load(path, weights_only=True)
    raw["model_config"]["d_ff"] = 32
    torch.save(raw, path)
    with pytest.raises(MctError, match="do not fit"):
        load_checkpoint(path)


@pytest.mark.parametrize("wrap", ["torch.save", "torch.save inside a checkpoint", "raw pickle"])
def test_pickled_objects_are_refused_and_never_run(tmp_path, wrap):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    evil = RunsCodeOnUnpickling(marker)
    # sanity: a plain unpickle really would create the marker
    pickle.loads(pickle.dumps(evil)).close()
    assert marker.exists()
    marker.unlink()
    if wrap == "torch.save":
        torch.save(evil, path)
    elif wrap == "torch.save inside a checkpoint":
        torch.save({"format": FORMAT_NAME, "version": FORMAT_VERSION, "config": evil}, path)
    else:
        path.write_bytes(pickle.dumps(evil))
    for reader in (load_checkpoint, inspect_checkpoint):
        with pytest.raises(MctError) as excinfo:
            reader(path)
        assert_one_line_error(excinfo, "pickled Python objects", "refuses")
    assert not marker.exists()
