"""`CompactTransformer`: a small decoder-only transformer built to be trained fast and taken apart.

Shapes (B = batch, T = sequence, H = heads, Dh = head size, D = d_model, F = d_ff, V = vocab):

    model(input_ids [B, T], attention_mask [B, T] bool | None, labels [B, T] | None,
          return_attention_weights=False, *, position_ids [B, T] | None, cache KVCache | None)
        -> (logits [B, T, V], loss scalar | None, attention_weights list of [B, H, T, T_k] | None)

Design, in brief:
- Pre-norm blocks (`layernorm` or `rmsnorm`), nanoGPT initialisation, optional tied embeddings.
- Compact options (AdderBoard-class sizes): low-rank projections and tables (`LowRankProjection`,
  `LowRankEmbedding`), tied keys/values, one shared q/k/v down-projection, no biases, shared norms,
  QK-norm, a head size of its own, attention-only blocks (d_ff = 0). Every projection exposes its dense
  `weight` [out, in] and `bias`; `num_parameters()` counts tied and shared tensors once.
- Positions: RoPE inside attention (`use_rope`), else learned absolute embeddings or none (NoPE).
  Position ids come from the attention mask (`cumsum - 1`), so a left- or right-padded row gives every
  real token the position it has alone. That is what makes batched generation with left padding exact.
  A caller with its own position scheme passes `position_ids` instead.
- Attention has two paths that compute the same function: `F.scaled_dot_product_attention` (fast) and
  an explicit softmax (inspectable). The explicit one runs when weights are requested, or when a hook sits
  on that layer's `attn.hook_attn_scores` / `attn.hook_pattern` (so `run_with_cache` sees real patterns).
- Every activation worth studying passes through an identity `HookPoint` named like TransformerLens
  (`blocks.0.attn.hook_z`, ...); `mct.hooks` holds the mechanism (`hooks()`, `run_with_hooks`,
  `run_with_cache`, `ActivationCache`). With no hook registered a HookPoint is one cheap check; a hook that
  returns a tensor replaces the activation (ablation, patching). Per-head outputs (`attn.hook_result`) and
  norm scales (`hook_scale`) are computed only when hooked.
- Weight views in TransformerLens layout (`W_Q [H, D, Dh]`, `W_O [H, Dh, D]`, `W_E [V, D]`, `W_U [D, V]`,
  stacked over layers on the model) read each projection through one helper (`dense`).
- One forward path: with `cache` (a `mct.generation.KVCache`) `input_ids` are the tokens after the cached
  ones and attend to those too; `generate`, `generate_next_token` live in `mct.generation`.
- Inputs on another device than the model (say CPU tensors and a model on cuda) are moved to the model's.
"""

from __future__ import annotations

import contextlib
import math
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import ValidationError

from mct import generation
from mct.config import Config, ModelConfig
from mct.errors import MctError
from mct.generation import KVCache, eval_mode, to_device
from mct.hooks import ActivationCache, HookedRootModule, HookPoint

__all__ = ["ActivationCache", "CompactTransformer", "HookPoint", "LowRankProjection", "Projection", "apply_rope",
           "count_parameters", "create_model", "dense", "model_shell"]


# ---------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------

def dense(projection: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight [out, in], bias [out] or None) of a projection: the one place the weight views read a
    projection's effective dense matrix."""
    return projection.weight, projection.bias


def _bias_or_zeros(bias: torch.Tensor | None, size: int, like: torch.Tensor) -> torch.Tensor:
    return bias if bias is not None else like.new_zeros(size)


class Projection(nn.Linear):
    """Dense linear map x [..., in] -> [..., out]: `weight` [out, in], `bias` [out] or None.

    Every projection of the model (`attn.qkv`, `attn.out_proj`, `mlp.fc_in`, `mlp.fc_out`) is a `Projection`
    or a `LowRankProjection`: both expose the effective dense `weight` [out, in] and `bias`, whatever the
    factorisation, so weight views are written once against them."""

    rank = 0

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)


class LowRankProjection(nn.Module):
    """x [..., in] -> [..., out] through a rank-r bottleneck: W = up @ down, so in*r + r*out parameters
    instead of in*out.

    `groups` splits the output into equal parts, each with its own r-wide down-projection (separate q, k, v
    bottlenecks); groups = 1 shares one down-projection among all outputs (a shared q/k/v bottleneck).
    Parameters: down [groups*r, in], up [out, r] (part g reads bottleneck g), bias [out] or None.
    `weight` [out, in] is the effective dense matrix, computed (read-only)."""

    def __init__(self, in_features: int, out_features: int, rank: int, groups: int = 1, bias: bool = True):
        super().__init__()
        assert rank >= 1 and out_features % groups == 0, (rank, out_features, groups)
        self.in_features, self.out_features, self.rank, self.groups = in_features, out_features, rank, groups
        self.down = nn.Parameter(torch.empty(groups * rank, in_features))
        self.up = nn.Parameter(torch.empty(out_features, rank))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @property
    def weight(self) -> torch.Tensor:
        """[out, in]: part g of the output rows is up_g @ down_g."""
        up = self.up.unflatten(0, (self.groups, -1))  # [G, out/G, r]
        down = self.down.unflatten(0, (self.groups, self.rank))  # [G, r, in]
        return (up @ down).flatten(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.linear(x, self.down)  # [..., G*r]
        if self.groups == 1:
            return F.linear(hidden, self.up, self.bias)
        up = self.up.unflatten(0, (self.groups, -1))  # [G, out/G, r]
        y = torch.einsum("...gr,gor->...go", hidden.unflatten(-1, (self.groups, self.rank)), up).flatten(-2)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
                f"groups={self.groups}, bias={self.bias is not None}")


def make_projection(in_features: int, out_features: int, rank: int, bias: bool, groups: int = 1) -> nn.Module:
    """A dense `Projection` (rank 0) or a `LowRankProjection`."""
    if rank:
        return LowRankProjection(in_features, out_features, rank, groups, bias)
    return Projection(in_features, out_features, bias)


