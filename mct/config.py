"""Validated configuration: `[model]`, `[data]`, `[train]` and `[generate]` tables of a TOML file.

Every run's config is resolved here, by `resolve_config`, from layers (later wins):

    field defaults < TOML file (`--config`)  < `MCT_*` environment < data folder (`--data`) < flags < `--set`

On resume the run's saved `config.toml` takes the place of the defaults and the TOML file; the
environment and the flags still apply above it. The TOML file and the environment (nested with `__`,
`MCT_TRAIN__DEVICE=cuda`) are read by pydantic-settings' own sources. Every mistake becomes one
`MctError` line from `format_validation_error`, naming the key and where its value came from (config
file and key, environment variable, flag).
"""

from __future__ import annotations

import difflib
import functools
import json
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, get_args

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict, SettingsError
from pydantic_settings import TomlConfigSettingsSource

from mct.errors import ConfigError, MctError
from mct.tokenizer import DEFAULT_VOCAB

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

ENV_PREFIX = "MCT_"
ENV_DELIMITER = "__"
# A checkout (or editable install) keeps configs/ beside the package; a wheel puts them in share/mct.
CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
if not CONFIGS_DIR.is_dir():
    CONFIGS_DIR = Path(sys.prefix) / "share" / "mct" / "configs"
DEFAULT_CONFIG_PATH = CONFIGS_DIR / "default.toml"
TASKS = ("add", "sub", "mul", "mod")

# Upper bounds keep every size and count inside what torch and numpy accept (a C int), so a typo such
# as `--d-model 99999999999999` is one line naming the key, not an overflow deep inside torch.
MAX_WIDTH = 2**20
MAX_COUNT = 2**31 - 1
MAX_SEED = 2**32 - 1
MAX_MODULUS = 1000  # the mod task enumerates all P*P pairs (1,000: 22 s, 0.4 GB, 164 MB of files)


def _cross_field(keys: tuple[str, ...], message: str) -> PydanticCustomError:
    """A check across fields; `keys` (paths from the model validated) let the error name each source."""
    return PydanticCustomError("cross_field", message, {"keys": keys})


def _check_path(value: Path | None) -> Path | None:
    if value is None:
        return value
    text = str(value)
    if "\x00" in text:
        raise ValueError("a path cannot contain a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"the path {text.encode('utf-8', 'surrogateescape')!r} is not UTF-8 text, so it cannot "
                         "be written to config.toml; rename it") from None
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_true_for_a_number(cls, value, info):
        # pydantic reads true as 1 for an int field: `--set train.max_steps=true` would train one step
        if isinstance(value, bool):
            annotation = cls.model_fields[info.field_name].annotation
            kinds = get_args(annotation) or (annotation,)
            if bool not in kinds and (int in kinds or float in kinds):
                raise ValueError(f"{str(value).lower()} is a true/false value; give a number")
        return value


