"""mct.hooks: TransformerLens-style hooks (fn(activation, hook)), contexts, run_with_cache, ActivationCache
tools, and the seed's register_hook / return_attention_weights / forward_analysis on the same mechanism."""

import pytest
import torch

from mct.errors import MctError
from mct.hooks import ActivationCache, act_name
from mct.model import create_model

V = 19


def tiny(**overrides):
    fields = dict(vocab_size=V, d_model=32, num_layers=2, num_heads=4, d_ff=48, max_seq_len=32)
    fields.update(overrides)
    torch.manual_seed(0)
    model = create_model(fields).eval()
    with torch.no_grad():  # nonzero biases and norm weights, so the bookkeeping below is really tested
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return model


def ids_batch(B=3, T=10, seed=0):
    return torch.randint(2, V, (B, T), generator=torch.Generator().manual_seed(seed))


def no_hooks_left(model) -> bool:
    return all(not point.has_hooks() and not point.fwd_hooks and not point.bwd_hooks
               for point in model.hook_dict.values())


# ---- hook functions -----------------------------------------------------------------------------

def test_a_transformerlens_hook_gets_the_activation_and_the_named_hook_point():
    model, ids = tiny(), ids_batch()
    seen = []
    model.run_with_hooks(ids, fwd_hooks=[("blocks.1.attn.hook_z", lambda z, hook: seen.append((hook.name, z.shape)))])
    assert seen == [("blocks.1.attn.hook_z", (3, 10, 4, 8))]
    assert no_hooks_left(model)


def test_a_hook_that_returns_a_tensor_replaces_the_activation():
    model, ids = tiny(), ids_batch()
    clean = model(ids)[0]

    def zero_head_2(z, hook):
        z = z.clone()
        z[:, :, 2] = 0.0
        return z

    ablated = model.run_with_hooks(ids, fwd_hooks=[("blocks.0.attn.hook_z", zero_head_2)])
    _, cache = model.run_with_cache(ids, names_filter="blocks.0.attn.hook_z")
    expected = model.run_with_hooks(ids, fwd_hooks=[("blocks.0.attn.hook_z", lambda z, hook: cache["z", 0] *
                                                     torch.tensor([1.0, 1.0, 0.0, 1.0])[:, None])])
    assert not torch.allclose(ablated, clean, atol=1e-4)
    assert torch.allclose(ablated, expected, atol=1e-6)
    assert torch.equal(model(ids)[0], clean)


def test_hooks_context_takes_names_and_predicates_and_removes_only_its_own_hooks():
    model, ids = tiny(), ids_batch()
    outer, inner = [], []
    model.add_hook("hook_embed", lambda x, hook: None)
    with model.hooks(fwd_hooks=[(lambda name: name.endswith("hook_pattern"), lambda p, hook: outer.append(hook.name))]):
        with model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", lambda x, hook: inner.append(hook.name))]):
            model(ids)
        model(ids)
    model(ids)
    assert outer == ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"] * 2
    assert inner == ["blocks.0.hook_resid_post"]
    assert model.hook_dict["hook_embed"].has_hooks() and len(model.hook_dict["hook_embed"].fwd_hooks) == 1
    model.reset_hooks()
    assert no_hooks_left(model)


def test_hooks_are_removed_when_the_context_raises():
    model, ids = tiny(), ids_batch()
    with pytest.raises(ZeroDivisionError):
        with model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", lambda x, hook: 1 / 0)]):
            model(ids)
    assert no_hooks_left(model) and model.context_level == 0


def test_an_unknown_hook_name_is_an_mct_error_naming_close_hooks():
    model = tiny()
    with pytest.raises(MctError, match="no hook point named 'blocks.0.attn.hook_zz'"):
        model.add_hook("blocks.0.attn.hook_zz", lambda x, hook: None)


def test_permanent_hooks_survive_reset_hooks_until_asked():
    model, ids = tiny(), ids_batch()
    calls = []
    model.add_hook("blocks.0.hook_mlp_out", lambda x, hook: calls.append(1), is_permanent=True)
    model.add_hook("blocks.1.hook_mlp_out", lambda x, hook: calls.append(2))
    model.reset_hooks()
    model(ids)
    assert calls == [1]
    model.reset_hooks(including_permanent=True)
    model(ids)
    assert calls == [1] and no_hooks_left(model)


