"""Validated configuration: `[model]`, `[data]`, `[train]` and `[generate]` tables of a TOML file.

Layers, later wins: field defaults < TOML file < `MCT_*` environment variables (nested with `__`,
e.g. `MCT_TRAIN__DEVICE=cuda`) < CLI flags. Every mistake becomes one `MctError` line naming where the
bad value came from (file, variable or flag), the key, and what is allowed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mct.errors import MctError
from mct.tokenizer import DEFAULT_VOCAB

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

ENV_PREFIX = "MCT_"
# A checkout (or editable install) keeps configs/ beside the package; a wheel puts them in share/mct.
CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
if not CONFIGS_DIR.is_dir():
    CONFIGS_DIR = Path(sys.prefix) / "share" / "mct" / "configs"
DEFAULT_CONFIG_PATH = CONFIGS_DIR / "default.toml"
TASKS = ("add", "sub", "mul", "mod")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    """The whole description of a model: a checkpoint rebuilds its model from this alone.

    The fields after `tie_weights` make compact models (AdderBoard-class sizes); their defaults build the
    same model, with the same initialisation, as before they existed."""

    vocab_size: int = Field(len(DEFAULT_VOCAB), ge=3, description="number of tokens (set from the tokenizer)")
    d_model: int = Field(256, ge=1, description="width of the residual stream")
    num_layers: int = Field(6, ge=1, description="number of transformer blocks")
    num_heads: int = Field(8, ge=1, description="attention heads per block; must divide d_model unless d_head is set")
    d_ff: int = Field(
        1024, ge=0,
        description="hidden width of the feed-forward layer (also for gated FFNs); 0 = no feed-forward layer",
    )
    max_seq_len: int = Field(512, ge=2, description="longest sequence (prompt + target) the model accepts")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout probability")
    ffn_type: Literal["gelu", "geglu", "swiglu"] = Field("gelu", description="feed-forward type")
    use_rope: bool = Field(True, description="rotary position embeddings in attention")
    rope_base: float = Field(10000.0, gt=0, description="RoPE frequency base")
    absolute_positions: Literal["learned", "none", "abacus", "coupled"] = Field(
        "learned",
        description="position scheme when use_rope is false: learned embeddings, none (NoPE), or learned "
        "embeddings of each digit's place value (abacus; coupled also ties '+' and '=') for length generalisation",
    )
    max_place: int = Field(64, ge=2, le=4096, description="abacus/coupled: the largest position id (longest number + offset)")
    norm_type: Literal["layernorm", "rmsnorm"] = Field("layernorm", description="pre-norm type")
    tie_weights: bool = Field(True, description="share the input embedding and output projection")
    d_head: int | None = Field(
        None, ge=1, description="size of each attention head; none = d_model / num_heads"
    )
    bias: bool = Field(True, description="biases in the attention and feed-forward projections")
    rank: int = Field(
        0, ge=0,
        description="rank of every attention and feed-forward projection, factorised W = up @ down; 0 = dense",
    )
    qkv_rank: int | None = Field(None, ge=0, description="rank of the query/key/value projection; none = rank")
    out_rank: int | None = Field(None, ge=0, description="rank of the attention output projection; none = rank")
    ffn_rank: int | None = Field(None, ge=0, description="rank of both feed-forward projections; none = rank")
    embed_rank: int = Field(
        0, ge=0, description="rank of the token embedding (vocab x d_model, and the tied output projection); 0 = full"
    )
    pos_rank: int = Field(
        0, ge=0, description="rank of the learned position table (positions x d_model); 0 = full table"
    )
    tie_kv: bool = Field(False, description="one projection for keys and values: k == v (before RoPE)")
    shared_qkv_down: bool = Field(
        False, description="queries, keys and values share one down-projection (needs a qkv rank)"
    )
    qk_norm: bool = Field(False, description="RMS-normalise each head's queries and keys (before RoPE)")
    share_norms: bool = Field(
        False, description="all pre-norms and the final norm share one weight (and bias); the QK-norms share one"
    )
    init_std: float = Field(
        0.02, gt=0,
        description="std of the normal init of weights and embeddings (residual projections: / sqrt(2 * num_layers))",
    )

    @model_validator(mode="after")
    def _check_heads(self):
        if self.d_head is None and self.d_model % self.num_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads}), or set d_head"
            )
        if self.use_rope and self.head_dim % 2:
            size = "d_head" if self.d_head is not None else "d_model/num_heads"
            raise ValueError(
                f"RoPE needs an even head size, but {size} = {self.head_dim}; "
                "change d_model, num_heads or d_head, or set use_rope = false"
            )
        if self.shared_qkv_down and not self.projection_rank("qkv"):
            raise ValueError("shared_qkv_down needs a low-rank query/key/value projection: set rank or qkv_rank > 0")
        if self.pos_rank and (self.use_rope or self.absolute_positions == "none"):
            raise ValueError("pos_rank factorises the learned position table: it needs use_rope = false and "
                             "absolute_positions learned, abacus or coupled")
        return self

    @property
    def head_dim(self) -> int:
        """Size of each attention head: d_head, or d_model / num_heads when d_head is not set."""
        return self.d_head if self.d_head is not None else self.d_model // self.num_heads

    def projection_rank(self, projection: Literal["qkv", "out", "ffn"]) -> int:
        """Rank of one kind of projection (0 = dense): its own field, else `rank`."""
        own = {"qkv": self.qkv_rank, "out": self.out_rank, "ffn": self.ffn_rank}[projection]
        return self.rank if own is None else own


class DataConfig(_Section):
    """Which problems, in which text format, and how the loss is masked."""

    task: Literal["add", "sub", "mul", "mod"] = Field("add", description="arithmetic task")
    min_digits: int = Field(1, ge=1, le=40, description="shortest operand, in digits")
    max_digits: int = Field(3, ge=1, le=40, description="longest operand, in digits")
    use_steps: bool = Field(False, description="targets hold the step-by-step trace before the answer")
    answer_order: Literal["reversed", "plain"] = Field(
        "reversed", description="answer digits least significant first (reversed) or as written (plain)"
    )
    pad_operands: bool = Field(
        False,
        description="write operands with leading zeros to max_digits digits and the answer to its full width, "
        "so every digit sits at a fixed position",
    )
    modulus: int = Field(113, ge=2, description="modulus P of the mod task")
    train_fraction: float = Field(0.3, gt=0.0, lt=1.0, description="mod task: share of all P*P pairs used for training")
    step_masking_mode: Literal["none", "mask_steps", "mask_answer"] = Field(
        "mask_steps",
        description="loss on every token (none), the answer only (mask_steps) or the steps only (mask_answer)",
    )
    max_seq_len: int = Field(512, ge=2, description="longest example; longer ones are counted and dropped")
    train_path: Path | None = Field(None, description="training JSONL; none = generate problems on the fly")
    val_path: Path | None = Field(None, description="validation JSONL; none = generated, disjoint from test")
    test_path: Path | None = Field(None, description="test JSONL; none = generated, disjoint from training")
    n_train: int = Field(100_000, ge=1, description="training records written by `mct gen`")
    n_val: int = Field(1_000, ge=1, description="validation records")
    n_test: int = Field(2_000, ge=1, description="test records")
    ood_digits: tuple[int, int] | None = Field(
        None, description="operand lengths [C, D] of an extra out-of-distribution test split"
    )
    seed: int = Field(0, description="seed of data generation")

    @model_validator(mode="after")
    def _check_ranges(self):
        if self.min_digits > self.max_digits:
            raise ValueError(f"min_digits ({self.min_digits}) is larger than max_digits ({self.max_digits})")
        if self.step_masking_mode == "mask_answer" and not self.use_steps:
            raise ValueError("step_masking_mode 'mask_answer' trains on the steps only, so it needs use_steps = true")
        if self.ood_digits is not None and self.ood_digits[0] > self.ood_digits[1]:
            raise ValueError(f"ood_digits {list(self.ood_digits)} must be [shortest, longest]")
        return self


class TrainConfig(_Section):
    """Optimisation, evaluation cadence, hardware and where results go."""

    batch_size: int = Field(64, ge=1, description="examples per optimizer step (the global batch)")
    grad_accum_steps: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine decay floor, as a share of lr")
    lr_schedule: Literal["cosine", "constant"] = Field("cosine", description="after warmup: cosine decay or constant")
    warmup_steps: int = Field(100, ge=0, description="linear warmup steps")
    max_steps: int = Field(5_000, ge=1, description="optimizer steps at most")
    weight_decay: float = Field(0.1, ge=0, description="AdamW decay, applied to matrices only")
    beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1")
    beta2: float = Field(0.99, ge=0, lt=1, description="AdamW beta2")
    grad_clip: float = Field(1.0, ge=0, description="clip the gradient norm to this (0 = off)")
    eval_every: int = Field(250, ge=1, description="steps between evaluations")
    eval_samples: int = Field(1000, ge=1, description="validation problems scored at each evaluation")
    target_accuracy: float | None = Field(
        None, gt=0, le=1, description="stop early once validation exact-match reaches this"
    )
    target_patience: int = Field(
        2, ge=1, description="evaluations in a row at target_accuracy before stopping early"
    )
    save_every: int = Field(500, ge=1, description="steps between rewrites of last.pt")
    log_every: int = Field(10, ge=1, description="steps between metric lines")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    seed: int = Field(0, description="seed of initialisation and data order")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto = bf16 on GPUs that support it, fp16 on others, fp32 on CPU"
    )
    position_offset: int | None = Field(
        None, ge=0, description="abacus/coupled: largest random offset added to the position ids while training "
        "(none = up to model.max_place, so every id the model may meet is trained)"
    )
    compile: bool = Field(False, description="torch.compile the model")
    cuda_graphs: bool | Literal["auto"] = Field(
        "auto", description="capture the whole training step in a CUDA graph (auto = on CUDA where possible)"
    )
    num_threads: int | None = Field(None, ge=1, description="CPU threads for torch (none = torch's choice)")
    out_dir: Path | None = Field(None, description="run folder; none = a new folder under runs/")


class GenConfig(_Section):
    """Decoding defaults for `mct generate`."""

    temperature: float = Field(0.0, ge=0, description="0 = greedy")
    top_k: int | None = Field(None, ge=1, description="sample among the k most likely tokens")
    max_new_tokens: int | None = Field(None, ge=1, description="none = until <eos> or the context is full")


class Config(_Section):
    """The root: one object per TOML table."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    generate: GenConfig = Field(default_factory=GenConfig)

    @model_validator(mode="after")
    def _check_place_positions(self):
        if self.model.absolute_positions in ("abacus", "coupled") and not self.model.use_rope:
            if self.data.answer_order != "reversed":
                raise ValueError(f"model.absolute_positions = {self.model.absolute_positions!r} needs "
                                 "data.answer_order = 'reversed' (an answer digit's place must be known when it is written)")
            if self.data.max_digits + 2 > self.model.max_place:
                raise ValueError(f"model.max_place ({self.model.max_place}) must exceed data.max_digits + 1")
        return self

    @model_validator(mode="after")
    def _check_lengths(self):
        if self.data.max_seq_len > self.model.max_seq_len:
            raise ValueError(
                f"data.max_seq_len ({self.data.max_seq_len}) exceeds model.max_seq_len ({self.model.max_seq_len})"
            )
        return self

    def to_toml_dict(self) -> dict:
        """Plain data that TOML can hold (paths as strings, None values left out)."""
        return drop_none(self.model_dump(mode="json"))


