"""Compact-model options of `ModelConfig` (low rank, tied K/V, shared q/k/v down-projection, no biases,
shared norms, QK-norm, d_head, tiny or no FFN, factorised positions, init_std) and the unique-parameter count."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from mct.config import ModelConfig
from mct.errors import MctError
from mct.model import LowRankProjection, Projection, count_parameters, create_model

V = 19
SEED_MODELS = Path(__file__).resolve().parent / "data" / "seed_models.pt"


def tiny(**overrides):
    fields = dict(vocab_size=V, d_model=8, num_layers=2, num_heads=2, d_ff=12, max_seq_len=24)
    fields.update(overrides)
    torch.manual_seed(0)
    return create_model(fields).eval()


def batch(B=3, T=9, seed=0):
    return torch.randint(2, V, (B, T), generator=torch.Generator().manual_seed(seed))


# AdderBoard-class model: every compact option at once (d=4, one layer, one head, rank 3)
COMPACT = dict(vocab_size=V, d_model=4, num_layers=1, num_heads=1, d_ff=8, max_seq_len=35, use_rope=False,
               absolute_positions="learned", pos_rank=3, rank=3, shared_qkv_down=True, tie_kv=True, bias=False,
               norm_type="rmsnorm", share_norms=True, tie_weights=True)
# by hand: embed 19*4 (unembed tied) + positions 35*3 + 4*3 + one shared norm 4
#          + qkv down 3*4 + up (q, kv) 8*3 + attn out 3*4 + 4*3 + fc_in 3*4 + 8*3 + fc_out 3*8 + 4*3
COMPACT_HAND_COUNT = 76 + (105 + 12) + 4 + (12 + 24) + (12 + 12) + (12 + 24) + (24 + 12)
OPTIONS = {
    "low_rank": dict(rank=3),
    "low_rank_shared_down_tied_kv": dict(rank=3, shared_qkv_down=True, tie_kv=True),
    "tied_kv_dense": dict(tie_kv=True),
    "no_bias_rmsnorm_shared": dict(bias=False, norm_type="rmsnorm", share_norms=True),
    "qk_norm": dict(qk_norm=True),
    "d_head": dict(d_head=6),
    "no_ffn": dict(d_ff=0),
    "tiny_ffn_gated": dict(d_ff=2, ffn_type="swiglu", ffn_rank=1),
    "learned_low_rank_positions": dict(use_rope=False, pos_rank=2),
    "factorised_embedding": dict(embed_rank=3),
    "factorised_embedding_untied": dict(embed_rank=3, tie_weights=False),
    "compact": {k: v for k, v in COMPACT.items() if k not in ("vocab_size", "max_seq_len")},
}


# ---- defaults are today's model ------------------------------------------------------------------

def test_defaults_build_the_seed_model_bit_for_bit():
    """tests/data/seed_models.pt was written by the model before these options existed: same init from the
    same seed, same parameter names, the same logits from the stored weights (to float32 rounding: another
    CPU or a GPU runs other kernels; this one matched bit for bit, an H200 machine's CPU by 1e-8)."""
    for name, case in torch.load(SEED_MODELS, weights_only=True).items():
        torch.manual_seed(0)
        model = create_model(case["fields"]).eval()
        state = model.state_dict()
        assert list(state) == list(case["state"]), name
        assert all(torch.equal(state[key], case["state"][key]) for key in state), name
        model.load_state_dict(case["state"])
        with torch.no_grad():
            torch.testing.assert_close(model(case["input_ids"])[0], case["logits"], rtol=0, atol=1e-6, msg=name)


def test_default_projections_are_dense_with_biases():
    attn, mlp = tiny().blocks[0].attn, tiny().blocks[0].mlp
    for projection in (attn.qkv, attn.out_proj, mlp.fc_in, mlp.fc_out):
        assert isinstance(projection, Projection) and projection.bias is not None
    assert attn.qkv.weight.shape == (3 * 8, 8)


# ---- projections ----------------------------------------------------------------------------------

@pytest.mark.parametrize("groups", [1, 3])
def test_low_rank_projection_applies_its_dense_weight(groups):
    torch.manual_seed(0)
    projection = LowRankProjection(5, 12, rank=2, groups=groups)
    torch.nn.init.normal_(projection.down)
    torch.nn.init.normal_(projection.up)
    torch.nn.init.normal_(projection.bias)
    x = torch.randn(2, 7, 5)
    assert projection.weight.shape == (12, 5)
    assert torch.allclose(projection(x), F.linear(x, projection.weight, projection.bias), atol=1e-5)
    assert projection.down.shape == (groups * 2, 5) and projection.up.shape == (12, 2)
    # each output part has rank <= 2; with one group the whole matrix does
    rank = torch.linalg.matrix_rank(projection.weight).item()
    assert rank == (2 if groups == 1 else min(5, 2 * groups))


def _factorise_into(low: LowRankProjection, dense_weight: torch.Tensor) -> None:
    """Write `dense_weight` [out, in] into `low` exactly (SVD per group; needs rank = full)."""
    down, up = [], []
    for part in dense_weight.unflatten(0, (low.groups, -1)):
        u, s, vh = torch.linalg.svd(part, full_matrices=False)  # part = u diag(s) vh
        up.append(u * s)
        down.append(vh)
    with torch.no_grad():
        low.down.copy_(torch.cat(down))
        low.up.copy_(torch.cat(up))


def test_rank_equal_to_full_spans_the_dense_models_function_class():
    """A model with rank = min(in, out) everywhere holds any dense model's weights exactly: same logits."""
    dense = tiny(d_model=8, d_ff=8, num_heads=2)
    full = tiny(d_model=8, d_ff=8, num_heads=2, rank=8)
    state = dense.state_dict()
    full_state = full.state_dict()
    for key, value in state.items():
        if key in full_state:
            full_state[key].copy_(value)
    for name, module in full.named_modules():
        if isinstance(module, LowRankProjection):
            _factorise_into(module, state[f"{name}.weight"])
            assert torch.allclose(module.bias, state[f"{name}.bias"])
    ids = batch()
    with torch.no_grad():
        assert torch.allclose(full(ids)[0], dense(ids)[0], atol=1e-4)


def test_rank_per_projection_overrides_the_default_rank():
    model = tiny(rank=3, out_rank=2, ffn_rank=0)
    attn, mlp = model.blocks[0].attn, model.blocks[0].mlp
    assert attn.qkv.rank == 3 and attn.out_proj.rank == 2
    assert isinstance(mlp.fc_in, Projection) and isinstance(mlp.fc_out, Projection)
    assert tiny(qkv_rank=2).blocks[0].attn.qkv.rank == 2 and isinstance(tiny(qkv_rank=2).blocks[0].attn.out_proj, Projection)


def test_low_rank_init_gives_the_dense_init_std():
    model = tiny(d_model=256, num_heads=4, d_ff=512, num_layers=1, rank=64, init_std=0.05)
    qkv = model.blocks[0].attn.qkv
    assert qkv.weight.std().item() == pytest.approx(0.05, rel=0.1)
    assert model.embed.weight.std().item() == pytest.approx(0.05, rel=0.1)
    assert model.blocks[0].attn.out_proj.weight.std().item() == pytest.approx(0.05 / 2 ** 0.5, rel=0.1)


# ---- q/k/v sharing --------------------------------------------------------------------------------

def _activations(model, ids, names):
    _, cache = model.run_with_cache(ids, names_filter=names)
    return [cache[name] for name in names]


@pytest.mark.parametrize("options", [dict(tie_kv=True), dict(tie_kv=True, rank=2, shared_qkv_down=True),
                                     dict(tie_kv=True, rank=2)])
def test_tied_kv_gives_equal_keys_and_values_before_rope(options):
    model = tiny(**options)
    k, v, rot_k = _activations(model, batch(), ["blocks.1.attn.hook_k", "blocks.1.attn.hook_v",
                                                 "blocks.1.attn.hook_rot_k"])
    assert k.shape == (3, 9, 2, 4) and torch.equal(k, v)
    assert not torch.allclose(rot_k, v)  # RoPE turns the keys, not the values
    w_q, w_k, w_v = model.blocks[0].attn.qkv_weights()
    assert torch.equal(w_k, w_v) and w_q.shape == (8, 8)
    assert model.blocks[0].attn.qkv.weight.shape == (2 * 8, 8)


def test_untied_qkv_weights_are_the_rows_of_the_fused_projection():
    model = tiny()
    attn = model.blocks[0].attn
    w_q, w_k, w_v = attn.qkv_weights()
    assert torch.equal(torch.cat([w_q, w_k, w_v]), attn.qkv.weight)
    q, = _activations(model, batch(), ["blocks.0.attn.hook_q"])
    ln1, = _activations(model, batch(), ["blocks.0.ln1.hook_normalized"])
    b_q = attn.qkv_biases()[0]
    assert torch.allclose(q.flatten(-2), ln1 @ w_q.T + b_q, atol=1e-6)


def test_shared_down_projection_is_one_bottleneck_for_q_k_and_v():
    shared, separate = tiny(rank=2, shared_qkv_down=True), tiny(rank=2)
    assert shared.blocks[0].attn.qkv.down.shape == (2, 8)
    assert separate.blocks[0].attn.qkv.down.shape == (3 * 2, 8)
    stacked = torch.cat(shared.blocks[0].attn.qkv_weights())  # [3*H*Dh, D], all rows in one 2-dim space
    assert torch.linalg.matrix_rank(stacked).item() == 2
    assert separate.num_parameters() - shared.num_parameters() == 2 * 2 * 8 * 2  # two fewer downs per layer


def test_shared_down_projection_needs_a_rank():
    with pytest.raises(MctError, match="shared_qkv_down"):
        create_model(dict(shared_qkv_down=True))
    with pytest.raises(ValidationError, match="pos_rank"):
        ModelConfig(pos_rank=2)  # positions are RoPE by default: nothing to factorise


# ---- biases, norms, heads, FFN ---------------------------------------------------------------------

def test_no_bias_removes_every_projection_bias():
    model = tiny(bias=False, rank=2)
    biases = [name for name, _ in model.named_parameters() if name.endswith("bias")]
    assert biases and all(name.split(".")[-2].startswith("ln") for name in biases)  # LayerNorm biases only
    assert model.blocks[0].attn.qkv_biases() is None
    assert tiny().num_parameters() - tiny(bias=False).num_parameters() == 2 * (3 * 8 + 8 + 12 + 8)


def test_shared_norms_are_one_tensor_counted_once():
    model = tiny(share_norms=True, qk_norm=True)
    norms = [model.blocks[0].ln1, model.blocks[0].ln2, model.blocks[1].ln1, model.blocks[1].ln2, model.ln_final]
    assert all(n.weight is norms[0].weight and n.bias is norms[0].bias for n in norms)
    qk = [model.blocks[i].attn.q_norm for i in (0, 1)] + [model.blocks[i].attn.k_norm for i in (0, 1)]
    assert all(n.weight is qk[0].weight for n in qk) and qk[0].weight is not norms[0].weight
    unshared = tiny(qk_norm=True)
    assert unshared.num_parameters() - model.num_parameters() == 4 * (2 * 8) + 3 * 4
    assert model.num_parameters(unique=False) == unshared.num_parameters(unique=False)


def test_qk_norm_normalises_each_head_and_makes_attention_scale_free():
    model = tiny(qk_norm=True, use_rope=False, init_std=0.5)  # q, k well above the norm's eps
    q, = _activations(model, batch(), ["blocks.0.attn.q_norm.hook_normalized"])
    assert q.shape == (3, 9, 2, 4)
    assert torch.allclose(q.pow(2).mean(-1), torch.ones(3, 9, 2), atol=1e-3)
    before = model(batch())[0]
    with torch.no_grad():
        model.blocks[0].attn.qkv.weight[:16] *= 7.0  # scale queries and keys
        model.blocks[0].attn.qkv.bias[:16] *= 7.0
    assert torch.allclose(model(batch())[0], before, atol=1e-4)


def test_head_size_is_independent_of_d_model_and_heads():
    model = tiny(d_model=6, num_heads=2, d_head=4)
    q, z = _activations(model, batch(), ["blocks.0.attn.hook_q", "blocks.0.attn.hook_z"])
    assert q.shape == (3, 9, 2, 4) and z.shape == (3, 9, 2, 4)
    assert model.blocks[0].attn.out_proj.weight.shape == (6, 8)
    assert model.config.head_dim == 4 and ModelConfig(d_model=64, num_heads=4).head_dim == 16
    with pytest.raises(ValidationError, match="even head size"):
        ModelConfig(d_model=6, num_heads=2, d_head=3)
    ModelConfig(d_model=6, num_heads=2, d_head=3, use_rope=False)
    ModelConfig(d_model=7, num_heads=2, d_head=4)  # d_head set: d_model need not divide


def test_d_ff_zero_builds_attention_only_blocks():
    model = tiny(d_ff=0)
    assert model.blocks[0].mlp is None and model.blocks[0].ln2 is None
    assert "blocks.0.mlp.hook_pre" not in model.hook_dict and "blocks.0.hook_mlp_out" not in model.hook_dict
    assert "blocks.0.hook_attn_out" in model.hook_dict and "blocks.0.hook_resid_post" in model.hook_dict
    ids = batch()
    resid_post, attn_out, resid_pre = _activations(model, ids, ["blocks.0.hook_resid_post", "blocks.0.hook_attn_out",
                                                                  "blocks.0.hook_resid_pre"])
    assert torch.allclose(resid_post, resid_pre + attn_out)


def test_tiny_ffn_width_has_the_documented_hooks():
    model = tiny(d_ff=2, ffn_type="swiglu")
    pre, post = _activations(model, batch(), ["blocks.0.mlp.hook_pre", "blocks.0.mlp.hook_post"])
    assert pre.shape == post.shape == (3, 9, 2)


def test_low_rank_positions_are_a_table_of_that_rank():
    model = tiny(use_rope=False, pos_rank=2)
    assert model.pos_embed.weight.shape == (24, 8)
    assert torch.linalg.matrix_rank(model.pos_embed.weight).item() == 2
    ids = batch()
    embed, pos = _activations(model, ids, ["hook_embed", "hook_pos_embed"])
    assert torch.allclose(pos[0], model.pos_embed.weight[:9], atol=1e-6)


def test_factorised_token_embedding_is_tied_to_the_output_projection():
    model = tiny(embed_rank=3)
    assert model.embed.weight.shape == (V, 8) and torch.linalg.matrix_rank(model.embed.weight).item() == 3
    assert model.unembed.up is model.embed.codes and model.unembed.down is model.embed.basis
    assert torch.equal(model.unembed.weight, model.embed.weight)
    ids = batch()
    final, = _activations(model, ids, ["ln_final.hook_normalized"])
    assert torch.allclose(model(ids)[0], final @ model.embed.weight.T, atol=1e-6)
    assert tiny().num_parameters() - model.num_parameters() == V * 8 - (V * 3 + 3 * 8)
    untied = tiny(embed_rank=3, tie_weights=False)
    assert untied.num_parameters() - model.num_parameters() == V * 3 + 3 * 8


# ---- every option: the shared guarantees of the model ---------------------------------------------

@pytest.mark.parametrize("options", list(OPTIONS.values()), ids=list(OPTIONS))
def test_every_option_keeps_fast_explicit_cached_and_padded_paths_equal(options):
    model = tiny(**options)
    ids = batch(2, 9)
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, :3] = False  # left padding
    fast, _, _ = model(ids, mask)
    explicit, _, weights = model(ids, mask, return_attention_weights=True)
    assert weights is not None and torch.allclose(fast, explicit, atol=1e-5)
    alone, _, _ = model(ids[1:, 3:])
    assert torch.allclose(fast[1, 3:], alone[0], atol=1e-5)
    out_cache = model.generate(ids, 5, attention_mask=mask, use_cache=True)
    out_plain = model.generate(ids, 5, attention_mask=mask, use_cache=False)
    assert torch.equal(out_cache, out_plain)
    _, loss, _ = tiny(**options).train()(ids, labels=ids)
    loss.backward()


