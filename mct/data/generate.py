"""`mct gen`: balanced, disjoint train / val / test splits written as JSONL with a manifest.

One draw of distinct problems (see sampling.py) is shuffled and cut into val, test and train, so the
splits are disjoint by construction. The optional OOD split uses only length pairs with an operand
longer than `max_digits`, so it is disjoint from the rest as well. Same config => byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import numpy as np

from mct.data import sampling
from mct.data.dataset import Record
from mct.data.format import DataFormat, build_target
from mct.data.hard import hard_problems
from mct.data import tasks
from mct.data.render import BatchRenderer, Digits
from mct.data.tasks import tracer
from mct.tokenizer import ANSWER_MARK, EOS, PAD, STEP_SEP, Tokenizer
from mct.errors import MctError
from mct.fileio import atomic_path

SPLITS = ("train", "val", "test", "test_ood", "hard")
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
CHUNK = 20_000  # records formatted and written per progress update

Progress = Callable[[int, int], None]


# --- which problems ---------------------------------------------------------------------------------
def _digit_text(data_config) -> str:
    return f"{data_config.min_digits}-{data_config.max_digits} digit"


def _ood_range(data_config) -> tuple[int, int] | None:
    if data_config.ood_digits is None:
        return None
    low, high = data_config.ood_digits
    if data_config.task == "mod":
        raise MctError("the mod task has no OOD split (its operands are all residues below the modulus); "
                       "leave data.ood_digits unset")
    if data_config.pad_operands and not data_config.pad_to_longer:
        raise MctError(f"data.ood_digits {low}-{high} with operands zero-padded to data.max_digits "
                       f"{data_config.max_digits} (--pad): a model trained on them reads no longer operands, so the "
                       "test_ood split could not be evaluated; drop --pad, or pad each problem to its longer operand "
                       "(--pad-to-longer, as configs/add-coupled.toml trains)")
    if high <= data_config.max_digits:
        raise MctError(f"data.ood_digits {low}-{high} must reach past data.max_digits {data_config.max_digits} "
                       f"(OOD operands are longer than the training ones); e.g. data.ood_digits = "
                       f"{data_config.max_digits + 1}-{data_config.max_digits + 2}")
    return low, high


def hard_split(data_config) -> list[tuple[int, int]]:
    """The hard problems of the data config (see mct/data/hard.py): written as hard.jsonl, never trained on."""
    return hard_problems(data_config.task, data_config.min_digits, data_config.max_digits,
                         data_config.modulus if data_config.task == "mod" else None, data_config.seed,
                         padded=data_config.pad_operands)  # pad_to_longer writes 0 + 0 as "0+0=" too


def _without(pairs: tuple[list, list], excluded: set) -> tuple[list, list]:
    kept = [(a, b) for a, b in zip(*pairs) if (a, b) not in excluded]
    return [a for a, _ in kept], [b for _, b in kept]


BYTES_PER_PLANNED_PROBLEM = 160  # two Python ints in lists, their numpy draw, the shuffle (measured ~120)


def check_memory(data_config) -> None:
    """Refuse, before drawing anything, a data set whose plan would not fit in half of this machine's memory."""
    import os

    count = data_config.n_train + data_config.n_val + data_config.n_test * (2 if data_config.ood_digits else 1)
    needed = count * (BYTES_PER_PLANNED_PROBLEM + 2 * data_config.max_digits)
    try:
        available = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - systems without sysconf
        return
    if needed > available // 2:
        raise MctError(f"a data set of {count:,} problems needs about {needed / 2**30:,.1f} GiB of memory to plan, "
                       f"more than half of this machine's {available / 2**30:,.1f} GiB; ask for fewer problems")


def plan_splits(data_config) -> dict[str, tuple[list, list]]:
    """Operands of each split: {"train": (a list, b list), "val": ..., "test": ..., ["test_ood": ...],
    "hard": ...}. The hard problems are taken out of the training split."""
    check_memory(data_config)
    hard = hard_split(data_config)
    splits = _draw_splits(data_config, set(hard))
    _check_not_empty(data_config, splits, len(hard))
    splits["hard"] = ([a for a, _ in hard], [b for _, b in hard])
    return {name: splits[name] for name in SPLITS if name in splits}