class _EnvLayer(BaseSettings):
    """Reads the `MCT_*` environment into nested dicts; validation happens on the merged layers."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="ignore")
    model: dict[str, Any] = {}
    data: dict[str, Any] = {}
    train: dict[str, Any] = {}
    generate: dict[str, Any] = {}


def drop_none(value):
    """`value` with every None entry of its (nested) dicts removed: unset flags override nothing."""
    if isinstance(value, dict):
        return {k: drop_none(v) for k, v in value.items() if v is not None}
    return value


def deep_merge(base: dict, update: Mapping) -> dict:
    """A copy of `base` with `update` laid over it, table by table."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_toml(path: str | Path) -> dict:
    """The tables of a TOML file; a missing or malformed file is an MctError naming it."""
    path = Path(path)
    if not path.is_file():
        raise MctError(f"config file {path} does not exist; pass an existing TOML file (see configs/)")
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise MctError(f"config file {path} is not valid TOML: {exc}") from None


def env_layer(environ: Mapping[str, str] | None = None) -> dict:
    """The `MCT_*` variables as nested tables (strings; pydantic converts them on validation)."""
    environ = os.environ if environ is None else environ
    unknown = sorted(
        k for k in environ
        if k.upper().startswith(ENV_PREFIX) and k.upper()[len(ENV_PREFIX):].split("__")[0].lower() not in Config.model_fields
        and "__" in k
    )
    if unknown:
        raise MctError(
            f"environment variable {unknown[0]} names no config table; use MCT_<TABLE>__<KEY> with TABLE one of "
            f"{', '.join(t.upper() for t in Config.model_fields)}"
        )
    if environ is os.environ:
        layer = _EnvLayer()
    else:  # tests pass their own environment
        saved = dict(os.environ)
        try:
            os.environ.clear()
            os.environ.update(environ)
            layer = _EnvLayer()
        finally:
            os.environ.clear()
            os.environ.update(saved)
    return {table: {key: _parse_env_value(value) for key, value in values.items()}
            for table, values in layer.model_dump().items() if values}