class ModelConfig(_Section):
    """The whole description of a model: a checkpoint rebuilds its model from this alone.

    The fields after `tie_weights` make compact models (AdderBoard-class sizes); their defaults build the
    same model, with the same initialisation, as before they existed."""

    vocab_size: int = Field(len(DEFAULT_VOCAB), ge=3, le=MAX_WIDTH, description="number of tokens (set from the tokenizer)")
    d_model: int = Field(256, ge=1, le=MAX_WIDTH, description="width of the residual stream")
    num_layers: int = Field(6, ge=1, le=4096, description="number of transformer blocks")
    num_heads: int = Field(8, ge=1, le=4096, description="attention heads per block; must divide d_model unless d_head is set")
    d_ff: int = Field(
        1024, ge=0, le=MAX_WIDTH,
        description="hidden width of the feed-forward layer (also for gated FFNs); 0 = no feed-forward layer",
    )
    max_seq_len: int = Field(512, ge=2, le=MAX_WIDTH, description="longest sequence (prompt + target) the model "
                             "accepts; a model with no table per position (neither learned positions nor RoPE: place "
                             "ids, none) widens it when it is asked a longer problem")
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
    place_base: int = Field(
        0, ge=0, le=4096,
        description="abacus/coupled: added to the place ids outside training (0 = units at 1): a base inside the "
        "training offsets' range gives the low places ids that training used as often as any other",
    )
    place_codes: Literal["learned", "orthogonal", "relative"] = Field(
        "learned",
        description="abacus/coupled: how position ids enter the model: a learned embedding of each id, fixed random "
        "orthogonal vectors (not trained), or relative: no vector, a learned attention bias per head for each "
        "difference of the key's and the query's ids (clipped to +-place_window), so a score depends on the "
        "difference alone and keys farther than any trained number stay as suppressed as the far ones in training",
    )
    place_window: int = Field(
        4, ge=1, le=64, description="place_codes = relative: id differences beyond +-place_window share one bias"
    )
    place_far: Literal["biased", "masked"] = Field(
        "biased",
        description="place_codes = relative: keys more than place_window places from the query get the one learned "
        "far bias (biased), or are not attended at all (masked: what a query sees no longer grows with the "
        "numbers' length; tokens without a place stay visible)",
    )
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
            raise _cross_field(("d_model", "num_heads"),
                               f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads}), or set d_head")
        if self.use_rope and self.head_dim % 2:
            size = "d_head" if self.d_head is not None else "d_model/num_heads"
            raise _cross_field(("d_model", "num_heads", "use_rope"),
                               f"RoPE needs an even head size, but {size} = {self.head_dim}; "
                               "change d_model, num_heads or d_head, or set use_rope = false")
        if self.shared_qkv_down and not self.projection_rank("qkv"):
            raise _cross_field(("shared_qkv_down", "rank"),
                               "shared_qkv_down needs a low-rank query/key/value projection: set rank or qkv_rank > 0")
        orthogonal = self.place_codes == "orthogonal" and self.place_values
        if orthogonal and self.pos_rank:
            raise _cross_field(("place_codes", "pos_rank"), "orthogonal place codes are a full table: set pos_rank = 0")
        if orthogonal and self.max_place + 1 > self.d_model:
            raise _cross_field(("place_codes", "max_place", "d_model"),
                               f"orthogonal place codes need max_place + 1 ({self.max_place + 1}) <= d_model "
                               f"({self.d_model}): one orthogonal vector per id")
        if self.place_codes == "relative" and not self.place_values:
            raise _cross_field(("place_codes", "absolute_positions", "use_rope"),
                               "place_codes = 'relative' biases attention by place-id differences: it needs "
                               "absolute_positions = 'abacus' or 'coupled' and use_rope = false")
        if self.relative_places and self.place_base < 1:
            raise _cross_field(("place_codes", "place_base"),
                               "place_codes = 'relative' needs place_base >= 1: id 0 means 'no place', and the answer "
                               "marker (place 0 + base) must keep one")
        if self.place_codes == "relative" and self.pos_rank:
            raise _cross_field(("place_codes", "pos_rank"), "relative place codes have no position table: set pos_rank = 0")
        if self.pos_rank and (self.use_rope or self.absolute_positions == "none"):
            raise _cross_field(("pos_rank", "use_rope", "absolute_positions"),
                               "pos_rank factorises the learned position table: it needs use_rope = false and "
                               "absolute_positions learned, abacus or coupled")
        return self

    @property
    def place_values(self) -> bool:
        """Position ids are place values (abacus or coupled, without RoPE): they carry over to longer numbers."""
        return not self.use_rope and self.absolute_positions in ("abacus", "coupled")

    @property
    def relative_places(self) -> bool:
        """Place ids enter as a relative attention bias (the validator allows it on abacus/coupled models only)."""
        return self.place_codes == "relative"

    @property
    def head_dim(self) -> int:
        """Size of each attention head: d_head, or d_model / num_heads when d_head is not set."""
        return self.d_head if self.d_head is not None else self.d_model // self.num_heads

    def projection_rank(self, projection: Literal["qkv", "out", "ffn"]) -> int:
        """Rank of one kind of projection (0 = dense): its own field, else `rank`."""
        own = {"qkv": self.qkv_rank, "out": self.out_rank, "ffn": self.ffn_rank}[projection]
        return self.rank if own is None else own