class LowRankEmbedding(nn.Module):
    """A table [N, D] stored as codes [N, r] @ basis [r, D] (N*r + r*D parameters): ids [...] -> [..., D].
    `weight` is the dense table. Tied to an output projection, the same two tensors are its `up` and `down`."""

    def __init__(self, num_embeddings: int, embedding_dim: int, rank: int):
        super().__init__()
        self.rank = rank
        self.codes = nn.Parameter(torch.empty(num_embeddings, rank))
        self.basis = nn.Parameter(torch.empty(rank, embedding_dim))

    @property
    def weight(self) -> torch.Tensor:
        return self.codes @ self.basis

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.codes) @ self.basis


class Norm(nn.Module):
    """Pre-norm: LayerNorm (weight and bias) or RMSNorm (weight only). x [..., D] -> [..., D].

    Hook points, as in TransformerLens: hook_scale [..., 1] (sqrt(mean square of the centred (LayerNorm)
    or raw (RMSNorm) input + eps)) and hook_normalized [..., D] (the input centred and divided by the scale,
    before weight and bias). When either is hooked the norm is computed explicitly, else by the fused op.
    """

    def __init__(self, d_model: int, norm_type: str, eps: float = 1e-5):
        super().__init__()
        self.norm_type = norm_type
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model)) if norm_type == "layernorm" else None
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.hook_scale.has_hooks() or self.hook_normalized.has_hooks()):
            if self.norm_type == "layernorm":
                return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        if self.norm_type == "layernorm":
            x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())  # [..., 1]
        x = self.hook_normalized(x / scale) * self.weight
        return x + self.bias if self.bias is not None else x


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[..., Dh] -> [..., Dh]: (x1, x2) -> (-x2, x1) over the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding, rotate-half convention (GPT-NeoX / Llama).

    x:   [B, T, H, Dh] queries or keys (Dh even).
    cos: [B or 1, T, 1, Dh] and sin: same, for the position of each token (`RotaryTables.gather`).
    Returns [B, T, H, Dh]: pair (i, i + Dh/2) rotated by angle position * base^(-2i/Dh).
    """
    assert x.ndim == 4, f"RoPE expects [batch, seq, heads, head_dim], got shape {tuple(x.shape)}"
    assert cos.ndim == 4 and cos.shape == sin.shape, f"RoPE tables must be [B, T, 1, Dh], got {tuple(cos.shape)}"
    assert x.shape[-1] % 2 == 0, f"RoPE needs an even head_dim, got {x.shape[-1]}"
    assert cos.shape[1] == x.shape[1] and cos.shape[-1] == x.shape[-1] and cos.shape[2] == 1, (
        f"RoPE tables {tuple(cos.shape)} do not fit input {tuple(x.shape)}"
    )
    assert cos.shape[0] in (1, x.shape[0]), f"RoPE batch {cos.shape[0]} does not fit input batch {x.shape[0]}"
    return x * cos + rotate_half(x) * sin


def on_build_device(table: torch.Tensor) -> torch.Tensor:
    """A constant table computed on the CPU, moved to the device modules are being built on (the default
    device, which `with torch.device(...)` sets). On the meta device (`model_shell`) torch runs ops such as
    `arange` and `tril` through Python references that import torch._dynamo on first use (about 1 s)."""
    return table.to(torch.empty(0).device)  # the default device (torch.get_default_device needs torch 2.3)


def causal_mask(size: int, device) -> torch.Tensor:
    """[size, size] bool, True where a query may attend a key: itself and the keys before it."""
    return torch.ones(size, size, dtype=torch.bool, device=device).tril()


class RotaryTables(nn.Module):
    """Precomputed cos/sin tables `[max_seq_len, Dh]` (non-persistent buffers: not in checkpoints)."""

    def __init__(self, head_dim: int, max_seq_len: int, base: float):
        super().__init__()
        cpu = torch.device("cpu")
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64, device=cpu) / head_dim))
        angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float64, device=cpu), inv_freq)  # [T_max, Dh/2]
        angles = torch.cat((angles, angles), dim=-1)  # [T_max, Dh]: rotate-half pairs i and i + Dh/2
        self.register_buffer("cos", on_build_device(angles.cos().float()), persistent=False)
        self.register_buffer("sin", on_build_device(angles.sin().float()), persistent=False)

    def gather(self, position_ids: torch.Tensor | None, seq_len: int, dtype: torch.dtype):
        """position_ids [B, T] (or None = 0..T-1) -> (cos, sin), each [B or 1, T, 1, Dh]."""
        if position_ids is None:
            cos, sin = self.cos[:seq_len][None, :, None, :], self.sin[:seq_len][None, :, None, :]
        else:
            cos, sin = self.cos[position_ids][:, :, None, :], self.sin[position_ids][:, :, None, :]
        return cos.to(dtype), sin.to(dtype)


def sdpa_backends(q: torch.Tensor, attn_mask: torch.Tensor | None):
    """The fused attention kernels allowed for this call. On CUDA, with an explicit mask and gradients, the
    cuDNN backend is left out: its backward returns NaN query gradients when the sequence length is 64 mod
    128 and a row's log-sum-exp is very negative (the seed's gpu-small NaN at step 2,286 on an H100 in bf16;
    pytorch/pytorch#196678). Flash, memory-efficient and math kernels compute the same function."""
    if q.is_cuda and attn_mask is not None and torch.is_grad_enabled():
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])
    return contextlib.nullcontext()


