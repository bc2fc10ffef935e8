import os
from pathlib import Path

import pytest

# Keep tests independent of the developer's MCT_* environment.
for _key in [k for k in os.environ if k.upper().startswith("MCT_")]:
    del os.environ[_key]


@pytest.fixture(autouse=True)
def _few_threads(monkeypatch):
    """Two cores: one torch thread per test process keeps the suite predictable."""
    import torch

    torch.set_num_threads(1)
    yield


# A tiny model of configs/default.toml's format (3-digit addition, zero-padded operands, reversed
# answers), trained for a few steps: it reads every prompt the docs use ("12+34=", "999+1=", "455+38=")
# but its answers are mostly wrong. Small enough to train in a few seconds on one thread.
TINY_TRAINED_OVERRIDES = {
    "model": {"d_model": 32, "d_ff": 64},
    "data": {"n_val": 40, "n_test": 40},
    "train": {"batch_size": 32, "max_steps": 30, "warmup_steps": 5, "eval_every": 30, "eval_samples": 40,
              "save_every": 30, "device": "cpu", "num_threads": 1},
}


@pytest.fixture(scope="session")
def tiny_trained_checkpoint(tmp_path_factory):
    """Path of a `best.pt` written by `mct.train.train` on the tiny config above (trained once per session);
    copy it where a test needs it, never write to it."""
    from mct.config import default_config_path, load_config
    from mct.train import train

    run_dir = tmp_path_factory.mktemp("tiny-trained") / "run"
    result = train(load_config(default_config_path(), overrides=TINY_TRAINED_OVERRIDES), run_dir)
    assert result.best_checkpoint is not None
    return Path(result.best_checkpoint)