def test_backward_hooks_see_and_can_replace_the_gradient():
    model, ids = tiny(), ids_batch()
    grads = []
    with model.hooks(bwd_hooks=[("blocks.1.hook_resid_mid", lambda g, hook: grads.append(g))]):
        _, loss, _ = model(ids, labels=ids)
        loss.backward()
    assert grads[0].shape == (3, 10, 32) and grads[0].abs().sum() > 0
    model.zero_grad()
    with model.hooks(bwd_hooks=[("blocks.1.hook_resid_mid", lambda g, hook: torch.zeros_like(g))]):
        model(ids, labels=ids)[1].backward()
    assert model.blocks[0].attn.qkv.weight.grad.abs().max() == 0  # nothing flows back past the zeroed gradient
    assert no_hooks_left(model)


# ---- the seed's API on the one mechanism ------------------------------------------------------------

def test_register_hook_on_a_hook_point_is_a_hook_of_the_mechanism():
    model, ids = tiny(), ids_batch()
    seen = []
    model.register_hook("watch", "blocks.0.attn.hook_pattern", lambda module, inputs, output: seen.append(output))
    assert len(model.hook_dict["blocks.0.attn.hook_pattern"].fwd_hooks) == 1
    _, _, weights = model(ids, return_attention_weights=True)
    assert torch.equal(seen[0], weights[0])
    with model.hooks(fwd_hooks=[("hook_embed", lambda x, hook: None)]):
        model.clear_hooks()  # removes register_hook's hooks only
        assert model.hook_dict["hook_embed"].has_hooks()
    assert no_hooks_left(model)
    model.register_hook("block", model.blocks[0], lambda module, inputs, output: seen.append(output))
    model.reset_hooks()  # reset_hooks removes them too, on any module
    count = len(seen)
    model(ids)
    assert len(seen) == count


def test_attention_weights_forward_analysis_and_cache_give_the_same_patterns():
    model, ids = tiny(), ids_batch()
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[0, :3] = False
    logits, _, weights = model(ids, mask, return_attention_weights=True)
    analysis_logits, analysis_weights = model.forward_analysis(ids, mask)
    cached_logits, cache = model.run_with_cache(ids, mask)
    fast = model(ids, mask)[0]
    for layer in range(2):
        assert torch.equal(weights[layer], analysis_weights[layer])
        assert torch.allclose(weights[layer], cache["pattern", layer], atol=1e-6)  # explicit norms: rounding
    assert torch.allclose(logits, fast, atol=1e-5) and torch.allclose(cached_logits, fast, atol=1e-5)
    assert no_hooks_left(model)


# ---- run_with_cache ---------------------------------------------------------------------------------

def test_run_with_cache_keeps_autograd_unless_no_grad_and_detaches_the_cache():
    model, ids = tiny(), ids_batch()
    logits, cache = model.run_with_cache(ids)
    assert logits.requires_grad and not cache["resid_post", 0].requires_grad
    logits, _ = model.run_with_cache(ids, no_grad=True)
    assert not logits.requires_grad


def test_run_with_cache_incl_bwd_caches_the_gradient_of_the_loss():
    model, ids = tiny(), ids_batch()
    loss, cache = model.run_with_cache(ids, labels=ids, return_type="loss", incl_bwd=True,
                                       names_filter=["blocks.1.hook_resid_post"])
    assert set(cache) == {"blocks.1.hook_resid_post", "blocks.1.hook_resid_post_grad"}
    resid = cache["blocks.1.hook_resid_post"].clone().requires_grad_(True)
    expected = torch.autograd.grad(model.loss(model.unembed(model.ln_final(resid)), ids), resid)[0]
    assert torch.allclose(cache["blocks.1.hook_resid_post_grad"], expected, atol=1e-6)
    assert loss.item() == pytest.approx(model(ids, labels=ids)[1].item(), abs=1e-6)
    with pytest.raises(MctError, match="incl_bwd"):
        model.run_with_cache(ids, incl_bwd=True)


def test_run_with_cache_device_and_remove_batch_dim():
    model, ids = tiny(), ids_batch(B=1)
    _, cache = model.run_with_cache(ids, device="cpu", remove_batch_dim=True)
    assert cache["resid_pre", 0].shape == (10, 32) and not cache.has_batch_dim
    _, batched = model.run_with_cache(ids)
    assert torch.equal(batched.remove_batch_dim()["pattern", 1], cache["pattern", 1])
    with pytest.raises(MctError, match="batch of one"):
        model.run_with_cache(ids_batch(B=2), remove_batch_dim=True)