# The problem mixes of the generated stream: {mix: (the shapes it adds, the tasks it applies to)}.
MIXES = {"carry_mix": ("carries and borrows", ("add", "sub")),
         "tie_mix": ("carries and signs decided by lower columns", ("add", "sub")),
         "chain_mix": ("carries and borrows passed on", ("add", "sub")),
         "edge_mix": ("zeros, nines and equal digits", ("add",)),
         "nines_mix": ("factors next to a power of ten", ("mul",))}


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
    pad_to_longer: bool = Field(
        False,
        description="add/sub: zero-pad each problem's shorter operand to the longer one's digits and the answer "
        "to the width that gives (7+1234 -> 0007+1234=), so every column holds two digits at any length",
    )
    sub_complement: bool | None = Field(
        None,
        description="sub, reversed (with or without steps: the steps are then the columns of a - b as written): "
        "write the w digits of (a - b) mod 10^w (w: the padded width or the "
        "longer operand's digits) and then the sign (the top column's borrow), so each token depends on its column "
        "and the one below (12-345= -> #766-); none = wherever it applies, false = the sign first (#-333), which "
        "learns far more slowly",
    )
    residue_tokens: bool = Field(
        False,
        description="mod: one token per residue (0..modulus-1) instead of one per digit, as in the grokking papers "
        "(\"60+60=\" is four tokens, the answer one); needs answer_order = \"plain\" and no padding or steps",
    )
    modulus: int = Field(113, ge=2, le=MAX_MODULUS, description="modulus P of the mod task (P*P problems: at most "
                         "1,000, a million)")
    train_fraction: float = Field(0.3, gt=0.0, lt=1.0, description="mod task: share of all P*P pairs used for training")
    step_masking_mode: Literal["none", "mask_steps", "mask_answer"] = Field(
        "mask_steps",
        description="loss on every token (none), the answer only (mask_steps) or the steps only (mask_answer)",
    )
    max_seq_len: int = Field(512, ge=2, le=MAX_WIDTH, description="longest example; longer ones are counted and dropped")
    train_path: Path | None = Field(None, description="training JSONL; none = generate problems on the fly")
    val_path: Path | None = Field(None, description="validation JSONL; none = generated, disjoint from test")
    test_path: Path | None = Field(None, description="test JSONL; none = generated, disjoint from training")
    n_train: int = Field(100_000, ge=1, le=MAX_COUNT, description="training records written by `mct gen`")
    # 3,000: the early stop trusts the validation split (no error in N problems bounds the error rate at
    # about 3 / N), and 1,000 let runs on a `mct gen add --steps` folder stop at test 99.9% and miss `1+999=`
    n_val: int = Field(3_000, ge=1, le=MAX_COUNT, description="validation records")
    n_test: int = Field(2_000, ge=1, le=MAX_COUNT, description="test records")
    ood_digits: tuple[int, int] | None = Field(
        None, description="`mct gen`: operand lengths [C, D] of an extra out-of-distribution test split "
        "(test_ood.jsonl, for `mct eval CKPT DIR --split test_ood`); training does not read it"
    )
    carry_mix: float = Field(
        0.0, ge=0.0, le=1.0, description="add/sub: share of training problems drawn where every column carries "
        "(borrows), the longest carry chains; the rest stays balanced over carry counts")
    tie_mix: float = Field(
        0.0, ge=0.0, le=1.0, description="add/sub: share of training problems whose top columns (one to all "
        "of them) are ties: sub equal digits (the sign is decided below; equal lengths only), add digits summing "
        "to 9, and 9s in the longer operand above the shorter one's top (the carry into the top is decided below)")
    chain_mix: float = Field(
        0.0, ge=0.0, le=1.0, description="add/sub: share of training problems given a carry (borrow) chain "
        "inside the number: a carrying column and 1 or more columns above it that pass the carry on (add digits "
        "summing to 9, sub equal digits), as in 248+252, where the ones' carry ends in the hundreds")
    edge_mix: float = Field(
        0.0, ge=0.0, le=1.0, description="add: share of training problems in which each digit, with "
        "probability 1/2, becomes 0, 9 or the other operand's digit in its column: sparse operands, runs of 9s, "
        "equal digits and their mixtures (500+500, 999+999, 55+55, 0+0), the boundaries uniform operands seldom show")
    nines_mix: float = Field(
        0.0, ge=0.0, le=1.0, description="mul: share of training problems whose top digits (one to all of them) "
        "become 9s in one operand or both, as in 998*999 and 99*989: factors next to a power of ten, whose "
        "products (x * 999 = x * 1000 - x) uniform operands almost never show")
    length_weights: Literal["equal", "sqrt", "size"] = Field(
        "equal", description="training batches (generated or from a file): every operand-length pair an equal share "
        "(equal), or a share in proportion to its number of problems (size: uniform over the whole problem space; "
        "a file: each record once per epoch), or to its square root (sqrt: between the two)")
    curriculum_steps: int = Field(
        0, ge=0, le=10**9, description="length curriculum: the longest training operand grows from min_digits to "
        "max_digits over these steps (0 = every length from the start)")
    seed: int = Field(0, ge=-(2**63), lt=2**63, description="seed of data generation")

    _paths = field_validator("train_path", "val_path", "test_path")(_check_path)

    @model_validator(mode="after")
    def _check_ranges(self):
        if self.min_digits > self.max_digits:
            raise _cross_field(("min_digits", "max_digits"),
                               f"min_digits ({self.min_digits}) is larger than max_digits ({self.max_digits})")
        if self.step_masking_mode == "mask_answer" and not self.use_steps:
            raise _cross_field(("step_masking_mode", "use_steps"),
                               "step_masking_mode 'mask_answer' trains on the steps only, so it needs use_steps = true")
        for mix, (shapes, tasks) in MIXES.items():
            if getattr(self, mix) and self.task not in tasks:
                raise _cross_field((mix, "task"), f"{mix} applies to {' and '.join(tasks)} ({shapes}), not "
                                   f"{self.task}; set data.{mix} = 0")
        if self.pad_to_longer or self.sub_complement or self.residue_tokens:  # the format's own rules decide
            from mct.data.format import DataFormat

            try:
                DataFormat.from_config(self)
            except MctError as error:
                keys = ("pad_to_longer", "sub_complement", "residue_tokens", "pad_operands", "answer_order",
                        "use_steps", "task")
                raise _cross_field(keys, str(error)) from None
        if self.ood_digits is not None and not 1 <= self.ood_digits[0] <= self.ood_digits[1] <= 1000:
            raise _cross_field(("ood_digits",), f"ood_digits {list(self.ood_digits)} must be [shortest, longest], "
                               "each from 1 to 1000 digits")
        return self


