"""Hooks the TransformerLens way: `HookPoint`, the hook mechanism of a model (`HookedRootModule`) and the
`ActivationCache` that `run_with_cache` returns.

    def zero_head_1(z, hook):                      # z [B, T, H, Dh]; hook.name = "blocks.0.attn.hook_z"
        z = z.clone()                              # edit a copy: autograd needs the original
        z[:, :, 1] = 0.0
        return z                                   # a returned tensor replaces the activation
    logits = model.run_with_hooks(ids, fwd_hooks=[("blocks.0.attn.hook_z", zero_head_1)])
    with model.hooks(fwd_hooks=[(lambda name: name.endswith("hook_pattern"), save)]):
        model(ids)
    logits, cache = model.run_with_cache(ids)      # every activation, by name
    cache["pattern", -1]                           # the last layer's [B, H, T, T]

One mechanism: a hook is a function `fn(activation, hook)` on a named `HookPoint`, kept in that hook
point's list with its context level, so `hooks()` removes exactly what it added. The seed's PyTorch-style
`register_hook(name, module, fn(module, input, output))` / `clear_hooks()`, `return_attention_weights`,
`forward_analysis`, and `mct.analysis` ablation and patching are thin users of it.

`HookedRootModule` assumes the model's forward returns `(logits, loss, ...)` (mct's contract), so
`run_with_hooks` / `run_with_cache` can return the logits, the loss or both (`return_type`).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.modules.module as _torch_hooks

from mct.errors import MctError

__all__ = ["ActivationCache", "HookPoint", "HookedRootModule", "act_name"]

NamesFilter = Union[None, str, Iterable[str], Callable[[str], bool]]
HookFn = Callable[..., Union[torch.Tensor, None]]


# ---------------------------------------------------------------------------------------------
# hook points
# ---------------------------------------------------------------------------------------------

@dataclass
class _Handle:
    """One hook on a hook point: the PyTorch handle, whether `reset_hooks()` spares it, and the `hooks()`
    context level that added it (None outside any context)."""

    handle: torch.utils.hooks.RemovableHandle
    is_permanent: bool = False
    level: int | None = None


class HookPoint(nn.Module):
    """An identity module that names an activation (`name` is its path in the model, e.g.
    `blocks.0.attn.hook_z`). `add_hook(fn)` runs `fn(activation, hook=self)` on every forward pass
    (`dir="bwd"`: on the activation's gradient); a returned tensor replaces the activation.
    `ctx` is a dict a hook may keep state in. Without hooks a HookPoint costs one check."""

    def __init__(self):
        super().__init__()
        self.name: str | None = None
        self.ctx: dict = {}
        self.fwd_hooks: list[_Handle] = []
        self.bwd_hooks: list[_Handle] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # without hooks, skip nn.Module's call machinery entirely: an unused hook point costs one check
        if self._forward_hooks or self._backward_hooks or self._forward_pre_hooks or self._backward_pre_hooks \
                or _torch_hooks._global_forward_hooks or _torch_hooks._global_forward_pre_hooks \
                or _torch_hooks._global_backward_hooks:
            return super().__call__(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def __repr__(self) -> str:
        return f"HookPoint({self.name!r})"

    def has_hooks(self, dir: str = "both") -> bool:
        """Whether any hook (ours or one registered straight with PyTorch) would see this activation
        on the forward pass ("fwd"), its gradient ("bwd"), or either ("both")."""
        forward = dir != "bwd" and bool(self._forward_hooks or self._forward_pre_hooks
                                        or _torch_hooks._global_forward_hooks
                                        or _torch_hooks._global_forward_pre_hooks)
        backward = dir != "fwd" and bool(self._backward_hooks or self._backward_pre_hooks
                                         or _torch_hooks._global_backward_hooks)
        return forward or backward

    def add_hook(self, hook: HookFn, dir: str = "fwd", is_permanent: bool = False, level: int | None = None,
                 prepend: bool = False) -> _Handle:
        """Run `hook(activation, hook=self)` on the forward pass (`dir="fwd"`) or `hook(gradient, hook=self)`
        on the backward pass (`dir="bwd"`); a tensor it returns replaces the activation (gradient)."""
        if dir == "fwd":
            def forward_hook(module, inputs, output):
                return hook(output, hook=self)

            torch_handle = self.register_forward_hook(forward_hook, prepend=prepend)
        elif dir == "bwd":
            def backward_hook(module, grad_input, grad_output):
                result = hook(grad_output[0], hook=self)
                return None if result is None else (result,)

            torch_handle = self.register_full_backward_hook(backward_hook, prepend=prepend)
        else:
            raise MctError(f"hook direction must be 'fwd' or 'bwd', got {dir!r}")
        handle = _Handle(torch_handle, is_permanent, level)
        handles = self.fwd_hooks if dir == "fwd" else self.bwd_hooks
        handles.insert(0, handle) if prepend else handles.append(handle)
        return handle

    def remove_hooks(self, dir: str = "both", including_permanent: bool = False, level: int | None = None) -> None:
        """Remove the hooks of one direction ("fwd", "bwd", "both"): the permanent ones only with
        `including_permanent`, and only those of context `level` when it is given."""
        for name in {"fwd": ("fwd_hooks",), "bwd": ("bwd_hooks",), "both": ("fwd_hooks", "bwd_hooks")}[dir]:
            kept = []
            for handle in getattr(self, name):
                if (including_permanent or not handle.is_permanent) and (level is None or handle.level == level):
                    handle.handle.remove()
                else:
                    kept.append(handle)
            setattr(self, name, kept)

    def clear_context(self) -> None:
        self.ctx = {}

    def layer(self) -> int:
        """The block index in the name (`blocks.3.attn.hook_z` -> 3); ValueError for a hook outside blocks."""
        match = re.match(r"blocks\.(\d+)\.", self.name or "")
        if match is None:
            raise ValueError(f"hook point {self.name!r} is not inside a block")
        return int(match.group(1))


# ---------------------------------------------------------------------------------------------
# short names
# ---------------------------------------------------------------------------------------------

_ATTN_NAMES = ("q", "k", "v", "rot_q", "rot_k", "z", "result", "pattern", "attn_scores")
_MLP_NAMES = ("pre", "pre_linear", "post")
_ALIASES = {"attn": "pattern", "attn_logits": "attn_scores", "scores": "attn_scores", "query": "q", "key": "k",
            "value": "v", "mlp_pre": "pre", "mlp_post": "post"}
_NORM_NAMES = ("scale", "normalized")
# mct's older short names: "ln1" -> the normalised input of attention, "ln_final" -> the final one
_LEGACY = {"ln1": ("normalized", "ln1"), "ln2": ("normalized", "ln2"), "ln_final": ("normalized", None)}


def act_name(name: str, layer: int | None = None, layer_type: str | None = None) -> str:
    """The full hook name from a short one, as TransformerLens's `get_act_name`:

    ("pattern", 0) -> "blocks.0.attn.hook_pattern"; ("resid_post", 1) -> "blocks.1.hook_resid_post";
    ("scale", 0, "ln1") -> "blocks.0.ln1.hook_scale"; "scale" -> "ln_final.hook_scale";
    "embed" -> "hook_embed"; "pre_linear" with a layer -> "blocks.{i}.mlp.hook_pre_linear"."""
    if "." in name:
        return name
    if layer is None:
        match = re.fullmatch(r"([a-z_]+?)(\d+)([a-z]*)", name)
        if match is not None and match.group(1) not in ("ln",):
            name, layer, layer_type = match.group(1), int(match.group(2)), match.group(3) or layer_type
    if name in _LEGACY and layer_type is None:
        name, layer_type = _LEGACY[name]
    name = _ALIASES.get(name, name)
    layer_type = {"a": "attn", "m": "mlp", "b": None, "block": None, "attention": "attn"}.get(layer_type, layer_type)
    if name in _ATTN_NAMES:
        layer_type = "attn"
    elif name in _MLP_NAMES:
        layer_type = "mlp"
    hook = f"{layer_type}.hook_{name}" if layer_type else f"hook_{name}"
    if layer is None:
        return f"ln_final.{hook}" if name in _NORM_NAMES and not layer_type else hook
    return f"blocks.{layer}.{hook}"


def names_filter_fn(names_filter: NamesFilter, known: Iterable[str]) -> Callable[[str], bool]:
    """A predicate on hook names from None (all), a name, a list of names, or a predicate; MctError for a
    name that is not a hook point."""
    if names_filter is None:
        return lambda name: True
    if callable(names_filter):
        return names_filter
    names = {names_filter} if isinstance(names_filter, str) else set(names_filter)
    known = list(known)
    unknown = sorted(names - set(known))
    if unknown:
        raise MctError(f"no hook point named {unknown[0]!r}; examples: {', '.join(known[:6])} "
                       "(model.hook_dict lists them all)")
    return names.__contains__


# ---------------------------------------------------------------------------------------------
# the mechanism
# ---------------------------------------------------------------------------------------------

class HookedRootModule(nn.Module):
    """Hook management for a model built of `HookPoint`s; call `setup_hooks()` at the end of `__init__`.

    `hook_dict` maps every hook name to its HookPoint, in the order the forward pass reaches them.
    """

    def setup_hooks(self) -> None:
        self.hook_dict: dict[str, HookPoint] = {}
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
                self.hook_dict[name] = module
        self.context_level = 0
        self._named_hooks: dict[str, tuple] = {}  # register_hook: name -> (HookPoint, _Handle) or (None, torch handle)

    def hook_points(self) -> list[HookPoint]:
        return list(self.hook_dict.values())

    def find_hook_points(self, name: str | Callable[[str], bool]) -> list[HookPoint]:
        """The hook point `name`, or every one whose name passes the predicate; MctError for an unknown name."""
        if callable(name):
            return [point for point_name, point in self.hook_dict.items() if name(point_name)]
        if name not in self.hook_dict:
            close = [n for n in self.hook_dict if n.endswith(name.split(".")[-1])][:4] or list(self.hook_dict)[:4]
            raise MctError(f"no hook point named {name!r}; e.g. {', '.join(close)} (model.hook_dict lists them all)")
        return [self.hook_dict[name]]

    def add_hook(self, name: str | Callable[[str], bool], hook: HookFn, dir: str = "fwd",
                 is_permanent: bool = False, level: int | None = None, prepend: bool = False) -> None:
        """Add `hook(activation, hook)` to the hook point `name`, or to every hook point whose name passes
        the predicate `name`. It stays until `reset_hooks()` (or, with `is_permanent`, until
        `reset_hooks(including_permanent=True)`)."""
        for point in self.find_hook_points(name):
            point.add_hook(hook, dir=dir, is_permanent=is_permanent, level=level, prepend=prepend)

    def reset_hooks(self, clear_contexts: bool = True, direction: str = "both", including_permanent: bool = False,
                    level: int | None = None) -> None:
        """Remove hooks: all but the permanent ones by default (those of `register_hook` too), or only
        those a `hooks()` context of `level` added."""
        for point in self.hook_dict.values():
            point.remove_hooks(direction, including_permanent=including_permanent, level=level)
            if clear_contexts:
                point.clear_context()
        if level is None and direction in ("both", "fwd"):
            self.clear_hooks()

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple] = (), bwd_hooks: Sequence[tuple] = (), reset_hooks_end: bool = True,
              clear_contexts: bool = False) -> Iterator["HookedRootModule"]:
        """Context manager: `fwd_hooks` / `bwd_hooks` are lists of `(name or predicate, fn(activation, hook))`,
        active inside the block and removed on exit (also after an exception); yields the model."""
        self.context_level += 1
        level = self.context_level
        try:
            for name, hook in fwd_hooks:
                self.add_hook(name, hook, dir="fwd", level=level)
            for name, hook in bwd_hooks:
                self.add_hook(name, hook, dir="bwd", level=level)
            yield self
        finally:
            if reset_hooks_end:
                for point in self.hook_dict.values():
                    point.remove_hooks("both", level=level)
                    if clear_contexts:
                        point.clear_context()
            self.context_level -= 1

    @staticmethod
    def _select_output(output, return_type: str | None):
        logits, loss = output[0], output[1]
        if return_type == "logits":
            return logits
        if return_type == "loss":
            if loss is None:
                raise MctError("return_type='loss' needs labels=... (the loss is computed from them)")
            return loss
        if return_type == "both":
            return logits, loss
        if return_type is None:
            return None
        raise MctError(f"return_type must be 'logits', 'loss', 'both' or None, got {return_type!r}")

    def run_with_hooks(self, *model_args, fwd_hooks: Sequence[tuple] = (), bwd_hooks: Sequence[tuple] = (),
                       reset_hooks_end: bool = True, clear_contexts: bool = False, return_type: str | None = "logits",
                       **model_kwargs):
        """One forward pass (`model(*model_args, **model_kwargs)`) with temporary hooks; returns the logits
        (`return_type="loss"`: the loss, which needs `labels=`; "both": (logits, loss))."""
        with self.hooks(fwd_hooks, bwd_hooks, reset_hooks_end, clear_contexts):
            return self._select_output(self(*model_args, **model_kwargs), return_type)

    def run_with_cache(self, *model_args, names_filter: NamesFilter = None, device: str | torch.device | None = None,
                       remove_batch_dim: bool = False, incl_bwd: bool = False, no_grad: bool = False,
                       reset_hooks_end: bool = True, clear_contexts: bool = False,
                       return_type: str | None = "logits", **model_kwargs):
        """Forward pass that records activations: returns `(output, ActivationCache)`, the output chosen by
        `return_type` as in `run_with_hooks` (default the logits [B, T, V]).

        names_filter: None (every hook point), a name, a list of names, or a predicate on names.
        device: where cached tensors go (default: where they were computed). remove_batch_dim: drop the
        batch axis (batch of one). incl_bwd: also cache gradients (`name + "_grad"`): the forward must
        return a scalar, so pass `labels=...` and `return_type="loss"`; backward is called on it. no_grad:
        run under `torch.no_grad()` (less memory; the default keeps autograd, as TransformerLens does).
        The mode is left alone: call `model.eval()` first to turn dropout off. Cached tensors are detached.
        Caching a layer's attention pattern or scores runs it on the explicit attention path (same logits).
        """
        if incl_bwd and (no_grad or return_type != "loss"):
            raise MctError("incl_bwd differentiates the loss: pass labels=..., return_type='loss' and no_grad=False")
        selected = names_filter_fn(names_filter, self.hook_dict)
        if remove_batch_dim and model_args and getattr(model_args[0], "shape", (1,))[0] != 1:
            raise MctError(f"remove_batch_dim needs a batch of one, got input of shape {tuple(model_args[0].shape)}")
        store: dict[str, torch.Tensor] = {}

        def save(suffix: str):
            def hook(tensor, hook):
                tensor = tensor.detach()
                if device is not None:
                    tensor = tensor.to(device)
                store[hook.name + suffix] = tensor[0] if remove_batch_dim else tensor
            return hook

        names = [name for name in self.hook_dict if selected(name)]
        fwd = [(name, save("")) for name in names]
        bwd = [(name, save("_grad")) for name in names] if incl_bwd else []
        grad_mode = torch.no_grad() if no_grad else contextlib.nullcontext()
        with grad_mode, self.hooks(fwd, bwd, reset_hooks_end, clear_contexts):
            output = self._select_output(self(*model_args, **model_kwargs), return_type)
            if incl_bwd:
                output.backward()
        order = {name: i for i, name in enumerate(self.hook_dict)}
        ordered = dict(sorted(store.items(), key=lambda item: (order[item[0].removesuffix("_grad")],
                                                                item[0].endswith("_grad"))))
        return output, ActivationCache(ordered, self, has_batch_dim=not remove_batch_dim)

    # ---- the seed's API -------------------------------------------------------------------------

    def register_hook(self, name: str, module: nn.Module | str, hook_fn: Callable) -> None:
        """Register the PyTorch-style forward hook `hook_fn(module, input, output)` on `module` (a submodule,
        e.g. `model.blocks[0]`, or a hook name, e.g. "blocks.0.attn.hook_z") under `name`. A returned tensor
        replaces the module's output; a second hook under the same name replaces the first. On a HookPoint
        it is an ordinary hook of the mechanism (so `reset_hooks()` removes it too)."""
        if isinstance(module, str):
            try:
                module = self.get_submodule(module)
            except AttributeError:
                raise MctError(f"the model has no module {module!r}; hook names: "
                               f"{', '.join(list(self.hook_dict)[:6])}, ...") from None
        self._remove_named_hook(name)
        if isinstance(module, HookPoint):
            handle = module.add_hook(lambda activation, hook: hook_fn(hook, (activation,), activation))
            self._named_hooks[name] = (module, handle)
        else:
            self._named_hooks[name] = (None, module.register_forward_hook(hook_fn))

    def _remove_named_hook(self, name: str) -> None:
        point, handle = self._named_hooks.pop(name, (None, None))
        if point is not None:
            handle.handle.remove()
            point.fwd_hooks = [h for h in point.fwd_hooks if h is not handle]
        elif handle is not None:
            handle.remove()

    def clear_hooks(self) -> None:
        """Remove every hook registered with `register_hook`."""
        for name in list(self._named_hooks):
            self._remove_named_hook(name)


# ---------------------------------------------------------------------------------------------
# the cache
# ---------------------------------------------------------------------------------------------

def _apply_slice(tensor: torch.Tensor, index, dim: int) -> torch.Tensor:
    """`index` (None = all, an int (the axis is dropped), a slice, a list/tensor of indices, or a
    (start, stop[, step]) tuple) applied to axis `dim` of `tensor`."""
    if index is None:
        return tensor
    if isinstance(index, tuple):
        index = slice(*index)
    if isinstance(index, (list, torch.Tensor)) and not isinstance(index, slice):
        index = torch.as_tensor(index, device=tensor.device)
    selector = [slice(None)] * tensor.ndim
    selector[dim] = index
    return tensor[tuple(selector)]


class ActivationCache(Mapping):
    """Activations by hook name, from `run_with_cache` (a read-only mapping, in forward order).

    Index by full name (`cache["blocks.0.attn.hook_pattern"]`), short name and layer (`cache["pattern", 0]`,
    `cache["resid_post", -1]`: negative layers count from the end), or (name, layer, layer_type)
    (`cache["scale", 0, "ln1"]`); `cache["embed"]`, `cache["scale"]` (= `ln_final.hook_scale`).
    Residual-stream tools follow TransformerLens: `accumulated_resid`, `decompose_resid`,
    `stack_head_results`, `apply_ln_to_stack`, `logit_attrs`. They need the model in eval mode (no dropout)
    and, for `apply_ln`, the layer-norm scales in the cache (`hook_scale`; the default cache has them).
    """

    def __init__(self, cache_dict: dict[str, torch.Tensor], model, has_batch_dim: bool = True):
        self.cache_dict = dict(cache_dict)
        self.model = model
        self.has_batch_dim = has_batch_dim

    # ---- mapping ----------------------------------------------------------------------------------

    @property
    def n_layers(self) -> int:
        return len(self.model.blocks)

    def _key(self, key) -> str:
        if isinstance(key, str):
            return key if key in self.cache_dict else act_name(key)
        if isinstance(key, tuple) and 2 <= len(key) <= 3:
            name, layer, *layer_type = key
            if layer is not None:
                layer = int(layer)
                if layer < 0:
                    layer += self.n_layers
                if not 0 <= layer < self.n_layers:
                    raise KeyError(f"layer {key[1]} is out of range: the model has {self.n_layers} layers")
            return act_name(name, layer, layer_type[0] if layer_type else None)
        raise KeyError(f"index the cache with a hook name, (name, layer) or (name, layer, layer_type); got {key!r}")

    def __getitem__(self, key) -> torch.Tensor:
        name = self._key(key)
        if name not in self.cache_dict:
            raise KeyError(f"{key!r} ({name}) is not in the cache ({len(self.cache_dict)} activations, e.g. "
                           f"{', '.join(list(self.cache_dict)[:4])})")
        return self.cache_dict[name]

    def __contains__(self, key) -> bool:
        try:
            return self._key(key) in self.cache_dict
        except KeyError:
            return False

    def __iter__(self):
        return iter(self.cache_dict)

    def __len__(self) -> int:
        return len(self.cache_dict)

    def __repr__(self) -> str:
        return f"ActivationCache({len(self.cache_dict)} activations: {', '.join(list(self.cache_dict)[:3])}, ...)"

    def to(self, device: str | torch.device) -> "ActivationCache":
        """Move every activation to `device` (in place); returns the cache."""
        self.cache_dict = {name: value.to(device) for name, value in self.cache_dict.items()}
        return self

    def remove_batch_dim(self) -> "ActivationCache":
        """Drop the batch axis of a batch-of-one cache (in place); returns the cache."""
        if self.has_batch_dim:
            sizes = {value.shape[0] for value in self.cache_dict.values() if value.ndim}
            if sizes - {1}:
                raise MctError(f"remove_batch_dim needs a batch of one; the cache holds batch sizes {sorted(sizes)}")
            self.cache_dict = {name: value[0] for name, value in self.cache_dict.items()}
            self.has_batch_dim = False
        return self

    def apply_slice_to_batch_dim(self, batch_slice) -> "ActivationCache":
        """A new cache holding only the chosen batch rows (an int keeps the row and drops the axis)."""
        if not self.has_batch_dim:
            raise MctError("this cache has no batch axis")
        cache = ActivationCache({n: _apply_slice(v, batch_slice, 0) for n, v in self.cache_dict.items()},
                                self.model, has_batch_dim=not isinstance(batch_slice, int))
        return cache

    # ---- the residual stream ----------------------------------------------------------------------

    def _layer_or_last(self, layer: int | None) -> int:
        if layer is None or layer == -1:
            return self.n_layers
        if not 0 <= layer <= self.n_layers:
            raise MctError(f"layer {layer} is out of range: use 0..{self.n_layers} (or -1 / None for the end)")
        return layer

    def accumulated_resid(self, layer: int | None = None, incl_mid: bool = False, apply_ln: bool = False,
                          pos_slice=None, mlp_input: bool = False, return_labels: bool = False):
        """The residual stream before each layer up to `layer` (None/-1: all of them and the final one, as
        the unembedding reads it): [components, B, T, D] with labels "0_pre", ("0_mid",) ..., "final_post".
        apply_ln: normalise each for the unembedding (logit lens: the final norm's statistics recomputed
        per component at the end, the cached scale of layer `layer`'s input otherwise)."""
        layer = self._layer_or_last(layer)
        parts, labels = [], []
        for index in range(layer + 1):
            if index == self.n_layers:
                parts.append(self["resid_post", self.n_layers - 1])
                labels.append("final_post")
                continue
            parts.append(self["resid_pre", index])
            labels.append(f"{index}_pre")
            if mlp_input and index == layer:
                self._require_mlp(layer, "mlp_input")
            if ((incl_mid and index < layer) or (mlp_input and index == layer)) and self._has_mlp(index):
                parts.append(self["resid_mid", index])
                labels.append(f"{index}_mid")
        stack = torch.stack([_apply_slice(p, pos_slice, -2) for p in parts])
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, mlp_input=mlp_input, pos_slice=pos_slice,
                                           has_batch_dim=self.has_batch_dim, recompute_ln=layer == self.n_layers)
        return (stack, labels) if return_labels else stack

    def decompose_resid(self, layer: int | None = None, mlp_input: bool = False, mode: str = "all",
                        apply_ln: bool = False, pos_slice=None, incl_embeds: bool = True, return_labels: bool = False):
        """The residual stream at the input of `layer` (None/-1: the end) split into what wrote it:
        "embed", "pos_embed" (learned positions), then "{l}_attn_out" and "{l}_mlp_out" for each earlier
        layer (mode "attn" / "mlp": only those). [components, B, T, D]; in eval mode they sum to the
        residual stream. mlp_input: add this layer's attention output (the MLP's input)."""
        if mode not in ("all", "attn", "mlp"):
            raise MctError(f"mode must be 'all', 'attn' or 'mlp', got {mode!r}")
        layer = self._layer_or_last(layer)
        parts, labels = [], []
        if incl_embeds:
            for name, label in (("hook_embed", "embed"), ("hook_pos_embed", "pos_embed")):
                if name in self.cache_dict:
                    parts.append(self.cache_dict[name])
                    labels.append(label)
        for index in range(layer):
            if mode != "mlp":
                parts.append(self["attn_out", index])
                labels.append(f"{index}_attn_out")
            if mode != "attn" and self._has_mlp(index):
                parts.append(self["mlp_out", index])
                labels.append(f"{index}_mlp_out")
        if mlp_input:
            self._require_mlp(layer, "mlp_input")
        if mlp_input and mode != "mlp":
            parts.append(self["attn_out", layer])
            labels.append(f"{layer}_attn_out")
        if not parts:
            raise MctError(f"nothing wrote the residual stream at layer {layer} in mode {mode!r}"
                           + (" (the model is attention-only, d_ff = 0)" if mode == "mlp" else ""))
        stack = torch.stack([_apply_slice(p, pos_slice, -2) for p in parts])
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, mlp_input=mlp_input, pos_slice=pos_slice,
                                           has_batch_dim=self.has_batch_dim)
        return (stack, labels) if return_labels else stack

    def _has_mlp(self, layer: int) -> bool:
        """Whether block `layer` has an MLP (attention-only blocks, d_ff = 0, have no resid_mid or mlp_out)."""
        blocks = None if self.model is None else self.model.blocks
        return blocks is None or layer >= len(blocks) or blocks[layer].mlp is not None

    def _require_mlp(self, layer: int, option: str) -> None:
        if not self._has_mlp(layer):
            raise MctError(f"{option}: layer {layer} has no MLP (the model is attention-only, d_ff = 0)")

    def compute_head_results(self) -> None:
        """Add `blocks.{l}.attn.hook_result` [B, T, H, D] (each head's write to the residual stream, without
        the output bias) from the cached `hook_z` and the model's W_O, where it is not cached already."""
        for index in range(self.n_layers):
            name = f"blocks.{index}.attn.hook_result"
            if name not in self.cache_dict:
                z = self["z", index]  # [..., H, Dh]
                w_o = self.model.blocks[index].attn.W_O.detach().to(z.device, z.dtype)  # [H, Dh, D]
                self.cache_dict[name] = torch.einsum("...hd,hdm->...hm", z, w_o)

    def stack_head_results(self, layer: int = -1, return_labels: bool = False, incl_remainder: bool = False,
                           pos_slice=None, apply_ln: bool = False):
        """Every head's output before `layer` (-1/None: all layers): [layers*heads, B, T, D], labels "L0H0"...
        incl_remainder: one more component, the rest of the residual stream (embeddings, MLPs, biases)."""
        layer = self._layer_or_last(layer)
        self.compute_head_results()
        parts, labels = [], []
        for index in range(layer):
            result = _apply_slice(self["result", index], pos_slice, -3)  # [..., H, D]
            parts.extend(result.movedim(-2, 0))
            labels.extend(f"L{index}H{h}" for h in range(result.shape[-2]))
        if incl_remainder:
            resid = self["resid_post", layer - 1] if layer else self["resid_pre", 0]
            resid = _apply_slice(resid, pos_slice, -2)
            parts.append(resid - (torch.stack(parts).sum(0) if parts else 0))
            labels.append("remainder")
        if parts:
            stack = torch.stack(parts)
        else:
            stack = _apply_slice(self["resid_pre", 0], pos_slice, -2)[None][:0]
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, pos_slice=pos_slice, has_batch_dim=self.has_batch_dim)
        return (stack, labels) if return_labels else stack

    def stack_activation(self, activation_name: str, layer: int = -1, sublayer_type: str | None = None) -> torch.Tensor:
        """The activation `activation_name` of every layer before `layer` (-1: all), stacked on a new axis 0."""
        layer = self._layer_or_last(layer)
        return torch.stack([self[activation_name, index, sublayer_type] if sublayer_type else
                            self[activation_name, index] for index in range(layer)])

    def apply_ln_to_stack(self, residual_stack: torch.Tensor, layer: int | None = None, mlp_input: bool = False,
                          pos_slice=None, batch_slice=None, has_batch_dim: bool = True,
                          recompute_ln: bool = False) -> torch.Tensor:
        """Treat each component of `residual_stack` [components, ..., D] as part of the input of a norm and
        apply what that norm does to it there: centre (LayerNorm), divide by the norm's cached scale
        (`hook_scale`, shared by the whole residual stream) and multiply by the norm's weight; the bias,
        which no component writes, is left out. These are the numbers TransformerLens gives after
        fold_ln, so `logit_attrs` of all the components sums to the logit minus the final norm's bias
        term (`model.ln_final.bias @ model.W_U`).

        layer: the input of block `layer` (ln1, or ln2 with mlp_input), or None/-1 = the unembedding
        (ln_final). pos_slice, batch_slice: what was applied to the stack, applied here to the scale.
        recompute_ln: at the unembedding, run the final norm on each component with its own statistics
        (logit lens: `stack @ model.W_U` are then the logits each point of the stream would give)."""
        layer = self._layer_or_last(layer)
        norm = self.model.ln_final if layer == self.n_layers else getattr(self.model.blocks[layer],
                                                                          "ln2" if mlp_input else "ln1")
        if has_batch_dim and batch_slice is not None:
            residual_stack = _apply_slice(residual_stack, batch_slice, 1)
        if recompute_ln and layer == self.n_layers:
            return norm(residual_stack)
        if norm.norm_type == "layernorm":
            residual_stack = residual_stack - residual_stack.mean(-1, keepdim=True)
        name = "ln_final.hook_scale" if layer == self.n_layers else \
            f"blocks.{layer}.{'ln2' if mlp_input else 'ln1'}.hook_scale"
        if name not in self.cache_dict:
            raise MctError(f"{name} is not in the cache: cache it (names_filter) to apply the norm to a stack")
        scale = _apply_slice(self.cache_dict[name], pos_slice, -2)
        if has_batch_dim and batch_slice is not None:
            scale = _apply_slice(scale, batch_slice, 0)
        return residual_stack / scale * norm.weight.detach().to(residual_stack.dtype)

    def logit_attrs(self, residual_stack: torch.Tensor, tokens, incorrect_tokens=None, pos_slice=None,
                    batch_slice=None, has_batch_dim: bool = True) -> torch.Tensor:
        """Direct logit attribution: what each component of `residual_stack` [components, ..., D] adds to the
        logit of `tokens` (an id, or ids shaped like the stack's middle axes, e.g. [B] after pos_slice=-1),
        or to the logit difference `tokens - incorrect_tokens`, through the final norm (cached scale)."""
        directions = self.model.tokens_to_residual_directions(tokens)
        if incorrect_tokens is not None:
            if torch.as_tensor(tokens).shape != torch.as_tensor(incorrect_tokens).shape:
                raise MctError("tokens and incorrect_tokens must have the same shape")
            directions = directions - self.model.tokens_to_residual_directions(incorrect_tokens)
        scaled = self.apply_ln_to_stack(residual_stack, None, pos_slice=pos_slice, batch_slice=batch_slice,
                                        has_batch_dim=has_batch_dim)
        return (scaled * directions.to(scaled.device, scaled.dtype)).sum(-1)
