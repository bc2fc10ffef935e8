"""A tiny mod run that keeps a checkpoint every few steps (RUN/checkpoints/step-*.pt), for the mod part of
`mct analyze` and its docs: a + b mod 13, zero-padded, one layer; trained for seconds, so it has not grokked."""

from pathlib import Path

TINY_MOD = {
    "model": {"d_model": 32, "num_layers": 1, "num_heads": 4, "d_ff": 64, "max_seq_len": 16, "use_rope": False,
              "tie_weights": False},
    "data": {"task": "mod", "modulus": 13, "train_fraction": 0.5, "pad_operands": True, "min_digits": 1,
             "max_digits": 2, "max_seq_len": 16, "n_val": 20, "n_test": 40, "chain_mix": 0.0},
    "train": {"batch_size": 64, "max_steps": 30, "warmup_steps": 2, "eval_every": 10, "eval_samples": 20,
              "save_every": 10, "keep_every": 10, "lr": 3e-3, "weight_decay": 1.0, "device": "cpu", "num_threads": 1,
              "log_every": 1},
}


RESIDUE_TOKENS = {"data": {"residue_tokens": True, "pad_operands": False, "answer_order": "plain"}}


def train_mod_run(run_dir: Path, residue_tokens: bool = False) -> Path:
    """Train TINY_MOD (with one token per residue if asked) into `run_dir` (train.keep_every writes
    RUN/checkpoints/step-N.pt); returns best.pt."""
    from mct.config import default_config_path, load_config
    from mct.train import train

    config = load_config(default_config_path(), overrides=TINY_MOD)
    if residue_tokens:
        config = load_config(default_config_path(), overrides={**TINY_MOD, "data": {**TINY_MOD["data"],
                                                                                  **RESIDUE_TOKENS["data"]}})
    result = train(config, run_dir)
    return Path(result.best_checkpoint)