@pytest.mark.parametrize("options", list(OPTIONS.values()), ids=list(OPTIONS))
def test_every_option_survives_a_checkpoint_round_trip(options, tmp_path):
    from mct.checkpoint import inspect_checkpoint, load_checkpoint, save_checkpoint
    from mct.config import Config
    from mct.data.format import DataFormat
    from mct.tokenizer import Tokenizer

    model = tiny(**options)
    with torch.no_grad():  # move every weight off its init (norms at 1, biases at 0) so the test can see it
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    path = save_checkpoint(tmp_path / "m.pt", model, Config(model=model.config, data={"max_seq_len": 24}),
                           Tokenizer(), DataFormat())
    loaded = load_checkpoint(path)
    ids = batch()
    assert torch.equal(loaded.model(ids)[0], model(ids)[0])
    assert loaded.model.config == model.config
    assert inspect_checkpoint(path)["unique_parameters"] == model.num_parameters()
    if options.get("share_norms"):
        assert loaded.model.ln_final.weight is loaded.model.blocks[0].ln1.weight


@pytest.mark.parametrize("options", [{}, *OPTIONS.values()], ids=["default", *OPTIONS])
def test_parameter_count_from_config_matches_the_built_model(options):
    from mct.doctor import count_parameters as doctor_count

    model = tiny(**options)
    assert count_parameters(model.config) == model.num_parameters() == doctor_count(model.config)


