"""Export to TransformerLens: an mct model as a `HookedTransformer` with the same logits and hooks.

    from mct.export import to_hooked_transformer
    tl_model = to_hooked_transformer(predictor.model)       # needs `pip install 'mct[tl]'`
    tl_logits, tl_cache = tl_model.run_with_cache(ids)       # == mct's logits within 1e-4

    mct export runs/demo/best.pt --to transformer-lens demo_tl.pt
    d = torch.load("demo_tl.pt", weights_only=True)          # plain tensors and data
    tl_model = HookedTransformer(HookedTransformerConfig(**d["cfg"]))
    tl_model.load_state_dict(d["state_dict"])

The mapping (TransformerLens 3.x, `HookedTransformer`; fold_ln and the other weight processing are left
for the user to call): learned positions -> "standard" (`W_pos`), no positions -> "standard" with `W_pos`
zero, RoPE -> "rotary" (rotate-half pairs, `rotary_adjacent_pairs=False`, `rotary_dim = d_head`);
layernorm -> "LN", rmsnorm -> "RMS"; gelu -> act_fn "gelu" (exact); geglu / swiglu -> `gated_mlp` with
act_fn "gelu" / "silu". The unembedding has no bias (`b_U` = 0); tied embeddings are copied.

One mismatch needs care: TransformerLens's gated MLP has no bias on the gate or up projection
(`act(x W_gate) * (x W_in) + b_in`), mct's `fc_in` has one. For LayerNorm models the biases are folded
into W_gate / W_in exactly: the LayerNorm output x = w * n + b with n centred, so x . (1/w) = b . (1/w) is
the same for every input, a constant feature that carries the biases (when b . (1/w) is too small,
ln2's bias is shifted along 1/w first and the shift compensated). So the exported `ln2.b`, `W_gate` and
`W_in` differ from mct's, while every hook (`mlp.hook_pre`, `hook_pre_linear`, `hook_post`) and logit
agree. An RMSNorm has no constant to carry them: a gated RMSNorm model with nonzero `fc_in` biases is
refused. Position schemes TransformerLens cannot express (per-token position ids: abacus, coupled) are
refused too.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch

from mct.errors import MctError
from mct.fileio import atomic_torch_save
from mct.generation import eval_mode

__all__ = ["export_transformer_lens", "tl_config", "tl_state_dict", "to_hooked_transformer"]

TL_REQUIREMENT = "transformer-lens>=3,<4"
# ModelConfig fields whose every value the export below handles; any other field must be at its default.
# init_std only sets the weights a model starts from: the export copies the trained ones.
_KNOWN_FIELDS = ("vocab_size", "d_model", "num_layers", "num_heads", "d_ff", "max_seq_len", "dropout", "ffn_type",
                 "use_rope", "rope_base", "absolute_positions", "norm_type", "tie_weights", "init_std")
_POSITION_SCHEMES = ("rope", "learned", "none")


def position_scheme(config) -> str:
    """"rope", "learned", "none", or another scheme a newer config names (abacus, coupled...)."""
    if config.use_rope:
        return "rope"
    return str(getattr(config, "positions", None) or config.absolute_positions)


def check_exportable(model) -> None:
    """MctError (one line) when the model uses something TransformerLens cannot express."""
    config = model.config
    scheme = position_scheme(config)
    if scheme not in _POSITION_SCHEMES:
        how = ("a per-head attention bias by place difference" if config.place_codes == "relative"
               else "embeddings of per-token place ids")
        raise MctError(f"TransformerLens cannot express the position scheme {scheme!r} ({how}); export supports "
                       f"{', '.join(_POSITION_SCHEMES)}")
    for field, info in type(config).model_fields.items():
        if field not in _KNOWN_FIELDS and getattr(config, field) != info.default:
            raise MctError(f"export to TransformerLens does not support model.{field} = {getattr(config, field)!r} "
                           "yet (only its default)")
    if config.d_ff and config.ffn_type != "gelu" and config.norm_type == "rmsnorm":
        for index, block in enumerate(model.blocks):
            if block.mlp.b_gate.abs().max() > 0 or block.mlp.b_in.abs().max() > 0:
                raise MctError(f"TransformerLens's gated MLP has no gate/up bias, and an RMSNorm model gives no "
                               f"constant to fold them into: layer {index}'s mlp.fc_in bias is not zero")


def tl_config(model) -> dict:
    """`HookedTransformerConfig` keyword arguments (plain data) of the model."""
    config = model.config
    check_exportable(model)
    cfg = {
        "model_name": "mct", "d_model": config.d_model, "n_layers": config.num_layers, "n_heads": config.num_heads,
        "d_head": config.head_dim, "d_mlp": config.d_ff, "d_vocab": config.vocab_size, "n_ctx": config.max_seq_len,
        "act_fn": "silu" if config.ffn_type == "swiglu" else "gelu", "gated_mlp": config.ffn_type != "gelu",
        "normalization_type": "LN" if config.norm_type == "layernorm" else "RMS", "eps": model.ln_final.eps,
        "positional_embedding_type": "rotary" if config.use_rope else "standard",
        "default_prepend_bos": False, "init_weights": False,
    }
    if not config.d_ff:  # attention-only blocks: no ln2, no MLP (TransformerLens's attn_only)
        cfg.update(attn_only=True, d_mlp=None)
    if config.use_rope:
        cfg.update(rotary_dim=config.head_dim, rotary_base=config.rope_base, rotary_adjacent_pairs=False)
    return cfg


def _fold_gated_biases(ln_weight: torch.Tensor, ln_bias: torch.Tensor, projections: list[tuple]):
    """Biases of projections that read a LayerNorm's output, folded into their weights (see the module
    docstring). projections: [(W [D, F], b [F])]. Returns (new LayerNorm bias [D], [W' [D, F]])."""
    if ln_weight.abs().min() < 1e-6:
        raise MctError("a LayerNorm weight entry is (almost) zero: the gated MLP's biases cannot be folded")
    inverse = 1.0 / ln_weight  # x . inverse = ln_bias . inverse for every input (n is centred)
    constant, size = float(ln_bias @ inverse), float(inverse.norm())
    bias = ln_bias
    if abs(constant) < size:  # too small to divide by safely: shift the bias along `inverse`
        target = math.copysign(size, constant or 1.0)
        bias = ln_bias + (target - constant) * inverse / size**2
        constant = target
    feature = inverse / constant  # x_exported . feature == 1
    shift = ln_bias - bias  # mct's LayerNorm output = the exported one + shift
    return bias, [weight + torch.outer(feature, shift @ weight + b) for weight, b in projections]


@torch.no_grad()
def tl_state_dict(model) -> dict[str, torch.Tensor]:
    """The parameters of the `HookedTransformer` (CPU float32 copies), by TransformerLens name."""
    check_exportable(model)
    config = model.config
    sd: dict[str, torch.Tensor] = {"embed.W_E": model.W_E}
    if not config.use_rope:
        sd["pos_embed.W_pos"] = model.W_pos if model.W_pos is not None else \
            model.W_E.new_zeros(config.max_seq_len, config.d_model)
    layer_norm = config.norm_type == "layernorm"

    def norm(prefix: str, module) -> None:
        sd[f"{prefix}.w"] = module.weight
        if layer_norm:
            sd[f"{prefix}.b"] = module.bias

    for index, block in enumerate(model.blocks):
        p = f"blocks.{index}"
        norm(f"{p}.ln1", block.ln1)
        for name in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O"):
            sd[f"{p}.attn.{name}"] = getattr(block.attn, name)
        mlp = block.mlp
        if mlp is None:
            continue
        norm(f"{p}.ln2", block.ln2)
        sd[f"{p}.mlp.W_out"], sd[f"{p}.mlp.b_out"] = mlp.W_out, mlp.b_out
        if not mlp.gated:
            sd[f"{p}.mlp.W_in"], sd[f"{p}.mlp.b_in"] = mlp.W_in, mlp.b_in
            continue
        sd[f"{p}.mlp.W_gate"], sd[f"{p}.mlp.W_in"] = mlp.W_gate, mlp.W_in
        sd[f"{p}.mlp.b_in"] = torch.zeros_like(mlp.b_in)  # TL adds b_in after the product: unused
        if layer_norm and (mlp.b_gate.abs().max() > 0 or mlp.b_in.abs().max() > 0):
            sd[f"{p}.ln2.b"], (sd[f"{p}.mlp.W_gate"], sd[f"{p}.mlp.W_in"]) = _fold_gated_biases(
                block.ln2.weight.double(), block.ln2.bias.double(),
                [(mlp.W_gate.double(), mlp.b_gate.double()), (mlp.W_in.double(), mlp.b_in.double())])
    norm("ln_final", model.ln_final)
    sd["unembed.W_U"], sd["unembed.b_U"] = model.W_U, model.b_U
    return {name: value.detach().to("cpu", torch.float32).clone().contiguous() for name, value in sd.items()}


def _transformer_lens():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import transformer_lens
            from transformer_lens import HookedTransformer, HookedTransformerConfig
    except ImportError:
        raise MctError(f"export to TransformerLens needs the transformer_lens package: pip install 'mct[tl]' "
                       f"(or pip install '{TL_REQUIREMENT}')") from None
    return transformer_lens, HookedTransformer, HookedTransformerConfig


def to_hooked_transformer(model, device: str | torch.device | None = None):
    """A `transformer_lens.HookedTransformer` computing what `model` computes (logits within 1e-4), on
    `device` (default: the model's), in eval mode."""
    _, HookedTransformer, HookedTransformerConfig = _transformer_lens()
    cfg = tl_config(model)
    params = tl_state_dict(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "HookedTransformer is deprecated" (3.x): it is what 3.x loads
        tl_model = HookedTransformer(HookedTransformerConfig(**cfg, device=str(device or model.device)))
    state = tl_model.state_dict()
    unknown = sorted(set(params) - set(state))
    if unknown:  # a bug here, or a TransformerLens that names parameters differently
        raise RuntimeError(f"TransformerLens has no parameter {unknown[0]}")
    state.update({name: value.to(state[name].device) for name, value in params.items()})
    tl_model.load_state_dict(state)
    return tl_model.eval()


@torch.no_grad()
def export_transformer_lens(model, path: str | Path, check_ids: torch.Tensor | None = None) -> dict:
    """Write `{"cfg": HookedTransformerConfig kwargs, "state_dict": ...}` (tensors and plain data, CPU) to
    `path`, atomically; `HookedTransformer(HookedTransformerConfig(**d["cfg"]))` + `load_state_dict(
    d["state_dict"])` rebuilds the model. When `check_ids` [B, T] are given, both models run them and the
    largest logit difference is reported (MctError above 1e-4). Returns {"path", "cfg", "max_abs_logit_diff"}."""
    transformer_lens, _, _ = _transformer_lens()
    tl_model = to_hooked_transformer(model, device="cpu")
    difference = None
    if check_ids is not None:
        with eval_mode(model):
            expected, _, _ = model(check_ids)
        difference = float((tl_model(check_ids.cpu()).float() - expected.float().cpu()).abs().max())
        if difference > 1e-4:
            raise MctError(f"the TransformerLens model's logits differ from mct's by {difference:.3g} (> 1e-4)")
    payload = {"cfg": tl_config(model), "state_dict": {k: v.cpu() for k, v in tl_model.state_dict().items()},
               "transformer_lens_version": getattr(transformer_lens, "__version__", "unknown")}
    path = Path(path)
    atomic_torch_save(payload, path)
    return {"path": str(path), "cfg": payload["cfg"], "max_abs_logit_diff": difference}
