"""Problems/s of evaluation (`mct eval`'s `evaluate_records`) on additions: KV cache vs none, batch 1 vs batched.

    .venv/bin/python benchmarks/eval_speed.py            # one table
    .venv/bin/python benchmarks/eval_speed.py --json     # one JSON object

The model of each row is the first of configs/default.toml, add5.toml, add10.toml that reads operands of
that many digits (default: 3 digits, add5: 5), randomly initialised: speed does not depend on the
weights. Generation ignores `<eos>`, so every problem decodes the full `max_new_tokens` a trained model
would need for its longest answer (a trained model stops a batch once every row has emitted `<eos>`,
which is at most as long). Batch-1 rows run on a subset (default 200 problems) to keep the run short.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mct.config import load_config  # noqa: E402
from mct.data.dataset import Record  # noqa: E402
from mct.data.format import DataFormat  # noqa: E402
from mct.evaluate import evaluate_records  # noqa: E402
from mct.generation import max_new_tokens_for  # noqa: E402
from mct.model import create_model  # noqa: E402
from mct.tokenizer import Tokenizer  # noqa: E402


class IgnoreEos(torch.nn.Module):
    """Wraps a model so generation never stops at `<eos>`: every run decodes max_new_tokens."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.config = model.config

    def generate(self, *args, **kwargs):
        kwargs["eos_token_id"] = None
        return self.inner.generate(*args, **kwargs)


def additions(n: int, digits: int, seed: int) -> list[Record]:
    rng = random.Random(seed)
    low, high = 10 ** (digits - 1), 10 ** digits - 1
    records = []
    for _ in range(n):
        a, b = rng.randint(low, high), rng.randint(low, high)
        records.append(Record(prompt=f"{a}+{b}=", answer=str(a + b), target=None, steps=[], meta={}))
    return records


def config_for(digits: int):
    """(name, config) of the first shipped addition config whose model reads operands of `digits` digits."""
    for name in ("default", "add5", "add10"):
        config = load_config(ROOT / "configs" / f"{name}.toml")
        if config.data.max_digits >= digits:
            return name, config
    raise SystemExit(f"no shipped addition config reads {digits}-digit operands (at most 10)")


def measure(model, tokenizer, data_format, records, batch_size: int, use_cache: bool) -> dict:
    start = time.perf_counter()
    report = evaluate_records(model, tokenizer, data_format, records, batch_size=batch_size, use_cache=use_cache)
    seconds = time.perf_counter() - start
    return {"problems": report.n, "seconds": seconds, "problems_per_s": report.n / seconds}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="problems per batched run")
    parser.add_argument("--n-batch1", type=int, default=200, help="problems per batch-1 run")
    parser.add_argument("--batch-size", type=int, default=256, help="batch size of the batched runs (mct eval's default)")
    parser.add_argument("--digits", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    tokenizer = Tokenizer()
    rows, models = [], {}
    for digits in args.digits:
        name, config = config_for(digits)
        torch.manual_seed(0)
        model = IgnoreEos(create_model(config.model)).eval()
        models[name] = model.inner.num_parameters()
        data_format = DataFormat.from_config(config.data)
        records = additions(args.n, digits, seed=digits)
        new_tokens = max_new_tokens_for(data_format, tokenizer, records, config.model.max_seq_len)
        for batch_size, n in ((args.batch_size, args.n), (1, args.n_batch1)):
            if n <= 0:  # --n-batch1 0 skips the batch-1 rows
                continue
            for use_cache in (True, False):
                result = measure(model, tokenizer, data_format, records[:n], batch_size, use_cache)
                rows.append({"digits": digits, "config": name, "batch_size": batch_size, "kv_cache": use_cache,
                             "new_tokens": new_tokens, **result})
    output = {
        "benchmark": "eval_speed",
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "model": "random weights: " + ", ".join(f"configs/{name}.toml ({params:,} parameters)"
                                                for name, params in models.items()),
        "note": "generation ignores <eos>: every problem decodes new_tokens tokens",
        "rows": rows,
    }
    if args.json:
        print(json.dumps(output, indent=2))
        return output
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"eval speed: {output['model']}; {output['machine']}; torch {output['torch']}"),
                  caption=output["note"] + f"; batch-1 rows use the first {args.n_batch1} problems")
    for column in ("digits", "config", "batch", "KV cache", "new tokens", "problems", "seconds", "problems/s"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(str(row["digits"]), row["config"], str(row["batch_size"]), "yes" if row["kv_cache"] else "no",
                      str(row["new_tokens"]), f"{row['problems']:,}", f"{row['seconds']:.2f}",
                      f"{row['problems_per_s']:,.0f}")
    Console().print(table)
    return output


if __name__ == "__main__":
    main()