# ---- the cache --------------------------------------------------------------------------------------

def test_cache_takes_full_names_short_names_negative_layers_and_layer_types():
    model, ids = tiny(), ids_batch()
    _, cache = model.run_with_cache(ids)
    assert isinstance(cache, ActivationCache)
    assert torch.equal(cache["resid_post", -1], cache["blocks.1.hook_resid_post"])
    assert torch.equal(cache["pattern", -2], cache["blocks.0.attn.hook_pattern"])
    assert torch.equal(cache["scale", 0, "ln1"], cache["blocks.0.ln1.hook_scale"])
    assert torch.equal(cache["scale"], cache["ln_final.hook_scale"])
    assert torch.equal(cache["resid_pre1"], cache["blocks.1.hook_resid_pre"])
    assert ("pattern", -1) in cache and ("pattern", 2) not in cache
    with pytest.raises(KeyError):
        cache["pattern", 2]
    assert act_name("pre_linear", 0) == "blocks.0.mlp.hook_pre_linear"
    assert act_name("k", 1) == "blocks.1.attn.hook_k" and act_name("embed") == "hook_embed"
    moved = cache.to("cpu")
    assert moved is cache and cache["embed"].device.type == "cpu"


@pytest.mark.parametrize("positions", [dict(use_rope=False), dict(use_rope=True)])
def test_decompose_resid_and_accumulated_resid_rebuild_the_residual_stream(positions):
    model, ids = tiny(**positions), ids_batch()
    logits, cache = model.run_with_cache(ids)
    parts, labels = cache.decompose_resid(return_labels=True)
    assert labels[:1] == ["embed"] and labels[-2:] == ["1_attn_out", "1_mlp_out"]
    assert ("pos_embed" in labels) == (not positions["use_rope"])
    assert torch.allclose(parts.sum(0), cache["resid_post", -1], atol=1e-5)
    mid = cache.decompose_resid(layer=1, mlp_input=True)
    assert torch.allclose(mid.sum(0), cache["resid_mid", 1], atol=1e-5)
    stream, labels = cache.accumulated_resid(incl_mid=True, return_labels=True)
    assert labels == ["0_pre", "0_mid", "1_pre", "1_mid", "final_post"]
    lens = cache.accumulated_resid(apply_ln=True)  # logit lens: the final point is the model's own logits
    assert torch.allclose(lens[-1] @ model.W_U, logits, atol=1e-4)


def test_an_attention_only_model_decomposes_its_residual_stream_without_mlps():
    model, ids = tiny(d_ff=0), ids_batch()
    _, cache = model.run_with_cache(ids)
    parts, labels = cache.decompose_resid(return_labels=True)
    assert labels[-2:] == ["0_attn_out", "1_attn_out"] and not any("mlp" in label for label in labels)
    assert torch.allclose(parts.sum(0), cache["resid_post", -1], atol=1e-5)
    _, labels = cache.accumulated_resid(incl_mid=True, return_labels=True)
    assert labels == ["0_pre", "1_pre", "final_post"]
    assert model.W_in is None and model.W_out is None and model.b_in is None and model.W_gate is None
    with pytest.raises(MctError, match="attention-only"):
        cache.decompose_resid(mode="mlp", incl_embeds=False)
    with pytest.raises(MctError, match="layer 1 has no MLP"):
        cache.decompose_resid(layer=1, mlp_input=True)


def test_head_results_sum_to_the_attention_output():
    model, ids = tiny(), ids_batch()
    _, cache = model.run_with_cache(ids)
    direct = cache["result", 1]  # computed by the hooked forward pass itself
    del cache.cache_dict["blocks.1.attn.hook_result"]
    cache.compute_head_results()  # and again from z and W_O
    assert torch.allclose(cache["result", 1], direct, atol=1e-5)
    assert torch.allclose(direct.sum(2) + model.blocks[1].attn.b_O, cache["attn_out", 1], atol=1e-5)
    heads, labels = cache.stack_head_results(return_labels=True, incl_remainder=True, pos_slice=-1)
    assert labels[:2] == ["L0H0", "L0H1"] and labels[-1] == "remainder" and heads.shape == (9, 3, 32)
    assert torch.allclose(heads.sum(0), cache["resid_post", -1][:, -1], atol=1e-5)