class TrainConfig(_Section):
    """Optimisation, evaluation cadence, hardware and where results go."""

    batch_size: int = Field(64, ge=1, le=MAX_COUNT, description="examples per optimizer step (the global batch)")
    grad_accum_steps: int = Field(1, ge=1, le=MAX_COUNT, description="micro-batches per optimizer step")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine decay floor, as a share of lr")
    lr_schedule: Literal["cosine", "constant"] = Field("cosine", description="after warmup: cosine decay or constant")
    warmup_steps: int = Field(100, ge=0, le=MAX_COUNT, description="linear warmup steps")
    max_steps: int = Field(5_000, ge=1, le=MAX_COUNT, description="optimizer steps at most")
    weight_decay: float = Field(0.1, ge=0, description="AdamW decay (see decay_all)")
    marker_loss_weight: float = Field(
        1.0, ge=0.0, le=1.0, description="weight of the training loss on the answer marker '#' and <eos>, the "
        "tokens the format fixes; below 1 the answer's own tokens dominate the gradient (a residue model "
        "groks several times sooner at 0.05)")
    decay_all: bool = Field(
        False, description="weight decay on every parameter, norms and biases too, as torch's AdamW and the "
        "grokking papers apply it (false: on matrices only, nanoGPT's rule)")
    beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1")
    beta2: float = Field(0.99, ge=0, lt=1, description="AdamW beta2")
    grad_clip: float = Field(1.0, ge=0, description="clip the gradient norm to this (0 = off)")
    eval_every: int = Field(250, ge=1, le=MAX_COUNT, description="steps between evaluations")
    eval_samples: int = Field(1000, ge=1, le=MAX_COUNT, description="validation problems scored at each evaluation")
    target_accuracy: float | None = Field(
        None, gt=0, le=1, description="stop early once validation exact-match reaches this"
    )
    target_patience: int = Field(
        2, ge=1, le=MAX_COUNT, description="evaluations in a row at target_accuracy before stopping early"
    )
    cooldown_steps: int = Field(
        0, ge=0, le=MAX_COUNT, description="once the target is reached, train this many more steps while the "
        "learning rate falls linearly to 0, then stop (0 = stop at once): a model stopped at a high learning "
        "rate keeps rare errors that a validation sample cannot see")
    cooldown_pool: int = Field(
        1, ge=1, le=64, description="in the cooldown, draw this many batches for each step: half the batch as "
        "drawn, the other half the problems of the rest the model gets most wrong (highest loss, scored without "
        "gradients; 1 = plain batches), so the rare problems a cooldown is for get its steps")
    target_check_every: int | None = Field(
        None, ge=1, le=MAX_COUNT, description="also check target_accuracy every N steps between evaluations "
        "(none = at evaluations only): a check stops scoring at the first error too many and becomes a full, "
        "logged evaluation only when the whole validation sample is at the target")
    save_every: int = Field(500, ge=1, le=MAX_COUNT, description="steps between rewrites of last.pt")
    keep_every: int | None = Field(
        None, ge=1, le=MAX_COUNT, description="also keep a checkpoint every N steps in RUN/checkpoints/ "
        "(step-N.pt, weights only) for analysis over training, e.g. a grokking curve (none = off)")
    log_every: int = Field(10, ge=1, le=MAX_COUNT, description="steps between metric lines")
    device: str = Field("auto", min_length=1, max_length=64, description="auto, cpu, cuda, cuda:N or mps")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of initialisation and data order (0 to 2**32-1)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto = bf16 on GPUs that support it, fp16 on others, fp32 on CPU"
    )
    position_offset: int | None = Field(
        None, ge=0, description="abacus/coupled: largest random offset added to the position ids while training "
        "(none = up to model.max_place, so every id the model may meet is trained)"
    )
    compile: bool = Field(False, description="torch.compile the model: the first compilation of a model and batch "
                          "shape takes 20-30 s, later runs reuse inductor's cache (2-5 s); on CUDA the compiled "
                          "step is still captured in the CUDA graph, which already removes most of the step's "
                          "overhead, so it pays off in long runs only (H200, default model: 1,000 steps 6.5 s "
                          "on a warm cache against 1.75 s without compile)")
    cuda_graphs: bool | Literal["auto"] = Field(
        "auto", description="capture the whole training step in a CUDA graph (auto = on CUDA where possible)"
    )
    num_threads: int | None = Field(None, ge=1, le=4096, description="CPU threads for torch (none = torch's choice)")
    out_dir: Path | None = Field(None, description="run folder; none = a new folder under runs/")

    _paths = field_validator("out_dir")(_check_path)

    @field_validator("out_dir", mode="before")
    @classmethod
    def _named_folder(cls, value):
        if isinstance(value, str) and not value.strip():
            raise ValueError("an empty path would write the run into the current folder; name a folder, "
                             "or leave the key out for a new folder under runs/")
        return value


class GenConfig(_Section):
    """Decoding defaults for `mct generate`."""

    temperature: float = Field(0.0, ge=0, description="0 = greedy")
    top_k: int | None = Field(None, ge=1, le=MAX_WIDTH, description="sample among the k most likely tokens")
    max_new_tokens: int | None = Field(None, ge=1, le=MAX_WIDTH, description="none = until <eos> or the context is full")