class Attention(nn.Module):
    """Multi-head causal self-attention with RoPE, a fast (SDPA) and an explicit path, and hook points.

    Hook points (shapes): hook_q/hook_k/hook_v [B, T, H, Dh] (projections, before QK-norm and RoPE),
    q_norm/k_norm.hook_normalized [B, T, H, Dh] (QK-norm models only), hook_rot_q/hook_rot_k
    [B, T, H, Dh] (after RoPE; RoPE models only), hook_attn_scores [B, H, T, T_k] (scaled, masked with the
    dtype's minimum), hook_pattern [B, H, T, T_k] (softmax; masked entries exactly 0), hook_z [B, T, H, Dh],
    hook_result [B, T, H, D] (each head's output through W_O, without b_O; the layer's output is their sum
    plus b_O). hook_attn_scores and hook_pattern fire on the explicit path only, which a layer takes
    whenever either is hooked; hook_result is computed only when hooked.

    Projections: `qkv` maps D -> q, k, v stacked (3*H*Dh rows; 2*H*Dh with `tie_kv`: q, then the one
    key/value projection), `out_proj` maps H*Dh -> D; dense or low-rank, each with `weight` [out, in] and
    `bias`. `qkv_weights()` / `qkv_biases()` give the dense W_q, W_k, W_v whatever the tying.

    Weight views (TransformerLens layout): W_Q, W_K, W_V [H, D, Dh], W_O [H, Dh, D], b_Q, b_K, b_V [H, Dh],
    b_O [D].
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.head_dim = config.head_dim
        self.d_model = config.d_model
        self.inner_dim = config.num_heads * config.head_dim  # H * Dh
        self.use_rope = config.use_rope
        self.dropout = config.dropout
        self.tie_kv = config.tie_kv
        self.qkv_parts = 2 if config.tie_kv else 3
        self.qkv = make_projection(config.d_model, self.qkv_parts * self.inner_dim, config.projection_rank("qkv"),
                                   config.bias, groups=1 if config.shared_qkv_down else self.qkv_parts)
        self.out_proj = make_projection(self.inner_dim, config.d_model, config.projection_rank("out"), config.bias)
        self.out_proj.residual_projection = True  # init std scaled by 1/sqrt(2 * num_layers)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.hook_q = HookPoint()
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        # QK-norm (as in Qwen3 / OLMo-2): RMSNorm over each head's Dh, weights shared by the heads
        self.q_norm = Norm(config.head_dim, "rmsnorm") if config.qk_norm else None
        self.k_norm = Norm(config.head_dim, "rmsnorm") if config.qk_norm else None
        if config.use_rope:
            self.hook_rot_q = HookPoint()
            self.hook_rot_k = HookPoint()
        self.place_window = config.place_window if config.relative_places else 0
        if self.place_window:
            # one learned score per head and clipped place-id difference, stored flat: a bias, so no weight decay
            # (differences -W-1..W+1, where +-(W+1) = farther, then one for a pair where either token has no
            # place: id 0)
            self.place_bias = nn.Parameter(torch.zeros(config.num_heads * (2 * self.place_window + 4)))
            self.mask_far = config.place_far == "masked"
            self.hook_place_bias = HookPoint()
        self.hook_attn_scores = HookPoint()
        self.hook_pattern = HookPoint()
        self.hook_z = HookPoint()
        self.hook_result = HookPoint()

    # ---- weight views: one helper per projection reads its dense weight ---------------------------

    def _qkv(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight [3, H, Dh, D], bias [3, H, Dh]) of the query, key and value projections."""
        weights, biases = self.qkv_weights(), self.qkv_biases()  # whatever the tying or factorisation
        weight = torch.stack(weights).view(3, self.num_heads, self.head_dim, weights[0].shape[-1])
        bias = torch.stack(biases) if biases is not None else weight.new_zeros(3, self.num_heads * self.head_dim)
        return weight, bias.view(3, self.num_heads, self.head_dim)

    def _out(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight [D, H * Dh], bias [D]) of the output projection."""
        weight, bias = dense(self.out_proj)
        return weight, _bias_or_zeros(bias, weight.shape[0], weight)

    W_Q = property(lambda self: self._qkv()[0][0].transpose(-1, -2), doc="[H, D, Dh]")
    W_K = property(lambda self: self._qkv()[0][1].transpose(-1, -2), doc="[H, D, Dh]")
    W_V = property(lambda self: self._qkv()[0][2].transpose(-1, -2), doc="[H, D, Dh]")
    b_Q = property(lambda self: self._qkv()[1][0], doc="[H, Dh]")
    b_K = property(lambda self: self._qkv()[1][1], doc="[H, Dh]")
    b_V = property(lambda self: self._qkv()[1][2], doc="[H, Dh]")
    W_O = property(lambda self: self._out()[0].T.reshape(self.num_heads, self.head_dim, -1), doc="[H, Dh, D]")
    b_O = property(lambda self: self._out()[1], doc="[D]")

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, rope=None,
                cache: KVCache | None = None, layer: int = 0, keep: int = 0,
                place_diff: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, T, D] -> [B, T, D] ([B, keep, D] with `keep`).

        attn_mask: bool, True = attend, broadcastable to [B, 1, T, T_k] (causal and padding combined), or
        None for a plain causal square. rope: (cos, sin) each [B or 1, T, 1, Dh]. cache: keys/values of
        earlier positions (generation). keep: queries at the last `keep` positions only (0 = all); keys and
        values come from every position. place_diff: [B, T, T_k] long, the key's place id minus the
        query's, clipped to +-(place_window + 1), or place_window + 2 where either has no place (relative
        place codes only; `CompactTransformer.place_differences`): adds that entry's learned bias to each
        head's scores (hook_place_bias [B, H, T, T_k]); with place_far = masked, keys farther than the
        window are not attended.
        """
        B, T, _ = x.shape
        parts = self.qkv(x).view(B, T, self.qkv_parts, self.num_heads, self.head_dim).unbind(2)  # [B, T, H, Dh]
        q, k, v = (parts[0], parts[1], parts[1]) if self.tie_kv else parts
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.use_rope:
            cos, sin = rope
            q = self.hook_rot_q(apply_rope(q, cos, sin))
            k = self.hook_rot_k(apply_rope(k, cos, sin))
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, Dh]
        if cache is not None:
            k, v = cache.update(layer, k, v)  # [B, H, T_k, Dh]
        if keep:
            q = q[:, :, -keep:]  # [B, H, keep, Dh]
            if attn_mask is None:
                attn_mask = causal_mask(T, x.device)
            attn_mask = attn_mask[..., -keep:, :]
        if attn_mask is None and k.shape[2] != T:
            raise ValueError("a mask is required when queries and keys differ in length")
        bias = None
        if self.place_window:
            table = self.place_bias.view(self.num_heads, 2 * self.place_window + 4)
            rows = place_diff[:, -q.shape[2]:]  # the queries kept
            # gather, not `table[:, rows + ...]`: on CUDA the gradient of that indexing sums its duplicate
            # indices one after another (pytorch/pytorch#41162), and here B*T*T_k indices share 2w+4 entries;
            # gather's gradient is a scatter_add, atomic adds on CUDA (pytorch/pytorch#15245: many times faster
            # there); the same values, and on the CPU the same weights bit for bit at the same speed
            index = (rows + self.place_window + 1).flatten()
            bias = table.gather(1, index.expand(table.shape[0], -1)).unflatten(1, rows.shape)  # [H, B, T, T_k]
            bias = self.hook_place_bias(bias.transpose(0, 1))  # [B, H, T, T_k]
            bias = bias.to(q.dtype)
            if attn_mask is None:  # a bias needs an explicit mask on both paths
                attn_mask = causal_mask(T, x.device)
            if self.mask_far:  # keys farther than the window: not attended
                attn_mask = attn_mask & (rows.abs() != self.place_window + 1)[:, None]

        if not (self.hook_pattern.has_hooks() or self.hook_attn_scores.has_hooks()):
            # fast path (fused kernel); a fully masked query row yields zeros (uniform with a place bias)
            # with a bias: one additive mask, the bias and the dtype's minimum where not allowed
            mask = attn_mask if bias is None else bias.masked_fill(~attn_mask, torch.finfo(q.dtype).min)
            with sdpa_backends(q, mask):
                z = F.scaled_dot_product_attention(
                    q, k, v, attn_mask=mask, is_causal=mask is None,
                    dropout_p=self.dropout if self.training else 0.0,
                )
        else:
            # explicit path: the same function, with the pattern visible
            allowed = attn_mask if attn_mask is not None else causal_mask(T, x.device)
            scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))  # [B, H, T, T_k]
            if bias is not None:
                scores = scores + bias
            scores = self.hook_attn_scores(scores.masked_fill(~allowed, torch.finfo(scores.dtype).min))
            # masked keys: exactly 0; a row with no allowed key: all 0 (not NaN, not uniform)
            pattern = self.hook_pattern(F.softmax(scores, dim=-1).masked_fill(~allowed, 0.0))
            z = self.attn_dropout(pattern) @ v
        z = self.hook_z(z.transpose(1, 2))  # [B, T, H, Dh]
        if self.hook_result.has_hooks():
            result = self.hook_result(torch.einsum("bthd,hdm->bthm", z, self.W_O))  # [B, T, H, D]
            return self.resid_dropout(result.sum(2) + self.b_O)
        return self.resid_dropout(self.out_proj(z.reshape(B, z.shape[1], self.inner_dim)))

    def qkv_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Dense (W_q, W_k, W_v), each [H*Dh, D] (hook_q = x @ W_q.T + b_q); W_k is W_v with `tie_kv`."""
        parts = self.qkv.weight.unflatten(0, (self.qkv_parts, self.inner_dim)).unbind(0)
        return (parts[0], parts[1], parts[1]) if self.tie_kv else parts

    def qkv_biases(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(b_q, b_k, b_v), each [H*Dh], or None for a model without biases."""
        if self.qkv.bias is None:
            return None
        parts = self.qkv.bias.unflatten(0, (self.qkv_parts, self.inner_dim)).unbind(0)
        return (parts[0], parts[1], parts[1]) if self.tie_kv else parts


