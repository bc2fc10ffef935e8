"""Export to TransformerLens, checked against the real transformer_lens package (the `tl` extra).

Without the package these tests are skipped, unless REQUIRE_TRANSFORMER_LENS=1 (set by .ci/run), which
makes a missing package a failure."""

import itertools
import json
import os
import warnings

import pytest
import torch

from mct.errors import MctError
from mct.export import export_transformer_lens, tl_config, to_hooked_transformer
from mct.model import create_model

if os.environ.get("REQUIRE_TRANSFORMER_LENS") != "1":
    pytest.importorskip("transformer_lens", reason="install the tl extra: pip install -e '.[tl]'")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from transformer_lens import HookedTransformer, HookedTransformerConfig

V = 19
ARCHITECTURES = list(itertools.product(["rope", "learned", "none"], ["layernorm", "rmsnorm"],
                                       ["gelu", "geglu", "swiglu"]))


def random_model(positions="learned", norm_type="layernorm", ffn_type="gelu", seed=0, **overrides):
    """A model with every parameter (biases and norm weights too) moved off its initial value."""
    fields = dict(vocab_size=V, d_model=32, num_layers=2, num_heads=4, d_ff=48, max_seq_len=24, ffn_type=ffn_type,
                  norm_type=norm_type, use_rope=positions == "rope",
                  absolute_positions="none" if positions == "none" else "learned")
    fields.update(overrides)
    torch.manual_seed(seed)
    model = create_model(fields).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    return model


def compared_hooks(mct_cache, tl_cache):
    """Hook names both caches hold with the same shape (scores compared where a key is allowed)."""
    names = [n for n in mct_cache if n in tl_cache.cache_dict and mct_cache[n].shape == tl_cache[n].shape]
    return {n: (mct_cache[n].clamp(min=-1e4), tl_cache[n].clamp(min=-1e4)) if n.endswith("attn_scores")
            else (mct_cache[n], tl_cache[n]) for n in names}


@pytest.mark.parametrize("positions,norm_type,ffn_type", ARCHITECTURES)
def test_hooked_transformer_has_the_same_logits_and_activations(positions, norm_type, ffn_type):
    model = random_model(positions, norm_type, ffn_type)
    if norm_type == "rmsnorm" and ffn_type != "gelu":  # exportable only without fc_in biases (see below)
        with torch.no_grad():
            for block in model.blocks:
                block.mlp.fc_in.bias.zero_()
    ids = torch.randint(0, V, (4, 20), generator=torch.Generator().manual_seed(1))
    tl_model = to_hooked_transformer(model)
    assert isinstance(tl_model, HookedTransformer)
    with torch.no_grad():
        logits, mct_cache = model.run_with_cache(ids)
        tl_logits, tl_cache = tl_model.run_with_cache(ids)
    assert (logits - tl_logits).abs().max() < 1e-4
    pairs = compared_hooks(mct_cache, tl_cache)
    expected = {"hook_embed", "blocks.1.attn.hook_pattern", "blocks.1.attn.hook_z", "blocks.1.mlp.hook_post",
                "blocks.1.ln2.hook_scale", "blocks.1.ln2.hook_normalized", "ln_final.hook_scale",
                "blocks.0.hook_resid_mid", "blocks.1.hook_mlp_out"}
    expected |= {"hook_pos_embed"} if positions == "learned" else set()
    expected |= {"blocks.0.attn.hook_rot_q"} if positions == "rope" else set()
    expected |= {"blocks.0.mlp.hook_pre_linear"} if ffn_type != "gelu" else set()
    assert expected <= set(pairs)
    for name, (ours, theirs) in pairs.items():
        assert (ours - theirs).abs().max() < 1e-4, name


@pytest.mark.parametrize("norm_type", ["layernorm", "rmsnorm"])
def test_an_attention_only_model_exports_as_attn_only(norm_type):
    model = random_model(norm_type=norm_type, ffn_type="swiglu", d_ff=0)
    ids = torch.randint(0, V, (4, 20), generator=torch.Generator().manual_seed(1))
    tl_model = to_hooked_transformer(model)
    assert tl_model.cfg.attn_only and not hasattr(tl_model.blocks[0], "mlp")
    with torch.no_grad():
        assert (model(ids)[0] - tl_model(ids)).abs().max() < 1e-4


def test_gated_layernorm_biases_are_folded_into_the_exported_weights():
    model = random_model(ffn_type="geglu")
    tl_model = to_hooked_transformer(model)
    assert not torch.allclose(tl_model.blocks[0].mlp.W_in, model.blocks[0].mlp.W_in)  # the biases live in here
    assert tl_model.blocks[0].mlp.b_in.abs().max() == 0


def test_gated_rmsnorm_model_with_gate_biases_is_refused_in_one_line():
    with pytest.raises(MctError, match="RMSNorm") as error:
        to_hooked_transformer(random_model(norm_type="rmsnorm", ffn_type="swiglu"))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("scheme", ["abacus", "coupled"])
def test_per_token_position_schemes_are_refused_in_one_line(scheme):
    model = random_model()
    model.config.__dict__["absolute_positions"] = scheme  # what a config with that scheme would hold
    with pytest.raises(MctError, match=f"position scheme '{scheme}'") as error:
        tl_config(model)
    assert "\n" not in str(error.value)


def test_exported_file_rebuilds_the_model_from_plain_data(tmp_path):
    model = random_model("rope", "layernorm", "swiglu")
    ids = torch.randint(0, V, (3, 16), generator=torch.Generator().manual_seed(2))
    report = export_transformer_lens(model, tmp_path / "tl.pt", check_ids=ids)
    assert report["max_abs_logit_diff"] < 1e-4
    saved = torch.load(tmp_path / "tl.pt", weights_only=True)
    assert set(saved) >= {"cfg", "state_dict"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rebuilt = HookedTransformer(HookedTransformerConfig(**saved["cfg"], device="cpu"))
    rebuilt.load_state_dict(saved["state_dict"])
    with torch.no_grad():
        assert (rebuilt(ids) - model(ids)[0]).abs().max() < 1e-4


def test_mct_logit_attributions_equal_transformerlens_after_fold_ln():
    model = random_model("learned", "layernorm", "gelu")
    ids = torch.randint(0, V, (2, 12), generator=torch.Generator().manual_seed(3))
    tl_model = to_hooked_transformer(model)
    tl_model.load_and_process_state_dict(tl_model.state_dict(), fold_ln=True, center_writing_weights=False,
                                         center_unembed=False, fold_value_biases=False)
    tokens = torch.tensor([5, 9])
    with torch.no_grad():
        _, cache = model.run_with_cache(ids)
        _, tl_cache = tl_model.run_with_cache(ids)
        ours = cache.logit_attrs(cache.stack_head_results(pos_slice=-1), tokens, pos_slice=-1)
        theirs = tl_cache.logit_attrs(tl_cache.stack_head_results(pos_slice=-1), tokens, pos_slice=-1)
    assert ours.shape == theirs.shape == (8, 2)
    assert (ours - theirs).abs().max() < 1e-4


def test_mct_export_writes_a_checked_transformer_lens_file(tiny_trained_checkpoint, tmp_path, capsys):
    from mct.cli import main

    out = tmp_path / "demo_tl.pt"
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tiny_trained_checkpoint), "--to", "transformer-lens", str(out), "--json"])
    assert exit_info.value.code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["max_abs_logit_diff"] < 1e-4 and summary["cfg"]["positional_embedding_type"] == "standard"
    saved = torch.load(out, weights_only=True)
    assert saved["cfg"] == summary["cfg"]