class Config(_Section):
    """The root: one object per TOML table."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    generate: GenConfig = Field(default_factory=GenConfig)

    @model_validator(mode="after")
    def _check_place_positions(self):
        if self.model.place_values:
            if self.data.residue_tokens:
                raise ValueError(f"model.absolute_positions = {self.model.absolute_positions!r} numbers the places "
                                 "of digits, and data.residue_tokens writes none: use learned positions or RoPE")
            if self.data.answer_order != "reversed":
                raise ValueError(f"model.absolute_positions = {self.model.absolute_positions!r} needs "
                                 "data.answer_order = 'reversed' (an answer digit's place must be known when it is written)")
            if self.data.max_digits + 2 > self.model.max_place:
                raise ValueError(f"model.max_place ({self.model.max_place}) must exceed data.max_digits + 1")
            if self.model.place_base > self.largest_place_offset:
                raise ValueError(f"model.place_base ({self.model.place_base}) must lie within the training offsets "
                                 f"(0 to {self.largest_place_offset}: train.position_offset, or model.max_place - "
                                 f"data.max_digits - 2), or its ids were never trained")
        return self

    @property
    def largest_place_offset(self) -> int:
        """abacus/coupled: the largest random offset added to the place ids while training."""
        if self.train.position_offset is not None:
            return self.train.position_offset
        return max(0, self.model.max_place - (self.data.max_digits + 2))

    @model_validator(mode="after")
    def _check_lengths(self):
        if self.data.max_seq_len > self.model.max_seq_len:
            raise _cross_field(("data.max_seq_len", "model.max_seq_len"),
                               f"data.max_seq_len ({self.data.max_seq_len}) exceeds model.max_seq_len "
                               f"({self.model.max_seq_len})")
        return self

    def to_toml_dict(self) -> dict:
        """Plain data that TOML can hold (paths as strings, None values left out)."""
        return drop_none(self.model_dump(mode="json"))


# --------------------------------------------------------------------------------------------------
# keys and help text


def config_keys() -> list[str]:
    """Every settable key, as `table.key`."""
    return [f"{table}.{name}" for table, section in Config.model_fields.items()
            for name in section.annotation.model_fields]


def field_info(key: str):
    """The pydantic FieldInfo of `table.key` (KeyError for an unknown key)."""
    table, _, name = key.partition(".")
    return Config.model_fields[table].annotation.model_fields[name]


@functools.lru_cache(maxsize=4)
def _defaults_in(path: Path) -> dict:
    """The tables of a defaults file, read once per process (a dozen --help texts ask at import)."""
    try:
        return read_toml(path)
    except MctError:
        return {}  # a broken default file is reported when it is used, not in --help


def field_help(key: str, defaults_file: Path | None = None) -> str:
    """Help text of a key, from its Field description (written once, in this file).

    The default shown is the field's, or the value `defaults_file` sets (`mct train` with no --config
    reads configs/default.toml, whose 48-wide model is not the field default of 256)."""
    info = field_info(key)
    text = info.description or key
    default, source = info.get_default(call_default_factory=True), ""
    if defaults_file is not None:
        table, _, name = key.partition(".")
        values = _defaults_in(defaults_file).get(table, {})
        if name in values:
            default, source = values[name], f" in {defaults_file.parent.name}/{defaults_file.name}"
    shown = "none" if default is None else str(default).lower() if isinstance(default, bool) else str(default)
    first = text if text.startswith("torch.") else f"{text[0].upper()}{text[1:]}"  # a name keeps its case
    return f"{first} ({key}, default {shown}{source})."


def _suggest(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


# --------------------------------------------------------------------------------------------------
# layers


@dataclass
class Layer:
    """One source of values as nested tables, and how to name where a key came from.

    `label` names the source ("config file c.toml"); `spelled` maps a key path to how the user wrote
    it (an environment variable, a flag), for sources where that is not just the key.
    """

    label: str
    values: dict
    spelled: dict = field(default_factory=dict)

    def has(self, loc: tuple) -> bool:
        node: Any = self.values
        for key in loc:
            if not isinstance(node, Mapping) or key not in node:
                return False
            node = node[key]
        return True

    def origin(self, loc: tuple) -> str | None:
        """How the user wrote `loc` (a variable, a flag), where that is not the key itself."""
        for end in range(len(loc), 0, -1):
            if loc[:end] in self.spelled:
                return self.spelled[loc[:end]]
        return None

    def where(self, loc: tuple) -> str:
        """`config file c.toml, key train.lr`, `environment variable MCT_TRAIN__LR (train.lr)`, `--set train.lr`."""
        key = ".".join(map(str, loc))
        spelled = self.origin(loc)
        if spelled is not None:
            return spelled if not key or spelled.endswith(key) else f"{spelled} ({key})"
        return f"{self.label}, key {key}" if key else self.label


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


def _nest(loc: tuple, value) -> dict:
    node = value
    for key in reversed(loc):
        node = {key: node}
    return node


class _Settings(BaseSettings):
    """The shape pydantic-settings' sources read (TOML file, `MCT_*` environment); `Config` validates."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_DELIMITER,
                                      case_sensitive=False, extra="allow")
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    generate: GenConfig = GenConfig()


