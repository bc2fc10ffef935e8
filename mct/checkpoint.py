"""One `.pt` file holds everything a command needs: config, tokenizer, data format, weights, and for
resuming the training state. Files are written atomically and read with `torch.load(weights_only=True)`
only, so a file that holds pickled Python objects is refused, never executed.

Layout (a plain dict of tensors and plain data):

    format: "mct-checkpoint"     version: 1
    model_config: ModelConfig as a dict       config: root Config as a dict (JSON mode)
    tokenizer: Tokenizer.to_dict()            data_format: DataFormat.to_dict()
    model_state: state_dict (CPU tensors, no torch.compile / DDP prefixes)
    train_state: dict | None (optimizer, scheduler, step, data position, RNG states...)
    step: int | None (train_state["step"], kept at the top so it is cheap to read)
    unique_parameters: int (tied and shared tensors counted once; absent from files of older versions)
"""

from __future__ import annotations

import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from mct.config import TASKS, Config, ModelConfig, validate_config, validate_model_config
from mct.errors import MctError
from mct.fileio import atomic_torch_save, describe_os_error
from mct.model import CompactTransformer, create_model, model_shell
from mct.tokenizer import Tokenizer

FORMAT_NAME = "mct-checkpoint"
FORMAT_VERSION = 1
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")
_PLAIN_LEAVES = (str, bytes, int, float, bool, complex, type(None), torch.Tensor, torch.Size, torch.dtype,
                 torch.device)


@dataclass
class Checkpoint:
    """A loaded checkpoint: `model` (eval mode, on the requested device), `config` (Config), `tokenizer`,
    `data_format` (dict, see mct.data.format.DataFormat.from_dict), `train_state` (dict, only when asked
    for), `step` (int or None), `path`."""

    model: CompactTransformer
    config: Config
    tokenizer: Tokenizer
    data_format: dict
    train_state: dict | None
    step: int | None
    path: Path | None = None


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model inside torch.compile (`_orig_mod`) and DDP (`module`) wrappers."""
    while True:
        if hasattr(model, "_orig_mod") and isinstance(model._orig_mod, torch.nn.Module):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def _plain_name(key: str) -> str:
    """A state_dict key without torch.compile ("_orig_mod.") and DDP ("module.") prefixes."""
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def clean_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """state_dict with torch.compile and DDP prefixes removed, on the CPU."""
    return {_plain_name(key): value.detach().cpu() for key, value in state.items()}


def _check_plain(value: Any, where: str) -> None:
    """Raise TypeError (a bug in the caller) if `value` holds anything torch.load(weights_only=True) refuses."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_plain(key, f"{where} key")
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple, set, frozenset)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN_LEAVES):
        raise TypeError(f"{where} is a {type(value).__module__}.{type(value).__name__}; checkpoints hold only "
                        "tensors and plain data (convert numpy arrays with torch.from_numpy, objects to dicts)")


def save_checkpoint(path: str | Path, model: torch.nn.Module, config: Config | Mapping, tokenizer: Tokenizer,
                    data_format: Mapping | Any, train_state: dict | None = None, *,
                    step: int | None = None) -> Path:
    """Write model + config + tokenizer + data format (+ train_state for resuming) to `path`, atomically.

    `model` may be wrapped by torch.compile or DDP. `data_format` is a dict or an object with `to_dict()`.
    `train_state` must be tensors and plain data (dicts, lists, numbers, strings): optimizer and scheduler
    state_dicts, step, data position, RNG states. `step` defaults to train_state["step"]. Returns the path.
    """
    path = Path(path)
    plain_model = unwrap_model(model)
    if not isinstance(plain_model, CompactTransformer):
        raise TypeError(f"save_checkpoint needs a CompactTransformer, got {type(plain_model).__name__}")
    model_config = plain_model.config.model_dump(mode="json")
    root = config.model_dump(mode="json") if isinstance(config, Config) else dict(config)
    root["model"] = model_config  # the model's own config is the truth
    if hasattr(data_format, "to_dict"):
        data_format = data_format.to_dict()
    if step is None and train_state is not None:
        step = train_state.get("step")
    payload = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "model_config": model_config,
        "config": root,
        "tokenizer": tokenizer.to_dict(),
        "data_format": dict(data_format),
        "model_state": clean_state_dict(plain_model.state_dict()),
        "train_state": train_state,
        "step": None if step is None else int(step),
        "unique_parameters": plain_model.num_parameters(),
    }
    _check_plain(payload, "checkpoint")
    atomic_torch_save(payload, path)
    return path