def _check_not_empty(data_config, splits: dict, n_hard: int) -> None:
    """Refuse a plan that leaves train, val or test without a problem (only the mod task with a tiny modulus),
    which would only fail later, when training reads the folder."""
    empty = [name for name in ("train", "val", "test") if not splits[name][0]]
    if not empty:
        return
    what = f"{', '.join(empty[:-1])} and {empty[-1]} splits" if len(empty) > 1 else f"{empty[0]} split"
    p = data_config.modulus  # only mod can: the other tasks' n_train, n_val and n_test are at least 1
    raise MctError(f"mod {p} leaves the {what} empty ({p * p} pairs, {n_hard} of them in the hard split, "
                   f"train_fraction {data_config.train_fraction}); use a larger data.modulus")


def _draw_splits(data_config, hard: set) -> dict[str, tuple[list, list]]:
    task, seed = data_config.task, data_config.seed
    if task == "mod":  # the partition is fixed by the seed; the hard pairs leave the training share
        train, val, test = sampling.mod_partition(data_config.modulus, data_config.train_fraction, seed)
        parts = {name: ([p[0] for p in part], [p[1] for p in part])  # hard pairs form their own split
                 for name, part in (("train", train), ("val", val), ("test", test))}
        return {name: _without(part, hard) for name, part in parts.items()}
    ood = _ood_range(data_config)
    buckets = sampling.space_buckets(task, sampling.length_pairs(data_config.min_digits, data_config.max_digits))
    buckets = sampling.excluding(task, buckets, hard)  # the hard problems are a split of their own
    n_val, n_test = data_config.n_val, data_config.n_test
    total = data_config.n_train + n_val + n_test
    a, b = sampling.draw(sampling.make_rng(seed, f"{task}:splits"), buckets, total,
                         f"{task} with {_digit_text(data_config)} operands (besides the hard split)")
    splits = {
        "val": (a[:n_val], b[:n_val]),
        "test": (a[n_val:n_val + n_test], b[n_val:n_val + n_test]),
        "train": (a[n_val + n_test:], b[n_val + n_test:]),
    }
    if ood is not None:
        ood_buckets = sampling.space_buckets(
            task, sampling.length_pairs(ood[0], ood[1], longer_than=data_config.max_digits))
        splits["test_ood"] = sampling.draw(sampling.make_rng(seed, f"{task}:ood"), ood_buckets, n_test,
                                           f"{task} OOD split with {ood[0]}-{ood[1]} digit operands")
    return splits


# --- records -----------------------------------------------------------------------------------------
def make_record(fmt: DataFormat, a: int, b: int) -> Record:
    """The record of problem (a, b) in format `fmt` (the reference for the fast line writer)."""
    answer, steps, carries, chain = tracer(fmt.task, fmt.modulus, fmt.operand_width, fmt.sub_complement)(a, b)
    steps = steps if fmt.use_steps else []
    meta = {"task": fmt.task, "digits": [len(str(a)), len(str(b))], "carries": carries, "max_carry_chain": chain}
    if fmt.task == "mod":
        meta["modulus"] = fmt.modulus
    return Record(fmt.prompt((a, b)), answer, build_target(steps, fmt.ordered_answer(answer, (a, b))), steps, meta)


_VECTOR_LIMIT = 10**17  # add/sub carry statistics of operands below this are computed with numpy int64