def _parse_env_value(value):
    """Lists (e.g. `MCT_DATA__OOD_DIGITS='[4, 6]'`) arrive as JSON text; scalars stay strings for pydantic."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _lookup(layer: Mapping, loc: tuple) -> bool:
    node: Any = layer
    for key in loc:
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
    return True


def _describe_source(loc: tuple, path: Path | None, env: dict, cli: dict) -> str:
    if loc and _lookup(cli, loc):
        return f"command-line flag for {'.'.join(map(str, loc))}"
    if loc and _lookup(env, loc):
        return f"environment variable {ENV_PREFIX}{'__'.join(str(k).upper() for k in loc)}"
    if path is not None:
        return f"config file {path}"
    return "the configuration"


def _allowed_keys(loc: tuple) -> str:
    section = Config
    for key in loc[:-1]:
        field = section.model_fields.get(key) if hasattr(section, "model_fields") else None
        if field is None:
            return ""
        section = field.annotation
    fields = getattr(section, "model_fields", None)
    return ", ".join(fields) if fields else ""


def format_validation_error(exc: ValidationError, path: Path | None = None,
                            env: dict | None = None, cli: dict | None = None) -> str:
    """One line per problem, joined with '; ', each naming its source and key."""
    parts = []
    for error in exc.errors():
        loc = tuple(k for k in error["loc"] if not isinstance(k, int))
        source = _describe_source(loc, path, env or {}, cli or {})
        key = ".".join(map(str, loc)) or "(root)"
        if loc and len(loc) == 1 and loc[0] in Config.model_fields and error["type"] == "model_type":
            message = f"[{loc[0]}] must be a table"
        elif error["type"] == "extra_forbidden":
            message = f"unknown key '{key}' (allowed: {_allowed_keys(loc)})"
        else:
            message = error["msg"].removeprefix("Value error, ")
            if "input" in error and error["type"] not in ("value_error", "missing") and not isinstance(
                error["input"], (dict, list)
            ):
                message += f" (got {error['input']!r})"
            message = f"{key}: {message}"
        parts.append(f"{source}: {message}")
    return "; ".join(parts)


def validate_config(data: Mapping, source: str = "the configuration") -> Config:
    """A Config from plain data (e.g. a checkpoint's), with errors as one MctError line."""
    try:
        return Config.model_validate(dict(data))
    except ValidationError as exc:
        raise MctError(f"{source}: {format_validation_error(exc)}") from None


def default_config_path() -> Path | None:
    """`configs/default.toml` of this checkout, or None when the package was installed without it."""
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None


def load_config(path: str | Path | None = None, overrides: Mapping | None = None,
                environ: Mapping[str, str] | None = None) -> Config:
    """Defaults < TOML file `path` < `MCT_*` environment < `overrides` (CLI flags as nested tables).

    `overrides` values that are None are ignored, so a CLI can pass every flag it has. `path` None
    means no file (the field defaults); the CLI passes `default_config_path()` when it wants the default.
    """
    path = Path(path) if path is not None else None
    file_layer = read_toml(path) if path is not None else {}
    env = env_layer(environ)
    cli = drop_none(dict(overrides or {}))
    merged = deep_merge(deep_merge(file_layer, env), cli)
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        raise MctError(format_validation_error(exc, path, env, cli)) from None


def save_config_toml(config: Config, path: str | Path) -> None:
    """Write the fully resolved config as TOML (atomically)."""
    from mct.fileio import atomic_write_text

    atomic_write_text(Path(path), to_toml(config.to_toml_dict()))


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(tables: Mapping[str, Mapping]) -> str:
    """TOML text of one level of tables of scalars and lists (all a Config holds)."""
    lines = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)