# the fix named by the errors of a checkpoint that mct wrote and something changed afterwards
EDITED = "; it was changed after `mct train` wrote it: use the original file or train again"
_PYTORCH_HEADS = (b"PK\x03\x04", b"\x80")  # a zip archive (torch.save), a pickle (legacy torch.save)


def _sniff(path: Path) -> str | None:
    """Why `path` cannot be a PyTorch file, judged from its first bytes, or None when it may be one."""
    try:
        with path.open("rb") as handle:
            head = handle.read(512)
    except OSError as exc:
        raise MctError(f"checkpoint {path} cannot be read: {describe_os_error(exc)}") from None
    if not head:
        return "the file is empty"
    if head.startswith(_PYTORCH_HEADS):
        return None
    text = head.lstrip()
    if text[:1] in (b"{", b"["):
        return "it holds JSON text: a data file?"
    try:
        head.decode("utf-8")
        return "it holds text"
    except UnicodeDecodeError:
        return "it is not a PyTorch file"


def read_checkpoint_file(path: str | Path) -> dict:
    """The raw checkpoint dict, checked for format name, version and the types of its entries; every
    failure is one MctError line."""
    path = Path(path)
    if not path.exists():
        raise MctError(f"checkpoint {path} does not exist; pass the best.pt or last.pt of a run folder (`mct train` writes them)")
    if path.is_dir():
        inside = next((path / name for name in ("best.pt", "last.pt") if (path / name).is_file()), None)
        raise MctError(f"checkpoint {path} is a folder, not a file; pass "
                       + (f"{inside}" if inside else "the best.pt or last.pt of a run folder"))
    if not path.is_file():
        raise MctError(f"checkpoint {path} is not a regular file; pass the best.pt or last.pt of a run folder")
    reason = _sniff(path)
    if reason is not None:
        raise MctError(f"{path} is not an mct checkpoint: {reason}; pass a .pt file written by `mct train`")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            found = re.search(r"GLOBAL ([\w.]+)", str(exc))
            what = f" ({found.group(1)})" if found else ""
            raise MctError(f"{path} holds pickled Python objects{what}, not just tensors and plain data; "
                           "mct refuses to load it because unpickling could run code") from None
        raise MctError(f"{path} is not an mct checkpoint (not a PyTorch file, or corrupt)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        with path.open("rb") as handle:
            head = handle.read(4)
        reason = "truncated or corrupt" if head == b"PK\x03\x04" else "not a PyTorch file"
        detail = str(exc).strip().splitlines()
        detail = f": {detail[0].split('. ')[0][:100]}" if detail and head == b"PK\x03\x04" else ""
        raise MctError(f"{path} is not a readable mct checkpoint ({reason}{detail})") from None
    except Exception:  # the unpickler raises assorted errors on non-pickle bytes
        raise MctError(f"{path} is not an mct checkpoint (not a PyTorch file)") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        kind = type(data).__name__ if not isinstance(data, dict) else "dict without an mct format tag"
        raise MctError(f"{path} is not an mct checkpoint (it holds a {kind}); pass a file written by `mct train`")
    version = data.get("version")
    if version is None:
        raise MctError(f"{path} is an incomplete mct checkpoint (no format version); save it again with "
                       "`mct train` or the mct that wrote it")
    if version != FORMAT_VERSION:
        raise MctError(f"{path} is mct checkpoint format version {version!r}, but this mct reads version "
                       f"{FORMAT_VERSION}; use the mct version that wrote it")
    missing = [k for k in ("model_config", "config", "tokenizer", "data_format", "model_state") if k not in data]
    if missing:
        raise MctError(f"{path} is an incomplete mct checkpoint (missing {', '.join(missing)}){EDITED}")
    problem = _entry_problem(data)
    if problem:
        raise MctError(f"{path} is a damaged mct checkpoint: {problem}{EDITED}")
    return data


def _entry_problem(data: dict) -> str | None:
    """What is wrong with the types of a checkpoint's entries (a crafted or damaged file), or None."""
    for key in ("model_config", "config", "tokenizer", "data_format", "model_state"):
        if not isinstance(data[key], dict):
            return f"'{key}' is a {type(data[key]).__name__}, not a table"
    state = data["model_state"]
    bad = next((k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        return f"model_state entry {bad!r} is not a tensor"
    vocab = data["tokenizer"].get("vocab")
    if not isinstance(vocab, (list, tuple)) or not all(isinstance(t, str) for t in vocab):
        return "the tokenizer vocabulary is not a list of strings"
    numbers = data["tokenizer"].get("numbers", 0)
    if type(numbers) is not int or not 0 <= numbers <= 1_000_000:
        return f"tokenizer.numbers = {numbers!r} is not a count of number tokens"
    fmt = data["data_format"]
    checks = {"task": lambda v: v in TASKS, "answer_order": lambda v: v in ("reversed", "plain"),
              "use_steps": lambda v: isinstance(v, bool),
              "modulus": lambda v: v is None or (type(v) is int and v >= 2),
              "operand_width": lambda v: type(v) is int and 0 <= v <= 1000,
              "pad_to_longer": lambda v: isinstance(v, bool), "sub_complement": lambda v: isinstance(v, bool),
              "residue_tokens": lambda v: isinstance(v, bool)}
    if "task" not in fmt:
        return "the data format has no task"
    for key, ok in checks.items():
        if key in fmt and not ok(fmt[key]):
            return f"data_format.{key} = {fmt[key]!r} is not valid"
    step = data.get("step")
    if step is not None and (type(step) is not int or step < 0):
        return f"step = {step!r} is not a count of steps"
    train_state = data.get("train_state")
    if train_state is not None and not isinstance(train_state, dict):
        return f"train_state is a {type(train_state).__name__}, not a table"
    return None


def _train_state_problem(state: Any) -> str | None:
    if state is None:
        return "it holds no training state (a best.pt or an exported model has weights only)"
    needed = {"step": int, "optimizer": dict, "data": dict, "rng": dict}
    for key, kind in needed.items():
        if not isinstance(state.get(key), kind) or (kind is int and isinstance(state.get(key), bool)):
            return f"its training state has no valid '{key}'"
    if state["step"] < 0:
        return "its training state has a negative step"
    return None


def _build_model(path: Path, model_config: ModelConfig, state: Mapping[str, torch.Tensor]) -> CompactTransformer:
    """The model of `model_config` with `state` loaded, checked on the meta device first so that a file
    declaring a huge model with small weights is refused before anything is allocated."""
    shell = model_shell(model_config)
    expected = {k: tuple(v.shape) for k, v in shell.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in clean_state_dict_shapes(state).items()}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if missing or unexpected or wrong:
        if wrong:
            key = wrong[0]
            detail = f"{key} has shape {list(found[key])}, the config needs {list(expected[key])}"
        elif missing:
            detail = f"missing {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
        else:
            detail = f"unexpected {unexpected[0]}" + (f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else "")
        raise MctError(f"{path}: the weights do not fit the stored model config ({detail}){EDITED}")
    bad = next((k for k, v in state.items() if not (v.is_floating_point() or v.dtype == torch.bool)), None)
    if bad is not None:
        raise MctError(f"{path}: the weights do not fit the stored model config ({bad} holds {state[bad].dtype}){EDITED}")
    model = create_model(model_config)
    cleaned = clean_state_dict(state)
    # tied tensors (the unembedding and the embedding, shared K and V) are one tensor saved under each name:
    # copies that differ were edited, and load_state_dict would keep whichever it loads last
    shared: dict[int, list[str]] = {}
    for key, value in model.state_dict(keep_vars=True).items():
        shared.setdefault(id(value), []).append(key)
    for keys in shared.values():
        if any(not _same_values(cleaned[keys[0]], cleaned[k]) for k in keys[1:]):
            raise MctError(f"{path}: {' and '.join(keys)} are one tied tensor of this model, and the file holds "
                           f"different values for them{EDITED}")
    try:
        model.load_state_dict(cleaned)
    except RuntimeError as exc:
        raise MctError(f"{path}: the weights do not fit the stored model config "
                       f"({str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else exc}){EDITED}") from None
    return model


def _same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal tensors, NaN where the other has NaN too."""
    if torch.equal(a, b):
        return True
    return (a.is_floating_point() and a.shape == b.shape and torch.equal(a.isnan(), b.isnan())
            and torch.equal(a.masked_fill(a.isnan(), 0), b.masked_fill(b.isnan(), 0)))


def clean_state_dict_shapes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` under the names `clean_state_dict` gives, without copying the tensors."""
    return {_plain_name(key): value for key, value in state.items()}


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    with_train_state: bool = False) -> Checkpoint:
    """Load a checkpoint: the model is rebuilt from its stored config, moved to `device` and put in eval
    mode. `train_state` is returned only when `with_train_state` (its tensors stay on the CPU); a file
    without a usable training state is then refused, since resuming from it would start over."""
    path = Path(path)
    data = read_checkpoint_file(path)
    if with_train_state:
        problem = _train_state_problem(data.get("train_state"))
        if problem:
            raise MctError(f"{path} cannot resume training: {problem}; resume from the last.pt that "
                           "training wrote, or start a new run")
    model_config = validate_model_config(data["model_config"], source=f"checkpoint {path}")
    config = validate_config(data["config"], source=f"checkpoint {path}")
    tokenizer = Tokenizer.from_dict(data["tokenizer"])
    if tokenizer.vocab_size != model_config.vocab_size:
        raise MctError(f"{path}: tokenizer has {tokenizer.vocab_size} tokens but the model {model_config.vocab_size}")
    model = _build_model(path, model_config, data["model_state"])
    if isinstance(device, str) and device == "auto":
        from mct.device import resolve_device

        device = resolve_device(device)
    model = model.to(device).eval()
    train_state = data.get("train_state") if with_train_state else None
    step = data.get("step")
    return Checkpoint(model=model, config=config, tokenizer=tokenizer, data_format=dict(data["data_format"]),
                      train_state=train_state, step=step, path=path)


def inspect_checkpoint(path: str | Path) -> dict:
    """A summary without building the model: format, version, step, parameters, unique_parameters (the
    stored count; for older files, the distinct tensors of the state), model config, tokenizer size, data
    format, whether it can resume training, file size in bytes."""
    path = Path(path)
    data = read_checkpoint_file(path)
    seen, parameters = set(), 0
    for tensor in data["model_state"].values():
        if isinstance(tensor, torch.Tensor) and tensor.untyped_storage().data_ptr() not in seen:
            seen.add(tensor.untyped_storage().data_ptr())
            parameters += tensor.numel()
    tokenizer = data["tokenizer"]
    return {
        "path": str(path),
        "format": data["format"],
        "version": data["version"],
        "step": data.get("step"),
        "parameters": parameters,
        "unique_parameters": int(data.get("unique_parameters", parameters)),
        "model": dict(data["model_config"]),
        "vocab_size": (len(tokenizer.get("vocab", [])) + tokenizer.get("numbers", 0)
                       if isinstance(tokenizer, dict) else None),
        "data_format": dict(data["data_format"]),
        "has_train_state": data.get("train_state") is not None,
        "size_bytes": path.stat().st_size,
    }