class MLP(nn.Module):
    """Feed-forward: gelu (`fc_in` D->F) or gated geglu/swiglu (`fc_in` D->2F, gate and up halves).

    Hook points, as in TransformerLens: hook_pre [B, T, F] (pre-activation; the gate for gated FFNs),
    hook_pre_linear [B, T, F] (gated FFNs: the up half, which multiplies act(gate)), hook_post [B, T, F]
    (input of fc_out). Weight views: W_in [D, F] (the up half for gated FFNs), W_gate [D, F] (gated only,
    else None), W_out [F, D], b_in, b_gate [F], b_out [D]. `fc_in` and `fc_out` are dense or low-rank
    projections (`ffn_rank`), each with `weight` and `bias`.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ffn_type = config.ffn_type
        gated = config.ffn_type in ("geglu", "swiglu")
        rank = config.projection_rank("ffn")
        self.fc_in = make_projection(config.d_model, (2 if gated else 1) * config.d_ff, rank, config.bias)
        self.fc_out = make_projection(config.d_ff, config.d_model, rank, config.bias)
        self.fc_out.residual_projection = True
        self.dropout = nn.Dropout(config.dropout)
        self.hook_pre = HookPoint()
        if gated:
            self.hook_pre_linear = HookPoint()
        self.hook_post = HookPoint()

    # ---- weight views ---------------------------------------------------------------------------

    def _in(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight [F or 2F, D], bias) of fc_in: for gated FFNs the gate half first, then the up half."""
        weight, bias = dense(self.fc_in)
        return weight, _bias_or_zeros(bias, weight.shape[0], weight)

    @property
    def gated(self) -> bool:
        return self.ffn_type != "gelu"

    W_in = property(lambda self: self._in()[0].chunk(2)[1].T if self.gated else self._in()[0].T, doc="[D, F]")
    b_in = property(lambda self: self._in()[1].chunk(2)[1] if self.gated else self._in()[1], doc="[F]")
    W_gate = property(lambda self: self._in()[0].chunk(2)[0].T if self.gated else None, doc="[D, F] or None")
    b_gate = property(lambda self: self._in()[1].chunk(2)[0] if self.gated else None, doc="[F] or None")
    W_out = property(lambda self: dense(self.fc_out)[0].T, doc="[F, D]")
    b_out = property(lambda self: _bias_or_zeros(dense(self.fc_out)[1], self.fc_out.out_features,
                                                 dense(self.fc_out)[0]), doc="[D]")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, D] -> [B, T, D]."""
        hidden = self.fc_in(x)
        if self.ffn_type == "gelu":
            post = F.gelu(self.hook_pre(hidden))
        else:
            gate, up = hidden.chunk(2, dim=-1)
            gate, up = self.hook_pre(gate), self.hook_pre_linear(up)
            post = (F.gelu(gate) if self.ffn_type == "geglu" else F.silu(gate)) * up
        return self.dropout(self.fc_out(self.hook_post(post)))


class Block(nn.Module):
    """Pre-norm transformer block. Returns the residual stream [B, T, D] (a plain tensor).

    With d_ff = 0 the block is attention-only (like TransformerLens' attn_only models): it has no ln2,
    mlp, hook_resid_mid or hook_mlp_out."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        # assignment order = hook order in `hook_dict` and in caches: the order activations are computed
        self.hook_resid_pre = HookPoint()
        self.ln1 = Norm(config.d_model, config.norm_type)
        self.attn = Attention(config)
        self.hook_attn_out = HookPoint()
        self.ln2 = self.mlp = None
        if config.d_ff:
            self.hook_resid_mid = HookPoint()
            self.ln2 = Norm(config.d_model, config.norm_type)
            self.mlp = MLP(config)
            self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()
        self.layer = 0

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, rope=None,
                cache: KVCache | None = None, keep: int = 0, place_diff: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, T, D] -> [B, T, D]; with `keep`, [B, keep, D]: the last `keep` positions alone (their
        attention still reads every position). The other arguments as in `Attention.forward`."""
        x = self.hook_resid_pre(x)
        attn_out = self.hook_attn_out(self.attn(self.ln1(x), attn_mask, rope, cache, self.layer, keep, place_diff))
        if keep:
            x = x[:, -keep:]
        if self.mlp is None:
            return self.hook_resid_post(x + attn_out)
        x = self.hook_resid_mid(x + attn_out)
        return self.hook_resid_post(x + self.hook_mlp_out(self.mlp(self.ln2(x))))


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------

class CompactTransformer(HookedRootModule):
    """Decoder-only transformer for arithmetic; see the module docstring for shapes and design.

    Submodules: `embed` (token embedding, `[V, D]`), `pos_embed` (learned positions only), `blocks`
    (`model.blocks[i]` returns the residual stream `[B, T, D]`), `ln_final`, `unembed` (D->V, tied to
    `embed.weight` when `tie_weights`). `hook_dict` maps every hook name to its `HookPoint`; the hook
    mechanism (`hooks`, `run_with_hooks`, `run_with_cache`, `add_hook`, `reset_hooks`, `register_hook`)
    comes from `mct.hooks.HookedRootModule`.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        # the sequence index of the first token of the current forward pass: the cached tokens' count while
        # decoding with a KV cache, else 0 (hooks whose effect depends on the position read it)
        self.token_offset = 0
        d = config.d_model
        self.embed = (LowRankEmbedding(config.vocab_size, d, config.embed_rank) if config.embed_rank
                      else nn.Embedding(config.vocab_size, d))
        self.hook_embed = HookPoint()
        self.learned_positions = not config.use_rope and config.absolute_positions == "learned"
        # abacus / coupled: learned embeddings of place-value ids computed from the tokens (data.format.place_ids)
        self.place_positions = config.absolute_positions if config.place_values else None
        self.relative_places = config.relative_places  # place ids as an attention bias, not an embedding
        self.embedded_positions = bool(self.learned_positions or (self.place_positions and not self.relative_places))
        if self.embedded_positions:
            rows, _ = self._position_rows()
            self.pos_embed = LowRankEmbedding(rows, d, config.pos_rank) if config.pos_rank else nn.Embedding(rows, d)
            self.hook_pos_embed = HookPoint()
        self.rotary = RotaryTables(config.head_dim, config.max_seq_len, config.rope_base) if config.use_rope else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        for i, block in enumerate(self.blocks):
            block.layer = i
        self.ln_final = Norm(d, config.norm_type)
        self.unembed = (LowRankProjection(d, config.vocab_size, config.embed_rank, bias=False) if config.embed_rank
                        else nn.Linear(d, config.vocab_size, bias=False))
        self.register_buffer(
            "causal_mask",
            on_build_device(causal_mask(config.max_seq_len, "cpu")),
            persistent=False,
        )
        self.apply(self._init_weights)
        if config.tie_weights:
            if config.embed_rank:  # unembed W [V, D] = codes [V, r] @ basis [r, D]: the embedding's own table
                self.unembed.up, self.unembed.down = self.embed.codes, self.embed.basis
            else:
                self.unembed.weight = self.embed.weight
        if config.share_norms:
            self._share_norms()
        if self.place_positions and config.place_codes == "orthogonal":
            self._fix_orthogonal_place_codes()
        self.setup_hooks()

    def _init_weights(self, module: nn.Module) -> None:
        # nanoGPT: N(0, init_std = 0.02) everywhere, residual projections scaled down by sqrt(2 * num_layers)
        # so the residual stream's variance does not grow with depth
        std = self.config.init_std
        if getattr(module, "residual_projection", False):
            std = std / math.sqrt(2 * self.config.num_layers)
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, (LowRankProjection, LowRankEmbedding)):
            # both factors alike (neither starts near zero), so that the product has entries of std `std`:
            # var(W_ij) = rank * s^2 * s^2 with s = sqrt(std / sqrt(rank))
            factor_std = math.sqrt(std / math.sqrt(module.rank))
            for factor in (module.codes, module.basis) if isinstance(module, LowRankEmbedding) else (module.down, module.up):
                nn.init.normal_(factor, mean=0.0, std=factor_std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def _fix_orthogonal_place_codes(self) -> None:
        """Place ids as fixed orthonormal vectors (norm 1, the size trained place embeddings reach).

        A learned table ties two ids only through training, which never shows the ids of a 40-digit
        number's units and top places together (a 10-digit number spans 12 ids), so their attention
        scores are left to chance; orthogonal codes keep every pair of ids unrelated, and the one map
        the model learns (place i -> place i + 1) holds for ids it never saw together."""
        table = self.pos_embed.weight
        with torch.no_grad():
            nn.init.orthogonal_(table)
        table.requires_grad_(False)

    def _share_norms(self) -> None:
        """One weight (and bias) for every pre-norm and the final norm; one for all QK-norms."""
        norms = [n for b in self.blocks for n in (b.ln1, b.ln2) if n is not None] + [self.ln_final]
        qk_norms = [n for b in self.blocks for n in (b.attn.q_norm, b.attn.k_norm) if n is not None]
        for group in (norms, qk_norms):
            for norm in group[1:]:
                norm.weight = group[0].weight
                if norm.bias is not None:
                    norm.bias = group[0].bias

    def num_parameters(self, trainable_only: bool = False, unique: bool = True) -> int:
        """Number of parameters: unique (tied and shared tensors counted once: the AdderBoard count), or
        with `unique=False` every use of a shared tensor counted (what an untied model of the same shapes
        would have)."""
        params = self.parameters() if unique else (p for _, p in self.named_parameters(remove_duplicate=False))
        return sum(p.numel() for p in params if p.requires_grad or not trainable_only)

    # ---- forward ------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """The device of the model's weights; inputs given elsewhere are moved here."""
        return self.ln_final.weight.device

    def _positions_and_mask(self, attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None,
                            B: int, T: int, cache: KVCache | None):
        """(position_ids [B, T] | None, combined bool mask [B, 1, T, T_k] | None) for T new tokens.

        attention_mask [B, T] covers the new tokens; a cache adds its earlier positions (T_k = cached + T).
        Position ids, unless given, count the real tokens before each one (`cumsum - 1`), cached ones too."""
        start = cache.length if cache is not None else 0
        if cache is not None:
            key_mask = cache.extend_mask(attention_mask, B, T, self.device)  # [B, start + T]
        elif attention_mask is not None:
            key_mask = attention_mask.bool()
        else:
            return position_ids, None  # no padding, nothing cached: plain causal attention
        if position_ids is None:
            position_ids = (key_mask.long().cumsum(-1) - 1).clamp_(min=0)[:, start:]
        allowed = self.causal_mask[start:start + T, :start + T][None, None] & key_mask[:, None, None, :]
        return position_ids, allowed

    @property
    def reads_any_length(self) -> bool:
        """Whether nothing in the model is indexed by token position: no learned position table and no RoPE
        table (relative place codes, Abacus place ids, no positions). Its max_seq_len then only sizes the
        causal mask, and `fit_context` raises it for a longer problem (Abacus place ids stay bounded by
        max_place, which `place_ids` checks)."""
        return not self.learned_positions and self.rotary is None

    def fit_context(self, tokens: int) -> None:
        """Raise model.max_seq_len to `tokens` where the model reads any length (`reads_any_length`), so a
        length-generalising model answers problems longer than its configured context; nothing otherwise
        (the caller's check then names the limit). Inference only: a training run keeps its context."""
        if tokens <= self.config.max_seq_len or not self.reads_any_length:
            return
        self.config.max_seq_len = tokens
        self.causal_mask = causal_mask(tokens, self.device)

    def _position_rows(self) -> tuple[int, str] | None:
        """(rows, what sets them) of the position embedding or rotary table; None without one (NoPE, and
        relative place codes, which clip differences: any id)."""
        if self.embedded_positions and self.place_positions:
            return self.config.max_place + 1, "model.max_place + 1"
        if self.embedded_positions or self.config.use_rope:
            return self.config.max_seq_len, "model.max_seq_len"
        return None

    def _check_position_range(self, position_ids: torch.Tensor) -> None:
        """MctError for a caller's position id the model has no embedding or rotary row for (an index error
        on the CPU, a device-side assert on CUDA, otherwise)."""
        table = self._position_rows()
        if table is None:
            return
        rows, name = table
        if position_ids.numel() and not position_ids.is_meta and not torch.compiler.is_compiling():
            low, high = int(position_ids.min()), int(position_ids.max())
            if low < 0 or high >= rows:
                raise MctError(f"position_ids must lie in [0, {rows}) ({name} = {rows}), got {low}..{high}")

    def place_ids(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Abacus/coupled position ids [B, T] of input_ids [B, T] (with a cache: of the tokens after the
        cached ones, which the cache remembers). MctError when a number has more places than max_place."""
        from mct.data.format import shifted_place_ids

        tokenizer, base = self._tokenizer(), self.config.place_base
        tokens = cache.extend_tokens(input_ids) if cache is not None else input_ids
        ids = shifted_place_ids(tokens, tokenizer, base, coupled=self.place_positions == "coupled")
        ids = ids[:, -input_ids.shape[1]:]
        if self.relative_places:  # ids enter as clipped differences: any place is fine
            return ids
        if not torch.compiler.is_compiling() and ids.numel() and int(ids.max()) > self.config.max_place:
            answer = (torch.cumsum((tokens == tokenizer.token_to_id["#"]).long(), -1) > 0)[:, -input_ids.shape[1]:]
            if bool((ids > self.config.max_place)[~answer].any()):
                raise MctError(f"the prompt has a number longer than this model reads: at most "
                               f"{self.config.max_place - base - 1} digits (model.max_place = {self.config.max_place}, "
                               f"place_base = {base})")
        # an answer that runs past max_place (a model that did not stop) is wrong, not an error
        return ids.clamp(max=self.config.max_place)

    def place_differences(self, places: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Relative place codes: [B, T, T_k] long, each key's place id minus each query's (places [B, T],
        the new tokens'; a cache adds the ids of its earlier tokens), clipped to +-(place_window + 1)
        (+-(place_window + 1) = farther than the window), and place_window + 2 where the key or the query
        has no place (id 0: an operator, padding...). A score thus depends on the difference alone, and a
        key farther than any trained number gets the far bias that training made small (or is masked)."""
        window = self.config.place_window
        keys = cache.extend_places(places) if cache is not None else places
        diff = (keys[:, None, :] - places[:, :, None]).clamp(-window - 1, window + 1)
        no_place = (keys == 0)[:, None, :] | (places == 0)[:, :, None]
        return diff.masked_fill(no_place, window + 2)

    @staticmethod
    def _tokenizer():
        from mct.tokenizer import Tokenizer

        return Tokenizer()  # the default ids (a residue model, the one with more tokens, has no place ids)

    def _embed(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None):
        """input_ids [B, T] -> (residual [B, T, D], rope (cos, sin) or None)."""
        T = input_ids.shape[1]
        x = self.hook_embed(self.embed(input_ids))
        rope = None
        if self.embedded_positions:
            pos = position_ids if position_ids is not None else torch.arange(T, device=input_ids.device)[None]
            x = x + self.hook_pos_embed(self.pos_embed(pos).expand_as(x))  # [B, T, D], as TransformerLens
        elif self.rotary is not None:
            rope = self.rotary.gather(position_ids, T, x.dtype)
        return self.drop(x), rope

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, return_attention_weights: bool = False, *,
                position_ids: torch.Tensor | None = None, cache: KVCache | None = None, logits_to_keep: int = 0):
        """input_ids [B, T] long; attention_mask [B, T] bool (True = real token) or None (no padding);
        labels [B, T] long aligned with input_ids (-100 = no loss; the model shifts: logits[:, t] predict
        labels[:, t + 1]); position_ids [B, T] long in [0, max_seq_len) (place ids: [0, max_place]) or None
        (counted from the mask; place models: from the tokens); in eval mode ids outside are an MctError;
        cache: a `KVCache` for incremental decoding. With a cache, input_ids and attention_mask are the
        tokens after the cached ones, which they also attend to, and the cache grows by T.
        logits_to_keep: K > 0 computes logits for the last K positions only ([B, K, V]); nothing after the
        last block reads the others, so that block computes its queries, MLP and residual there alone
        (training, where the loss reads only the answer's positions, saves that work). Not with labels.

        Tensors on another device than the model are moved to the model's device; the outputs are there.
        Returns (logits [B, T, V], loss (mean cross-entropy over labelled tokens) or None,
        attention_weights: list per layer of [B, H, T, T_k] when requested, else None; T_k = T without
        a cache, cached + T with one).
        """
        device = self.device
        if position_ids is not None and not self.training:  # training's ids come from the renderer: no sync there
            self._check_position_range(position_ids)  # where the caller made them (the CPU, usually): no sync
        input_ids, attention_mask = to_device(input_ids, device), to_device(attention_mask, device)
        labels, position_ids = to_device(labels, device), to_device(position_ids, device)
        B, T = input_ids.shape
        length = T + (cache.length if cache is not None else 0)
        if length > self.config.max_seq_len:
            raise MctError(f"input has {length} tokens but the model's max_seq_len is {self.config.max_seq_len}")
        if logits_to_keep and (labels is not None or not 0 < logits_to_keep <= T):
            raise ValueError(f"logits_to_keep ({logits_to_keep}) must be in [1, {T}] and without labels")
        if position_ids is not None and position_ids.shape != input_ids.shape:
            raise MctError(f"position_ids must have the shape of input_ids {tuple(input_ids.shape)}, "
                           f"got {tuple(position_ids.shape)}")
        if self.place_positions and position_ids is None:
            position_ids = self.place_ids(input_ids, cache)
        if cache is not None or self.token_offset:  # no store in a training step (compiled or captured)
            self.token_offset = cache.length if cache is not None else 0
        place_diff = self.place_differences(position_ids, cache) if self.relative_places else None
        position_ids, allowed = self._positions_and_mask(attention_mask, position_ids, B, T, cache)
        if not return_attention_weights:
            logits, loss = self._forward(input_ids, position_ids, allowed, labels, cache, logits_to_keep, place_diff)
            return logits, loss, None
        weights: list[torch.Tensor] = []  # the patterns, read by a hook like any other activation
        patterns = [f"blocks.{i}.attn.hook_pattern" for i in range(len(self.blocks))]
        with self.hooks(fwd_hooks=[(name, lambda pattern, hook: weights.append(pattern)) for name in patterns]):
            logits, loss = self._forward(input_ids, position_ids, allowed, labels, cache, logits_to_keep, place_diff)
        return logits, loss, weights

    def _forward(self, input_ids, position_ids, allowed, labels, cache, keep: int = 0, place_diff=None) -> tuple:
        """(logits [B, T or keep, V], loss or None) of the prepared inputs (see `forward`)."""
        x, rope = self._embed(input_ids, position_ids)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, allowed, rope, cache, keep if i == last else 0, place_diff)
        if cache is not None:
            cache.advance(input_ids.shape[1])
        logits = self.unembed(self.ln_final(x))
        return logits, (self.loss(logits, labels) if labels is not None else None)

    @staticmethod
    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy: logits [B, T, V] at t against labels [B, T] at t + 1 (-100 ignored).

        A batch with no labelled token gives 0 (not NaN)."""
        # Few kernels, as a forward on a GPU is bound by their launches: the labels shifted by one pad (the
        # last position scores nothing), so the logits need no copy, and nll_loss's own count of labelled
        # tokens (total_weight) divides the sum instead of a count of our own.
        targets = F.pad(labels[:, 1:], (0, 1), value=-100).flatten()
        log_probs = F.log_softmax(logits.flatten(0, 1).float(), dim=-1)
        total, count = torch.ops.aten.nll_loss_forward(log_probs, targets, None, 2, -100)  # 2: reduction sum
        return total / count.clamp(min=1)

    # ---- weight views (TransformerLens layout) ----------------------------------------------------

    W_E = property(lambda self: self.embed.weight, doc="token embedding [V, D]")
    W_U = property(lambda self: self.unembed.weight.T, doc="unembedding [D, V]")
    b_U = property(lambda self: self.unembed.weight.new_zeros(self.config.vocab_size), doc="[V] (no bias: zeros)")
    W_pos = property(lambda self: self.pos_embed.weight if self.learned_positions else None,
                     doc="learned position embedding [max_seq_len, D], None for RoPE or no positions")

    def _stacked(self, part: str, name: str) -> torch.Tensor:
        return torch.stack([getattr(getattr(block, part), name) for block in self.blocks])

    W_Q = property(lambda self: self._stacked("attn", "W_Q"), doc="[L, H, D, Dh]")
    W_K = property(lambda self: self._stacked("attn", "W_K"), doc="[L, H, D, Dh]")
    W_V = property(lambda self: self._stacked("attn", "W_V"), doc="[L, H, D, Dh]")
    W_O = property(lambda self: self._stacked("attn", "W_O"), doc="[L, H, Dh, D]")
    b_Q = property(lambda self: self._stacked("attn", "b_Q"), doc="[L, H, Dh]")
    b_K = property(lambda self: self._stacked("attn", "b_K"), doc="[L, H, Dh]")
    b_V = property(lambda self: self._stacked("attn", "b_V"), doc="[L, H, Dh]")
    b_O = property(lambda self: self._stacked("attn", "b_O"), doc="[L, D]")
    # MLP weights: None for an attention-only model (d_ff = 0), which has no MLP
    W_in = property(lambda self: self._stacked_mlp("W_in"), doc="[L, D, F]")
    b_in = property(lambda self: self._stacked_mlp("b_in"), doc="[L, F]")
    W_gate = property(lambda self: self._stacked_mlp("W_gate", gated=True), doc="[L, D, F], None unless the FFN is gated")
    b_gate = property(lambda self: self._stacked_mlp("b_gate", gated=True), doc="[L, F], None unless the FFN is gated")
    W_out = property(lambda self: self._stacked_mlp("W_out"), doc="[L, F, D]")
    b_out = property(lambda self: self._stacked_mlp("b_out"), doc="[L, D]")

    def _stacked_mlp(self, name: str, gated: bool = False) -> torch.Tensor | None:
        mlp = self.blocks[0].mlp
        if mlp is None or (gated and not mlp.gated):
            return None
        return self._stacked("mlp", name)

    def tokens_to_residual_directions(self, tokens) -> torch.Tensor:
        """The unembedding column of each token id: an id -> [D], ids [...] -> [..., D] (`W_U[:, tokens]`)."""
        tokens = torch.as_tensor(tokens, dtype=torch.long, device=self.device)
        return self.W_U[:, tokens].movedim(0, -1)

    # ---- analysis -------------------------------------------------------------------------------

    def forward_analysis(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """Eval mode + no_grad + attention weights (`return_attention_weights`), restoring the previous mode.

        Returns (logits [B, T, V], attention_weights: list per layer of [B, H, T, T]), on the model's device."""
        with eval_mode(self), torch.no_grad():
            logits, _, weights = self(input_ids, attention_mask, return_attention_weights=True)
        return logits, weights

    # ---- generation (mct.generation) ------------------------------------------------------------

    def generate_next_token(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                            temperature: float = 1.0, top_k: int | None = None, return_logits: bool = False):
        """One decoding step without cache: next_token [B, 1] (and its logits [B, V] with return_logits),
        on the device of input_ids. See `mct.generation.generate_next_token`."""
        return generation.generate_next_token(self, input_ids, attention_mask, temperature, top_k, return_logits)

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, attention_mask: torch.Tensor | None = None,
                 temperature: float = 0.0, top_k: int | None = None, eos_token_id: int | None = None,
                 pad_token_id: int = 0, use_cache: bool = True, return_logits: bool = False):
        """Decode up to max_new_tokens after LEFT-padded prompts input_ids [B, T] (attention_mask [B, T]):
        tokens [B, T + n] on the device of input_ids (and the logits [B, n, V] with return_logits). See
        `mct.generation.generate`."""
        return generation.generate(self, input_ids, max_new_tokens, attention_mask, temperature, top_k,
                                   eos_token_id, pad_token_id, use_cache, return_logits)


