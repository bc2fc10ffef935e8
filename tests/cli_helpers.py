"""Helpers shared by the CLI tests: `mct` run in-process, and a tiny training config."""

import pytest
import tomli_w

from mct.cli import main


def run_main(argv: list, capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `mct ARGV` (paths may be Path objects), run in this process."""
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def tiny_toml(**train) -> str:
    """A config file's text: one layer of width 32 on 1-2 digit addition, a few steps on the CPU (seconds
    on one thread); keyword arguments override [train] keys."""
    return tomli_w.dumps({
        "model": {"d_model": 32, "num_layers": 1, "num_heads": 2, "d_ff": 64, "max_seq_len": 24},
        "data": {"max_digits": 2, "max_seq_len": 24, "n_val": 40, "n_test": 50},
        "train": {"batch_size": 16, "max_steps": 6, "eval_every": 3, "eval_samples": 20, "device": "cpu", **train},
    })