# ---- unique parameters: hand count, training, checkpoint, eval --------------------------------------

def test_unique_parameter_count_of_a_tied_compact_model_matches_the_hand_count():
    model = create_model(COMPACT)
    assert model.num_parameters() == COMPACT_HAND_COUNT == 329
    # counting every use: the tied unembedding (19*4) and the two other uses of the shared norm (2*4)
    assert model.num_parameters(unique=False) == COMPACT_HAND_COUNT + 76 + 8


TINY_COMPACT_TOML = """
[model]
d_model = 4
num_layers = 1
num_heads = 1
d_ff = 8
max_seq_len = 35
use_rope = false
pos_rank = 3
rank = 3
shared_qkv_down = true
tie_kv = true
bias = false
norm_type = "rmsnorm"
share_norms = true
[data]
min_digits = 1
max_digits = 10
pad_operands = true
max_seq_len = 35
n_val = 20
n_test = 20
[train]
batch_size = 16
max_steps = 2
eval_every = 2
eval_samples = 10
device = "cpu"
"""


def test_train_summary_checkpoint_and_eval_report_the_unique_parameter_count(tmp_path, capsys):
    from mct.checkpoint import read_checkpoint_file
    from mct.cli import main

    config = tmp_path / "tiny.toml"
    config.write_text(TINY_COMPACT_TOML)

    def run(argv):
        with pytest.raises(SystemExit) as info:
            main(argv)
        captured = capsys.readouterr()
        assert info.value.code == 0, captured.err
        return captured

    out = run(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--json"])
    summary = json.loads(out.out)
    assert summary["unique_parameters"] == COMPACT_HAND_COUNT
    assert read_checkpoint_file(tmp_path / "run" / "last.pt")["unique_parameters"] == COMPACT_HAND_COUNT
    records = tmp_path / "pairs.jsonl"
    records.write_text('{"prompt": "9999999999+1=", "answer": "10000000000"}\n{"prompt": "0+0=", "answer": "0"}\n')
    report = json.loads(run(["eval", str(tmp_path / "run" / "last.pt"), str(records), "--json"]).out)
    assert report["unique_parameters"] == COMPACT_HAND_COUNT
    shown = run(["eval", str(tmp_path / "run" / "last.pt"), str(records)]).err
    assert "unique parameters" in shown and str(COMPACT_HAND_COUNT) in shown