_INITIALISERS = ("normal_", "uniform_", "trunc_normal_", "kaiming_normal_", "kaiming_uniform_", "xavier_normal_",
                 "xavier_uniform_", "orthogonal_", "zeros_", "ones_", "constant_")


def model_shell(config: ModelConfig | Config | Mapping) -> CompactTransformer:
    """The model `config` describes on the meta device: every shape and tie, no memory, no values. Its
    initialisers are skipped: they would fill nothing, and torch's meta kernel for `normal_` imports
    torch._dynamo on first use (about 1 s of every `mct` command that counts parameters or loads a
    checkpoint)."""
    from unittest import mock

    with contextlib.ExitStack() as stack:
        for name in _INITIALISERS:
            stack.enter_context(mock.patch.object(nn.init, name, lambda tensor, *args, **kwargs: tensor))
        stack.enter_context(torch.device("meta"))
        return create_model(config)


def count_parameters(config: ModelConfig, unique: bool = True) -> int:
    """Parameters of the model `config` describes (see `CompactTransformer.num_parameters`), counted on
    a `model_shell`: no memory is allocated, so this is cheap for any size."""
    return model_shell(config).num_parameters(unique=unique)


def _describe_errors(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        key = ".".join(str(k) for k in error["loc"]) or "(root)"
        if error["type"] == "extra_forbidden":
            parts.append(f"unknown key '{key}' (allowed: {', '.join(ModelConfig.model_fields)})")
        else:
            parts.append(f"{key}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def create_model(config: ModelConfig | Config | Mapping) -> CompactTransformer:
    """A freshly initialised `CompactTransformer` from a `ModelConfig`, a root `Config` (its `[model]`
    table) or a dict of ModelConfig fields. Invalid fields raise MctError."""
    if isinstance(config, Config):
        config = config.model
    elif isinstance(config, Mapping):
        try:
            config = ModelConfig.model_validate(dict(config))
        except ValidationError as exc:
            raise MctError(f"model config: {_describe_errors(exc)}") from None
    elif not isinstance(config, ModelConfig):
        raise MctError(f"create_model needs a ModelConfig, a Config or a dict, got {type(config).__name__}")
    return CompactTransformer(config.model_copy())