class _EnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (tests pass their own)."""

    def __init__(self, environ: Mapping[str, str]):
        self._environ = environ
        super().__init__(_Settings)

    def _load_env_vars(self):
        return {name.lower(): value for name, value in self._environ.items()}


def read_toml(path: str | Path) -> dict:
    """The tables of a TOML file; a missing, unreadable or malformed file is an MctError naming it."""
    path = Path(path)
    if path.is_dir():
        raise MctError(f"config file {path} is a folder; pass a TOML file (e.g. configs/default.toml)")
    if not path.is_file():
        shipped = DEFAULT_CONFIG_PATH.parent
        same_name = shipped / Path(path).name
        if same_name.is_file() and Path(path).resolve() != same_name.resolve():
            hint = f"the shipped one is {same_name}"
        else:
            hint = f"the shipped ones are in {shipped}" if shipped.is_dir() else "see configs/ in mct's repository"
        raise MctError(f"config file {path} does not exist; pass an existing TOML file ({hint})")
    try:
        return dict(TomlConfigSettingsSource(_Settings, toml_file=path).toml_data)
    except tomllib.TOMLDecodeError as exc:
        raise MctError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise MctError(f"config file {path} is not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} at "
                       f"offset {exc.start}); TOML files must be UTF-8") from None
    except PermissionError:
        raise MctError(f"config file {path} cannot be read: permission denied") from None
    except OSError as exc:
        raise MctError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise MctError(f"config file {path} is not valid TOML: {str(exc).split(';')[0]}") from None


def _env_names(environ: Mapping[str, str]) -> dict[str, str]:
    """Lower-cased names of the `MCT_*` variables -> their names as written."""
    return {name.lower(): name for name in environ if name.upper().startswith(ENV_PREFIX)}


def env_layer(environ: Mapping[str, str] | None = None) -> dict:
    """The `MCT_*` variables as nested tables, read by pydantic-settings (values still strings)."""
    return _env_layer(environ).values


def _env_layer(environ: Mapping[str, str] | None = None) -> Layer:
    import os

    environ = os.environ if environ is None else environ
    names = _env_names(environ)
    tables = list(Config.model_fields)
    for lower, name in names.items():
        rest = lower[len(ENV_PREFIX):]
        table, delimiter, key = rest.partition(ENV_DELIMITER)
        if delimiter and table not in tables:
            raise MctError(f"environment variable {name} names no config table; use MCT_<TABLE>__<KEY> with TABLE "
                           f"one of {', '.join(t.upper() for t in tables)}{_suggest(table, tables).upper()}")
        if not delimiter and rest in tables:
            try:
                value = json.loads(environ[name])
            except ValueError:
                value = None
            if not isinstance(value, dict):
                key, info = next(iter(Config.model_fields[rest].annotation.model_fields.items()))
                raise MctError(f"environment variable {name}: [{rest}] is a table, not a value; set one key with "
                               f"{ENV_PREFIX}{rest.upper()}{ENV_DELIMITER}<KEY>=VALUE "
                               f"(e.g. {ENV_PREFIX}{rest.upper()}{ENV_DELIMITER}{key.upper()}={info.default})")
    try:
        values = _EnvSource(environ)()
    except SettingsError as exc:
        bad = [name for lower, name in names.items() if _bad_json(environ[name])]
        which = f"environment variable {bad[0]}" if bad else "the MCT_* environment variables"
        raise MctError(f"{which} cannot be read: {exc.__cause__ or exc}; lists are written as JSON, "
                       "e.g. MCT_DATA__OOD_DIGITS='[4, 6]'") from None
    spelled = {}
    for lower, name in names.items():
        loc = tuple(lower[len(ENV_PREFIX):].split(ENV_DELIMITER))
        spelled[loc] = f"environment variable {name}"
    return Layer("the environment", {k: v for k, v in values.items() if v}, spelled)


def _bad_json(text: str) -> bool:
    if not text.strip().startswith(("[", "{")):
        return False
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


def parse_set(item: str) -> tuple[tuple[str, ...], Any]:
    """`table.key=value` (one `--set`) -> (key path, value). The value is read as a TOML value when it
    is one (`3e-3`, `true`, `[4, 6]`, `"text"`), as `None` for `none` (unless "none" is one of the key's
    choices: absolute_positions, step_masking_mode), else kept as text (`cuda:1`)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise MctError(f"--set {item!r}: write KEY=VALUE with KEY one of table.key (e.g. --set train.lr=3e-3)")
    loc = tuple(key.split("."))
    if len(loc) == 1:
        matches = [k for k in config_keys() if k.endswith("." + key)]
        hint = f"; did you mean {' or '.join(matches)}?" if matches else ""
        raise MctError(f"--set {item!r}: the key needs its table, as table.key{hint}")
    text = text.strip()
    if text.lower() in ("none", "null"):  # a choice named "none" (absolute_positions) stays that text
        return loc, "none" if text.lower() == "none" and "none" in _choices(loc) else None
    try:
        parsed = tomllib.loads(f"value = {text}")
    except (tomllib.TOMLDecodeError, ValueError):
        return loc, text
    return loc, parsed["value"] if list(parsed) == ["value"] else text


def _annotation(loc: tuple) -> Any:
    """The type of the config key (or table) at `loc`: Config itself for (), None when there is no such key."""
    section: Any = Config
    for key in loc:
        fields = getattr(section, "model_fields", None)
        if not fields or key not in fields:
            return None
        section = fields[key].annotation
    return section


def _choices(loc: tuple) -> tuple:
    """The Literal values the key at `loc` accepts (empty when it is no such key)."""
    section = _annotation(loc)
    options = [section] if typing.get_origin(section) is Literal else typing.get_args(section)  # X | None too
    return tuple(v for arg in options if typing.get_origin(arg) is Literal for v in typing.get_args(arg))


def _flag_layer(flags: Mapping[str, tuple[Any, str]] | None) -> Layer:
    values: dict = {}
    spelled = {}
    for key, (value, flag) in (flags or {}).items():
        if value is None:
            continue
        loc = tuple(key.split("."))
        values = deep_merge(values, _nest(loc, value))
        spelled[loc] = f"flag {flag}" if flag.startswith("-") else flag
    return Layer("the command line", values, spelled)


def _set_layer(sets: Sequence[str]) -> Layer:
    values: dict = {}
    spelled = {}
    for item in sets:
        loc, value = parse_set(item)
        values = deep_merge(values, _nest(loc, value))
        spelled[loc] = f"--set {'.'.join(loc)}"
    return Layer("--set", values, spelled)


# --------------------------------------------------------------------------------------------------
# errors