def _carry_stats(task: str, a: list, b: list, modulus: int | None) -> tuple[list, list]:
    """(carries, max_carry_chain) of every problem: numpy column by column for add/sub, else per problem."""
    if task not in ("add", "sub") or not a or max(max(a), max(b)) >= _VECTOR_LIMIT:
        stats = [tasks.carry_stats(task, x, y, modulus) for x, y in zip(a, b)]
        return [c for c, _ in stats], [ch for _, ch in stats]
    x, y = np.array(a, dtype=np.int64), np.array(b, dtype=np.int64)
    if task == "sub":
        x, y = np.maximum(x, y), np.minimum(x, y)
    carry, carries, run, chain = (np.zeros(len(x), dtype=np.int64) for _ in range(4))
    for i in range(len(str(int(max(x.max(), y.max()))))):
        dx, dy = (x // 10**i) % 10, (y // 10**i) % 10
        carry = ((dx + dy + carry >= 10) if task == "add" else (dx - dy - carry < 0)).astype(np.int64)
        carries += carry
        run = (run + 1) * carry
        np.maximum(chain, run, out=chain)
    return carries.tolist(), chain.tolist()


def _text_rows(ids: np.ndarray, tokenizer: Tokenizer) -> list[str]:
    """Text of right-padded token id rows [N, T]: every token is one byte, <eos> is written out (number
    tokens, several bytes, go through the tokenizer)."""
    if tokenizer.numbers:
        return [tokenizer.decode(row) for row in ids.tolist()]
    table = np.zeros(tokenizer.vocab_size, dtype=np.uint8)
    for i, token in enumerate(tokenizer.vocab):
        table[i] = 1 if token == EOS else 0 if token == PAD else ord(token)
    data = table[ids]
    return [row.tobytes().rstrip(b"\0").decode("ascii").replace("\x01", EOS) for row in data]


def _line_formatter(fmt: DataFormat) -> Callable[[list, list], str]:
    """(a list, b list) -> their JSONL text, the prompt and target written by the format's batch path.

    Every character is a digit, an operator, '|', '#', or part of '<eos>', so plain string formatting
    gives exactly `json.dumps(record.to_dict())` (a test checks it)."""
    tokenizer = fmt.tokenizer()
    renderer = BatchRenderer(fmt, tokenizer)
    task = fmt.task
    tail = f', "modulus": {fmt.modulus}}}}}\n' if task == "mod" else "}}\n"

    def lines(a_list: list, b_list: list) -> str:
        rendered = renderer.render(Digits.from_ints(a_list), Digits.from_ints(b_list))
        texts = _text_rows(rendered["input_ids"].numpy(), tokenizer)
        carries, chains = _carry_stats(task, a_list, b_list, fmt.modulus)
        out = []
        append = out.append
        for a, b, text, car, ch in zip(a_list, b_list, texts, carries, chains):
            split = text.index("=") + 1
            target = text[split:]
            mark = target.index(ANSWER_MARK)
            steps_json = '"' + target[:mark - 1].replace(STEP_SEP, '", "') + '"' if mark else ""
            append(f'{{"prompt": "{text[:split]}", "answer": "{tasks.solve(task, a, b, fmt.modulus)}", '
                   f'"target": "{target}", "steps": [{steps_json}], "meta": {{"task": "{task}", '
                   f'"digits": [{len(str(a))}, {len(str(b))}], "carries": {car}, "max_carry_chain": {ch}{tail}')
        return "".join(out)

    return lines


def generate_splits(data_config) -> dict[str, list[Record]]:
    """Records of every split ("train", "val", "test", and "test_ood" when ood_digits is set), disjoint."""
    fmt = DataFormat.from_config(data_config)
    return {name: [make_record(fmt, a, b) for a, b in zip(*operands)]
            for name, operands in plan_splits(data_config).items()}


def sample_heldout(data_config, n_val: int, n_test: int, seed: int) -> tuple[list[Record], list[Record]]:
    """Disjoint val and test records for on-the-fly training: the val and test splits `mct gen` would
    write (the same planner, `plan_splits`' draw), so a small space such as the 100 one-digit additions
    is shared between training and the held-out sets in proportion, never held out whole.

    For mod they come from the non-training pairs of the partition fixed by `data_config.seed`
    (val from its first half, test from its second, at most n_val / n_test of each).
    """
    fmt = DataFormat.from_config(data_config)
    config = data_config.model_copy(update={"n_val": n_val, "n_test": n_test, "seed": seed, "ood_digits": None})
    hard = set(hard_split(config))
    if config.task != "mod":  # the stream trains on what is left: plan no more training problems than exist
        space = sampling.capacity(sampling.excluding(config.task, sampling.space_buckets(
            config.task, sampling.length_pairs(config.min_digits, config.max_digits)), hard))
        config = config.model_copy(update={"n_train": max(0, min(config.n_train, space - n_val - n_test))})
    splits = _draw_splits(config, hard)
    val, test = ([make_record(fmt, a, b) for a, b in zip(*splits[name])] for name in ("val", "test"))
    return val[:n_val], test[:n_test]


# --- files ---------------------------------------------------------------------------------------------
def existing_dataset(out_dir: Path) -> list[str]:
    """Names of data set files already in `out_dir`."""
    names = [MANIFEST] + [f"{s}.jsonl" for s in SPLITS]
    return [n for n in names if (out_dir / n).exists()]


def write_dataset(data_config, out_dir: str | Path, force: bool = False, progress: Progress | None = None) -> dict:
    """Write `{split}.jsonl` files and `manifest.json` into `out_dir`; returns the manifest.

    Refuses (MctError) when `out_dir` already holds a data set, unless `force`. All files are written to
    temporary names first and renamed only when every one is complete (the manifest last), so an
    interrupted run leaves the folder as it was. `progress(done, total)` counts records.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise MctError(f"{out_dir} is a file, not a folder; choose another output folder")
    found = existing_dataset(out_dir) if out_dir.is_dir() else []
    if found and not force:
        raise MctError(f"{out_dir} already holds a data set ({', '.join(found)}); pass force=True to overwrite it "
                       "or choose another output folder")
    fmt = DataFormat.from_config(data_config)
    splits = plan_splits(data_config)
    total = sum(len(a) for a, _ in splits.values())
    if progress is not None:
        progress(0, total)
    created = not out_dir.exists()
    try:
        with ExitStack() as stack:
            manifest_tmp = stack.enter_context(atomic_path(out_dir / MANIFEST))  # renamed last
            files, hashes, counts = _write_splits(stack, out_dir, splits, _line_formatter(fmt), progress, total)
            manifest = _manifest(data_config, fmt, files, counts, hashes)
            manifest_tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    except BaseException:  # Ctrl-C too: a folder this call made and left empty goes again
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise
    if "test_ood" not in splits and (out_dir / "test_ood.jsonl").exists():
        (out_dir / "test_ood.jsonl").unlink()  # a stale OOD split of the data set this one replaced
    return manifest


def _write_splits(stack: ExitStack, out_dir: Path, splits: dict, lines, progress, total: int):
    """Each split to a temporary file that `stack` renames on success: (files, sha256s, counts) by split."""
    files, hashes, counts = {}, {}, {}
    done = 0
    for name, (a_list, b_list) in splits.items():
        filename = f"{name}.jsonl"
        tmp = stack.enter_context(atomic_path(out_dir / filename))
        digest = hashlib.sha256()
        with open(tmp, "wb") as handle:
            for start in range(0, len(a_list), CHUNK):
                data = lines(a_list[start:start + CHUNK], b_list[start:start + CHUNK]).encode("ascii")
                handle.write(data)
                digest.update(data)
                done += min(CHUNK, len(a_list) - start)
                if progress is not None:
                    progress(done, total)
        files[name], hashes[name], counts[name] = filename, digest.hexdigest(), len(a_list)
    return files, hashes, counts


def _manifest(data_config, fmt: DataFormat, files: dict, counts: dict, hashes: dict) -> dict:
    manifest = {
        "mct_dataset": MANIFEST_VERSION,
        "task": fmt.task,
        "format": fmt.to_dict(),
        "seed": data_config.seed,
        "min_digits": data_config.min_digits,
        "max_digits": data_config.max_digits,
        "ood_digits": list(data_config.ood_digits) if data_config.ood_digits else None,
        "counts": counts,
        "files": files,
        "sha256": hashes,
        "disjoint": True,
        "sampling": ("all modulus**2 pairs, shuffled; train_fraction for training, the rest halved into val/test"
                     if fmt.task == "mod" else
                     "balanced over operand-length pairs" + (" and carry counts" if fmt.task in ("add", "sub") else "")),
    }
    if fmt.task == "mod":
        manifest["modulus"] = fmt.modulus
        manifest["train_fraction"] = data_config.train_fraction
    return manifest


def read_manifest(out_dir: str | Path) -> dict:
    """The manifest of a data set folder (MctError when missing or broken)."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise MctError(f"{path} does not exist; is {out_dir} a folder written by `mct gen`?")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MctError(f"{path} is not valid JSON text ({getattr(exc, 'msg', exc)}); regenerate the data set") from None
    except (RecursionError, ValueError):
        raise MctError(f"{path} is not valid JSON text (nested too deeply or a number too long); "
                       "regenerate the data set") from None
    if not (isinstance(manifest, dict) and isinstance(manifest.get("task"), str)
            and isinstance(manifest.get("files", {}), dict) and isinstance(manifest.get("format", {}), dict)):
        raise MctError(f"{path} is not an mct data set manifest (it needs task, format and files); regenerate "
                       "the data set with `mct gen`")
    return manifest


def split_file(out_dir: Path, split: str, name) -> Path:
    """The file of a split the manifest lists: a name inside the data folder (MctError for an absolute
    path, '..', or a link that leads out of it)."""
    folder = Path(out_dir)
    path = folder / name if isinstance(name, str) and name.strip() else None
    if path is None or not path.resolve().is_relative_to(folder.resolve()) or path.resolve() == folder.resolve():
        raise MctError(f"{folder / MANIFEST} lists {name!r} as the {split} split, which is not a file in {folder}; "
                       f"a data set's files are in its folder (\"{split}.jsonl\"): regenerate it with `mct gen`")
    return path


def folder_split(out_dir: str | Path, split: str) -> Path:
    """The file of `split` in a data folder: as its manifest lists it (inside the folder), else SPLIT.jsonl."""
    out_dir = Path(out_dir)
    files = read_manifest(out_dir).get("files", {}) if (out_dir / MANIFEST).is_file() else {}
    return split_file(out_dir, split, files[split]) if split in files else out_dir / f"{split}.jsonl"


def _digest_and_count(path: Path) -> tuple[str, int]:
    """(sha256 of the file, its records: the lines that are not blank)."""
    digest, records = hashlib.sha256(), 0
    with path.open("rb") as handle:
        for line in handle:
            digest.update(line)
            records += bool(line.strip())
    return digest.hexdigest(), records


def _recorded(manifest: dict, key: str, split: str, kind: type):
    """The manifest's `key[split]` when it is of `kind` (a bool is no count), else None."""
    table = manifest.get(key)
    value = table.get(split) if isinstance(table, dict) else None
    return value if isinstance(value, kind) and not isinstance(value, bool) else None


def verify_files(out_dir: Path, manifest: dict) -> None:
    """Check each split file the manifest lists against the sha256 and the record count it recorded: a
    missing, edited or truncated split, or one without both, is an MctError naming the file (regenerate
    the data set, or skip the check). `mct gen` records both for every file it writes."""
    where = Path(out_dir) / MANIFEST
    skip = "regenerate the data set with `mct gen`, or skip the check with verify=False"
    for split, name in manifest.get("files", {}).items():
        path = split_file(out_dir, split, name)
        expected, count = _recorded(manifest, "sha256", split, str), _recorded(manifest, "counts", split, int)
        if expected is None or count is None:
            missing = "sha256" if expected is None else "record count"
            raise MctError(f"{where} has no {missing} of the {split} split, so {path} cannot be checked; {skip}")
        if not path.is_file():
            raise MctError(f"{path} is listed in {where} but does not exist; regenerate the data set with `mct gen`")
        digest, records = _digest_and_count(path)
        if digest != expected:
            raise MctError(f"{path} does not match the sha256 in {where} (edited after `mct gen`?); "
                           "regenerate the data set, or skip the check with verify=False")
        if records != count:
            raise MctError(f"{path} holds {records:,} records but {where} says {count:,} (the manifest was "
                           f"edited?); {skip}")


def _longest_example(data_format: DataFormat, min_digits: int, max_digits: int) -> int:
    """Tokens in the longest example a format writes for a digit range (prompt, steps, answer)."""
    from types import SimpleNamespace

    from mct.data.stream import sequence_width

    digits = SimpleNamespace(min_digits=min_digits, max_digits=max_digits)
    return sequence_width(data_format, data_format.tokenizer(), digits)


def data_config_from_folder(out_dir: str | Path, verify: bool = True) -> dict:
    """`[data]` settings that train on a folder written by `mct gen`: its split files, its format and the
    length of its longest example (max_seq_len; `resolve_config` makes the model's context at least that
    long). Every split must be a file in the folder; with `verify`, it must match the sha256 and the record
    count its manifest recorded."""
    from mct.config import MIXES

    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    if verify:
        verify_files(out_dir, manifest)
    files = manifest.get("files", {})
    if "train" not in files:
        raise MctError(f"{out_dir / MANIFEST} lists no training split; regenerate it with `mct gen`")
    try:
        fmt = DataFormat.from_dict({"task": manifest["task"], **manifest.get("format", {})})
    except (KeyError, TypeError, ValueError) as error:
        raise MctError(f"the manifest's format cannot be read ({error}); regenerate the data set with `mct gen`") from None
    settings = {
        "task": fmt.task,
        "answer_order": fmt.answer_order,
        "use_steps": fmt.use_steps,
        "pad_operands": bool(fmt.operand_width),
        "pad_to_longer": fmt.pad_to_longer,
        "sub_complement": fmt.sub_complement,
        "residue_tokens": fmt.residue_tokens,
        "min_digits": manifest["min_digits"],
        "max_digits": manifest["max_digits"],
        "seed": manifest.get("seed", 0),
        # the folder's training file replaces the generated stream these mixes shape (and each applies to
        # some tasks only: a config's chain_mix must not refuse a mul or mod folder)
        **{mix: 0.0 for mix in MIXES},
    }
    if fmt.modulus:
        settings["modulus"] = fmt.modulus
    settings["max_seq_len"] = _longest_example(fmt, manifest["min_digits"], manifest["max_digits"])
    for split in ("train", "val", "test"):
        if split in files:
            settings[f"{split}_path"] = str(split_file(out_dir, split, files[split]))
    return settings
