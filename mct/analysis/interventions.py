"""Interventions: ablate attention heads, patch activations, and measure what a patch recovers.

    with ablate_heads(model, [(0, 3)]):                       # zero layer 0 head 3's output
        logits, _, _ = model(input_ids)
    with patch_activation(model, "blocks.0.hook_resid_pre", clean_resid, positions=[4]):
        logits, _, _ = model(corrupt_ids)
    scores = activation_patching(model, clean_ids, corrupt_ids, target_token_ids=answer_id)
    scores["blocks.0.hook_resid_pre"]                         # [pos]: 1.0 = the clean answer is back
    scores["blocks.1.attn.hook_z"]                            # [pos, head]

Everything is a hook `fn(activation, hook)` of the model's one mechanism (`model.hooks(fwd_hooks=...)`,
see mct.hooks): the context removes exactly the hooks it added when it exits, also on an exception, so
the user's own hooks stay as they are.
The model's mode is left alone: call `model.eval()` first so dropout does not blur the comparison.
Shapes: B = batch, T = sequence, H = heads, Dh = head size, V = vocab.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mct.errors import MctError
from mct.generation import model_device, to_device

__all__ = ["ablate_heads", "activation_patching", "head_ablation_hooks", "patch_activation"]

# [B, T, H, Dh] activations: the head axis is 2. Patterns and scores are [B, H, T, T_k]: head 1, query 2.
_HEAD_AXIS_NAMES = ("attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_rot_q", "attn.hook_rot_k",
                    "attn.hook_z")
_PATTERN_NAMES = ("attn.hook_pattern", "attn.hook_attn_scores")


def _layout(name: str) -> tuple[int, int | None]:
    """(position axis, head axis or None) of the activation at hook `name`."""
    if name.endswith(_PATTERN_NAMES):
        return 2, 1
    if name.endswith(_HEAD_AXIS_NAMES):
        return 1, 2
    return 1, None


def _check_head(model, head: int, where: str) -> None:
    count = model.config.num_heads
    if not 0 <= head < count:
        raise MctError(f"head {head} {where} is out of range: the model has {count} heads (0..{count - 1})")


def ablate_heads(model, heads: Sequence[tuple[int, int]], mode: str = "zero",
                 mean_over: torch.Tensor | None = None):
    """Context manager: while active, the output of each (layer, head) at `blocks.{layer}.attn.hook_z`
    (z [B, T, H, Dh], before `out_proj`) is replaced, at every position and in every batch row, by

    - mode "zero": zeros;
    - mode "mean": that head's mean z [Dh] over a reference batch `mean_over` (input_ids [B', T'],
      unpadded), averaged over its batch rows and positions (computed once, on entry).

    `heads=[]` changes nothing. MctError for a layer or head out of range, an unknown mode, or a
    missing / superfluous `mean_over`.
    """
    if mode not in ("zero", "mean"):
        raise MctError(f"ablation mode must be 'zero' or 'mean', got {mode!r}")
    if (mode == "mean") != (mean_over is not None):
        raise MctError("mode='mean' needs mean_over (reference input_ids [B, T]); mode='zero' takes none")
    means = None
    if mode == "mean" and heads:
        layers = sorted({layer for layer, _ in heads if 0 <= layer < len(model.blocks)})
        _, cache = model.run_with_cache(mean_over, names_filter=[f"blocks.{i}.attn.hook_z" for i in layers],
                                        no_grad=True)
        means = {layer: cache["z", layer].mean(dim=(0, 1)) for layer in layers}  # each [H, Dh]
    return model.hooks(fwd_hooks=head_ablation_hooks(model, heads, means))


def head_ablation_hooks(model, heads: Sequence[tuple[int, int]], means: dict | None = None) -> list[tuple]:
    """The hooks (for `model.hooks` / `run_with_hooks`) that replace the output z of each (layer, head) at
    `blocks.{layer}.attn.hook_z`: with zeros, or with `means[layer][head]`, where `means[layer]` is
    [H, Dh] (one mean for every position) or [T, H, Dh] (a mean per sequence index: an input may be
    shorter, and while decoding with a KV cache each new token gets the mean of its own index,
    `model.token_offset` on). MctError for a layer or head out of range, or an input longer than T."""
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        if not 0 <= layer < len(model.blocks):
            raise MctError(f"layer {layer} is out of range: the model has {len(model.blocks)} layers "
                           f"(0..{len(model.blocks) - 1})")
        _check_head(model, head, f"(layer {layer})")
        by_layer.setdefault(layer, []).append(head)

    def ablation(layer: int, head_list: list[int]):
        def hook(z, hook):  # z: [B, T, H, Dh]
            z = z.clone()
            if means is None:
                z[:, :, head_list] = 0.0
            else:
                mean = means[layer].to(z.device, z.dtype)
                if mean.ndim == 3:
                    start, stop = model.token_offset, model.token_offset + z.shape[1]
                    if stop > len(mean):
                        raise MctError(f"means[{layer}] holds {len(mean)} positions; the input reaches position {stop}")
                    mean = mean[start:stop]
                z[:, :, head_list] = mean[..., head_list, :]
            return z
        return hook

    return [(f"blocks.{layer}.attn.hook_z", ablation(layer, h)) for layer, h in by_layer.items()]


def _selection(shape: torch.Size, position_axis: int, head_axis: int | None, positions, heads,
               device: torch.device) -> torch.Tensor:
    """Bool mask broadcastable to `shape`: True on the chosen positions x heads (None = all of that axis)."""
    mask_shape = [1] * len(shape)
    by_position = torch.zeros(shape[position_axis], dtype=torch.bool, device=device)
    by_position[positions if positions is not None else slice(None)] = True
    mask_shape[position_axis] = shape[position_axis]
    select = by_position.reshape(mask_shape)
    if heads is not None:
        by_head = torch.zeros(shape[head_axis], dtype=torch.bool, device=device)
        by_head[heads] = True
        head_shape = [1] * len(shape)
        head_shape[head_axis] = shape[head_axis]
        select = select & by_head.reshape(head_shape)
    return select


def patch_activation(model, hook_name: str, source_activation: torch.Tensor,
                     positions: slice | Sequence[int] | None = None, heads: Sequence[int] | None = None):
    """Context manager: while active, the activation at `hook_name` is overwritten with
    `source_activation` (same shape as the activation, e.g. from `run_with_cache` on another input).

    positions: the sequence positions to overwrite (the query axis for `attn.hook_pattern` /
    `attn.hook_attn_scores` [B, H, T, T_k]); heads: the heads to overwrite, only for hooks with a head axis
    (`attn.hook_q/k/v/rot_q/rot_k/z` [B, T, H, Dh] and the two above). None = all. MctError for an
    unknown hook name, heads on a hook without a head axis, a head out of range, or a shape mismatch.
    """
    model.find_hook_points(hook_name)  # MctError for an unknown name
    position_axis, head_axis = _layout(hook_name)
    if heads is not None:
        if head_axis is None:
            raise MctError(f"{hook_name!r} has no head axis; patch 'blocks.{{i}}.attn.hook_z' to choose heads")
        heads = [int(h) for h in heads]
        for head in heads:
            _check_head(model, head, f"for {hook_name!r}")
    if positions is not None and not isinstance(positions, slice):
        positions = [int(p) for p in positions]
    source = source_activation.detach()

    def hook(output, hook):
        if output.shape != source.shape:
            raise MctError(f"cannot patch {hook_name!r}: the activation is {tuple(output.shape)} but the "
                           f"source is {tuple(source.shape)}")
        length = output.shape[position_axis]
        if isinstance(positions, list) and any(not -length <= p < length for p in positions):
            raise MctError(f"positions {positions} do not fit {hook_name!r}, which has {length} positions")
        select = _selection(output.shape, position_axis, head_axis, positions, heads, output.device)
        return torch.where(select, source.to(device=output.device, dtype=output.dtype), output)

    return model.hooks(fwd_hooks=[(hook_name, hook)])


def _last_position(attention_mask: torch.Tensor | None, T: int) -> int:
    if attention_mask is None:
        return T - 1
    real = attention_mask[0].bool().nonzero()
    if len(real) == 0:
        raise MctError("attention_mask has no real token")
    return int(real[-1])


@torch.no_grad()
def activation_patching(model, clean_ids: torch.Tensor, corrupt_ids: torch.Tensor,
                        target_token_ids: int | Sequence[int] | torch.Tensor,
                        hook_names: Sequence[str] | None = None,
                        attention_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """How much of the clean answer comes back when one activation of the corrupt run is made clean.

    clean_ids, corrupt_ids: [1, T] (same shape); attention_mask: [1, T] bool shared by both, or None.
    target_token_ids: the token(s) whose logit is measured at the LAST (real) position; several are summed.
    hook_names: default every `blocks.{i}.hook_resid_pre` and `blocks.{i}.attn.hook_z`.

    For each hook, position (and head, for hooks with a head axis), the corrupt input runs with that one
    slice of the clean activation patched in, and the score is

        (patched_logit - corrupt_logit) / (clean_logit - corrupt_logit)

    so 1.0 = the clean logit fully recovered, 0.0 = no effect. Returns {hook name: scores} with scores
    [T] for hooks without heads (resid, mlp_out, ...) and [T, H] (position, head) for hooks with heads;
    float32 on the CPU. All patches of one hook run as one batch. MctError when the inputs differ in
    shape or are not one row, for an unknown hook name, or when clean and corrupt give the same target
    logit (nothing to recover: the score would divide by zero).
    """
    if clean_ids.ndim != 2 or clean_ids.shape[0] != 1 or clean_ids.shape != corrupt_ids.shape:
        raise MctError(f"clean_ids and corrupt_ids must both be [1, T]; got {tuple(clean_ids.shape)} and "
                       f"{tuple(corrupt_ids.shape)}")
    if hook_names is None:
        hook_names = [name for i in range(len(model.blocks))
                      for name in (f"blocks.{i}.hook_resid_pre", f"blocks.{i}.attn.hook_z")]
    hook_names = list(hook_names)
    for name in hook_names:
        model.find_hook_points(name)
    device = model_device(model)  # inputs given on the CPU work with a model anywhere
    clean_ids, corrupt_ids = to_device(clean_ids, device), to_device(corrupt_ids, device)
    attention_mask = to_device(attention_mask, device)
    targets = torch.as_tensor(target_token_ids, dtype=torch.long).reshape(-1).to(device)
    vocab = model.config.vocab_size
    if len(targets) == 0 or int(targets.min()) < 0 or int(targets.max()) >= vocab:
        raise MctError(f"target_token_ids must be token ids in 0..{vocab - 1}, got {targets.tolist()}")
    T = clean_ids.shape[1]
    last = _last_position(attention_mask, T)

    def target_logit(logits: torch.Tensor) -> torch.Tensor:  # logits [N, T, V] -> [N]
        return logits[:, last, targets].float().sum(-1)

    clean_logits, clean_cache = model.run_with_cache(clean_ids, attention_mask, names_filter=hook_names)
    corrupt_logits, _, _ = model(corrupt_ids, attention_mask)
    clean_value, corrupt_value = float(target_logit(clean_logits)), float(target_logit(corrupt_logits))
    if abs(clean_value - corrupt_value) < 1e-6:
        raise MctError(f"clean and corrupt inputs give the same target logit ({clean_value:.6g}): there is "
                       f"nothing to recover; choose inputs whose answers differ")

    # One batch per hook: row 0 = clean, row 1 = corrupt (the baselines, computed alongside the patched rows
    # so batch-size rounding cancels: an activation with no effect scores exactly 0), then row 2 + n = the
    # corrupt input with (position, head) n patched.
    results: dict[str, torch.Tensor] = {}
    for name in hook_names:
        clean = clean_cache[name]  # [1, ...]
        position_axis, head_axis = _layout(name)
        H = clean.shape[head_axis] if head_axis is not None else 1
        N = T * H
        index = [slice(None)] * clean.ndim
        positions = torch.arange(T, device=device).repeat_interleave(H)
        index[0], index[position_axis] = torch.arange(2, N + 2, device=device), positions
        source = [slice(None)] * clean.ndim
        source[0], source[position_axis] = torch.zeros(N, dtype=torch.long, device=device), positions
        if head_axis is not None:
            index[head_axis] = source[head_axis] = torch.arange(H, device=device).repeat(T)

        def hook(output, hook, clean=clean, index=tuple(index), source=tuple(source)):
            patched = output.clone()
            patched[index] = clean.to(output.dtype)[source]
            return patched

        batch_ids = torch.cat([clean_ids, corrupt_ids.expand(N + 1, T)])
        batch_mask = attention_mask.expand(N + 2, T) if attention_mask is not None else None
        logits = model.run_with_hooks(batch_ids, batch_mask, fwd_hooks=[(name, hook)])
        values = target_logit(logits)  # [N + 2]
        scores = (values[2:] - values[1]) / (values[0] - values[1])
        results[name] = scores.reshape(T, H).cpu() if head_axis is not None else scores.cpu()
    return results