def _allowed_keys(loc: tuple) -> list[str]:
    return list(getattr(_annotation(loc[:-1]), "model_fields", {}) or {})


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:45] + "..." + text[-10:]


def format_validation_error(exc: ValidationError, layers: Sequence[Layer] = (), prefix: tuple = ()) -> str:
    """One clause per problem, joined with '; ', each naming the key and the layer its value came from.

    `layers` are in precedence order (the last wins); `prefix` is the path of the validated model
    inside the root config (e.g. ("model",) when a ModelConfig alone was validated).
    """
    parts = []
    for error in exc.errors():
        loc = prefix + tuple(k for k in error["loc"] if not isinstance(k, int))
        source = next((layer for layer in reversed(layers) if layer.has(loc)), None)
        key = ".".join(map(str, loc))
        kind = error["type"]
        if kind == "cross_field":
            table = loc
            involved = [table + tuple(k.split(".")) for k in error["ctx"]["keys"]]
            named = []
            for path in involved:
                owner = next((layer for layer in reversed(layers) if layer.has(path)), None)
                if owner is not None:
                    named.append(f"{'.'.join(path)} from {owner.origin(path) or owner.label}")
            parts.append(error["msg"] + (f" ({', '.join(named)})" if named else ""))
            continue
        where = source.where(loc) if source is not None else (f"key {key}" if key else "the configuration")
        if kind == "extra_forbidden":
            allowed = _allowed_keys(loc)
            if len(loc) == 1:
                message = f"unknown table [{loc[0]}] (allowed: {', '.join(allowed)}{_suggest(loc[0], allowed)})"
            else:
                message = f"unknown key (allowed in [{'.'.join(loc[:-1])}]: {', '.join(allowed)}" \
                          f"{_suggest(str(loc[-1]), allowed)})"
        elif kind in ("model_type", "model_attributes_type", "dict_type") and len(loc) <= 1 + len(prefix):
            message = f"[{key}] must be a table of keys, not {_shown(error.get('input'))}"
        else:
            message = error["msg"].removeprefix("Value error, ")
            value = error.get("input")
            if kind not in ("value_error", "missing") and not isinstance(value, (dict, list)):
                message += f" (got {_shown(value)})"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def _merged(layers: Sequence[Layer]) -> dict:
    """The layers' values, later ones winning."""
    merged: dict = {}
    for layer in layers:
        merged = deep_merge(merged, layer.values)
    return merged


def _validate(layers: Sequence[Layer]) -> Config:
    merged = _merged(layers)
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, layers)) from None


# --------------------------------------------------------------------------------------------------
# resolution


def default_config_path() -> Path | None:
    """`configs/default.toml` of this checkout, or None when the package was installed without it."""
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None


def run_config_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "config.toml"


def resolve_config(path: str | Path | None = None, *, resume: str | Path | None = None,
                   data: Mapping | None = None, data_source: str = "the data folder",
                   flags: Mapping[str, tuple[Any, str]] | None = None, sets: Sequence[str] = (),
                   environ: Mapping[str, str] | None = None) -> Config:
    """The one way a run's config is made, layer over layer (later wins):

    1. `resume` (a run folder): its saved config.toml; otherwise the field defaults;
    2. `path`: a TOML file (None = none; the CLI passes `default_config_path()` for a new run);
    3. the `MCT_*` environment (`environ`, default os.environ);
    4. `data`: `[data]` settings of a data folder (named `data_source` in errors); its max_seq_len (the
       longest example) raises data.max_seq_len and model.max_seq_len to at least that;
    5. `flags`: `{"train.lr": (value, "--lr")}` (or `(value, "argument TASK")`), values None are not given;
    6. `sets`: `--set` items `table.key=value`, later ones win.
    """
    files = _file_layers(path, resume)
    layers = files + [_env_layer(environ)]
    if data is not None:
        layers.append(_data_layer(data, data_source, layers))
    return _validate(_with_format_layer(layers, [_flag_layer(flags), _set_layer(sets)], chosen_from=len(files)))


def resolve_generate(saved: "GenConfig | None", flags: Mapping[str, tuple[Any, str]] | None = None,
                     environ: Mapping[str, str] | None = None) -> "GenConfig":
    """Decoding settings of `mct generate`, layer over layer (later wins): the defaults, the checkpoint's
    own `[generate]` table (`saved`), the `MCT_GENERATE__*` environment, then `flags`
    (`{"generate.temperature": (value, "--temperature")}`)."""
    env = _env_layer(environ)
    layers = [Layer("the checkpoint's [generate] table", {"generate": saved.model_dump()} if saved else {}),
              Layer(env.label, {"generate": env.values.get("generate", {})}, env.spelled), _flag_layer(flags)]
    return _validate(layers).generate


def _data_layer(data: Mapping, source: str, below: Sequence[Layer]) -> Layer:
    """A data folder's `[data]` settings; its longest example (data.max_seq_len) also raises the
    model's context (model.max_seq_len) to hold it, and never lowers a longer one set below."""
    values: dict = {"data": {k: v for k, v in data.items() if k != "max_seq_len"}}
    if "max_seq_len" in data:
        values = deep_merge(values, _context_values(data["max_seq_len"], below))
    return Layer(source, values)