@pytest.mark.parametrize("norm_type", ["layernorm", "rmsnorm"])
def test_logit_attributions_of_all_components_sum_to_the_logit(norm_type):
    model, ids = tiny(norm_type=norm_type), ids_batch()
    logits, cache = model.run_with_cache(ids)
    parts = cache.decompose_resid(pos_slice=-1)  # [components, B, D] at the last position
    tokens = torch.tensor([3, 5, 7])
    attributions = cache.logit_attrs(parts, tokens, pos_slice=-1)  # [components, B]
    bias = model.ln_final.bias @ model.W_U[:, tokens] if norm_type == "layernorm" else 0.0
    assert torch.allclose(attributions.sum(0) + bias, logits[torch.arange(3), -1, tokens], atol=1e-4)
    difference = cache.logit_attrs(parts, tokens, incorrect_tokens=torch.tensor([4, 4, 4]), pos_slice=-1)
    expected = logits[torch.arange(3), -1, tokens] - logits[:, -1, 4]
    bias_difference = (model.ln_final.bias @ (model.W_U[:, tokens] - model.W_U[:, [4]])
                       if norm_type == "layernorm" else 0.0)
    assert torch.allclose(difference.sum(0) + bias_difference, expected, atol=1e-4)


def test_norm_hooks_follow_transformerlens():
    model, ids = tiny(), ids_batch()
    _, cache = model.run_with_cache(ids)
    x = cache["resid_pre", 1]
    centred = x - x.mean(-1, keepdim=True)
    scale = (centred.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt()
    assert torch.allclose(cache["scale", 1, "ln1"], scale, atol=1e-6)
    assert torch.allclose(cache["normalized", 1, "ln1"], centred / scale, atol=1e-5)


# ---- weight views -----------------------------------------------------------------------------------

@pytest.mark.parametrize("ffn_type", ["gelu", "swiglu"])
def test_weight_views_reproduce_the_activations(ffn_type):
    model, ids = tiny(ffn_type=ffn_type, use_rope=False), ids_batch()
    _, cache = model.run_with_cache(ids)
    attn, mlp = model.blocks[0].attn, model.blocks[0].mlp
    ln1 = cache["normalized", 0, "ln1"] * model.blocks[0].ln1.weight + model.blocks[0].ln1.bias
    assert model.W_Q.shape == (2, 4, 32, 8) and model.W_O.shape == (2, 4, 8, 32) and model.b_Q.shape == (2, 4, 8)
    for name in ("q", "k", "v"):
        weight, bias = getattr(attn, f"W_{name.upper()}"), getattr(attn, f"b_{name.upper()}")
        assert torch.allclose(torch.einsum("btm,hmd->bthd", ln1, weight) + bias, cache[name, 0], atol=1e-5)
    out = torch.einsum("bthd,hdm->btm", cache["z", 0], attn.W_O) + attn.b_O
    assert torch.allclose(out, cache["attn_out", 0], atol=1e-5)
    ln2 = cache["normalized", 0, "ln2"] * model.blocks[0].ln2.weight + model.blocks[0].ln2.bias
    if ffn_type == "gelu":
        assert model.W_gate is None and mlp.W_in.shape == (32, 48)
        assert torch.allclose(ln2 @ mlp.W_in + mlp.b_in, cache["pre", 0], atol=1e-5)
    else:
        assert torch.allclose(ln2 @ mlp.W_gate + mlp.b_gate, cache["pre", 0], atol=1e-5)
        assert torch.allclose(ln2 @ mlp.W_in + mlp.b_in, cache["pre_linear", 0], atol=1e-5)
        assert torch.allclose(torch.nn.functional.silu(cache["pre", 0]) * cache["pre_linear", 0], cache["post", 0],
                              atol=1e-5)
    assert torch.allclose(cache["post", 0] @ mlp.W_out + mlp.b_out, cache["mlp_out", 0], atol=1e-5)
    assert torch.equal(model.W_E, model.embed.weight) and model.W_U.shape == (32, V)
    assert torch.allclose(cache["pos_embed"][0], model.W_pos[:10])
    assert model.W_in.shape == (2, 32, 48) and model.W_out.shape == (2, 48, 32)