def _context_values(width: int, below: Sequence[Layer]) -> dict:
    """data.max_seq_len and model.max_seq_len raised to at least `width` (never lowered), over `below`."""
    merged, values = _merged(below), {}
    for table, model in (("data", DataConfig), ("model", ModelConfig)):
        current = merged.get(table, {}).get("max_seq_len", model.model_fields["max_seq_len"].default)
        try:
            current = int(current)  # the environment's values are still text here
        except (TypeError, ValueError):
            current = width  # not a number: validation names the layer that set it
        if width > current:
            values[table] = {"max_seq_len": width}
    return values


def _with_format_layer(layers: list[Layer], upper: list[Layer], chosen_from: int) -> list[Layer]:
    """`layers` + the settings a config file chose for its own format, adjusted to the format the whole
    stack asks for + `upper` (flags, --set: they still win).

    A file's context (max_seq_len) and its problem mixes fit the format it was written for; a layer from
    `chosen_from` on (environment, data folder, flags, --set) that changes the format (`--set
    data.use_steps=true`, `--set data.task=mul` over configs/default.toml) would otherwise meet a context
    too short for its longest example, or a mix its task has no use for. So the generated stream's longest
    example raises both contexts (never lowers them), and a mix set only below `chosen_from` is dropped
    where the task has none. Values given from `chosen_from` on are kept as given, and errors name them."""
    stack = layers + upper
    task = _merged(stack).get("data", {}).get("task", DataConfig.model_fields["task"].default)
    chosen = stack[chosen_from:]
    values: dict = {}
    dropped = [mix for mix, (_, tasks) in MIXES.items() if task not in tasks
               and not any(layer.has(("data", mix)) for layer in chosen)]
    if dropped:
        values["data"] = {mix: 0.0 for mix in dropped}
    derived = Layer("the settings derived from the format", values)
    width = _generated_width(stack + [derived])
    if width is not None:
        context = _context_values(width, layers + [derived])
        for table in ("data", "model"):
            if table in context and not any(layer.has((table, "max_seq_len")) for layer in chosen):
                values.setdefault(table, {}).update(context[table])
    return layers + [derived] + upper


def _generated_width(layers: Sequence[Layer]) -> int | None:
    """The longest example the generated training stream of these layers' config writes, or None when the
    config is not valid (validation then names the problem)."""
    try:
        config = Config.model_validate(_merged(layers))
    except ValidationError:
        return None
    if config.data.train_path:  # a training file (a resumed --data run): its folder's layer set the context
        return None
    from mct.data.format import DataFormat
    from mct.data.stream import sequence_width

    try:
        data_format = DataFormat.from_config(config.data)
        return sequence_width(data_format, data_format.tokenizer(), config.data)
    except MctError:
        return None


def not_a_run_folder(path: str | Path) -> str:
    """The fix for a path given where a run folder belongs (a checkpoint is the usual slip)."""
    path = Path(path)
    if path.is_file():
        return f"resume takes the run folder (the one holding last.pt, e.g. {path.parent}), not a file"
    return "is it an mct run folder (the --out of `mct train`)?"


def _file_layers(path: str | Path | None, resume: str | Path | None) -> list[Layer]:
    layers = []
    if resume is not None:
        saved = run_config_path(resume)
        if not saved.is_file():
            raise MctError(f"run folder {resume} has no config.toml to resume from; {not_a_run_folder(resume)}")
        layers.append(Layer(f"run config {saved}", read_toml(saved)))
    if path is not None:
        layers.append(Layer(f"config file {path}", read_toml(path)))
    return layers


def load_config(path: str | Path | None = None, overrides: Mapping | None = None,
                environ: Mapping[str, str] | None = None) -> Config:
    """Defaults < TOML file `path` < `MCT_*` environment < `overrides` (nested tables; None = not given).

    `path` None means no file (the field defaults). For the Python API and tests; the CLI uses
    `resolve_config`, which also knows resumed runs, data folders, flag names and `--set`.
    """
    files = _file_layers(path, None)
    layers = _with_format_layer(files + [_env_layer(environ)], [Layer("overrides", drop_none(dict(overrides or {})))],
                                chosen_from=len(files))
    return _validate(layers)


def validate_config(data: Mapping, source: str = "the configuration") -> Config:
    """A Config from plain data (a checkpoint's, a saved run's), with errors as one MctError line."""
    if not isinstance(data, Mapping):
        raise MctError(f"{source}: the config must be a table of tables, not {type(data).__name__}")
    return _validate([Layer(source, dict(data))])


def validate_model_config(data: Any, source: str = "the model config") -> ModelConfig:
    """A ModelConfig from plain data, with errors as one MctError line naming `source`."""
    if isinstance(data, ModelConfig):
        return data
    if not isinstance(data, Mapping):
        raise MctError(f"{source}: the model config must be a table, not {type(data).__name__}")
    try:
        return ModelConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, [Layer(source, {"model": dict(data)})], prefix=("model",))) from None


# --------------------------------------------------------------------------------------------------
# writing


def to_toml(tables: Mapping[str, Mapping]) -> str:
    """TOML text of a config's tables (a real TOML writer: any string, path or number round-trips)."""
    return tomli_w.dumps(dict(tables))


def save_config_toml(config: Config, path: str | Path) -> None:
    """Write the fully resolved config as TOML (atomically)."""
    from mct.fileio import atomic_write_text

    atomic_write_text(Path(path), to_toml(config.to_toml_dict()))
