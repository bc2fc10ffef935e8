"""Head ablation, activation patching and the patching sweep, on small random models (eval mode)."""

import contextlib

import pytest
import torch

from mct.analysis import ablate_heads, activation_patching, patch_activation
from mct.config import ModelConfig
from mct.errors import MctError
from mct.model import create_model

VOCAB, T, HEADS = 20, 7, 4


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = create_model(ModelConfig(vocab_size=VOCAB, d_model=32, num_layers=2, num_heads=HEADS, d_ff=64,
                                     max_seq_len=32))
    return model.eval()


@pytest.fixture(scope="module")
def pair():
    """clean and corrupt ids [1, T] that differ at position 3 only."""
    torch.manual_seed(1)
    clean = torch.randint(0, VOCAB, (1, T))
    corrupt = clean.clone()
    corrupt[0, 3] = (clean[0, 3] + 5) % VOCAB
    return clean, corrupt


def logits_of(model, ids):
    with torch.no_grad():
        return model(ids)[0]


def every_head(model):
    return [(layer, head) for layer in range(len(model.blocks)) for head in range(HEADS)]


def test_zero_ablating_every_head_changes_logits_and_ablating_none_changes_nothing(model, pair):
    ids = pair[0]
    original = logits_of(model, ids)
    with ablate_heads(model, every_head(model)):
        ablated = logits_of(model, ids)
    with ablate_heads(model, []):
        untouched = logits_of(model, ids)
    assert (ablated - original).abs().max() > 1e-3
    assert torch.equal(untouched, original)


def test_zero_ablation_zeroes_exactly_the_chosen_heads(model, pair):
    with ablate_heads(model, [(1, 2)]):
        _, cache = model.run_with_cache(pair[0], names_filter=["blocks.0.attn.hook_z", "blocks.1.attn.hook_z"])
    z1 = cache["z", 1]  # [B, T, H, Dh]
    assert z1[:, :, 2].abs().max() == 0
    assert z1[:, :, [0, 1, 3]].abs().min(dim=-1).values.max() > 0 and cache["z", 0].abs().max() > 0


def test_hooks_are_removed_on_exit_even_after_an_exception(model, pair):
    ids = pair[0]
    original = logits_of(model, ids)
    with ablate_heads(model, every_head(model)):
        pass
    assert torch.equal(logits_of(model, ids), original)
    with pytest.raises(RuntimeError, match="boom"), ablate_heads(model, every_head(model)):
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"), patch_activation(model, "blocks.0.hook_resid_pre",
                                                                     torch.zeros(1, T, 32)):
        raise RuntimeError("boom")
    assert torch.equal(logits_of(model, ids), original)
    assert all(not point._forward_hooks for point in model.hook_dict.values())


def test_the_models_own_hooks_survive_an_intervention(model, pair):
    ids = pair[0]
    seen = []
    model.register_hook("watch", "blocks.1.attn.hook_z", lambda module, inputs, z: seen.append(z.shape))
    try:
        with ablate_heads(model, [(1, 0)]):
            logits_of(model, ids)
        logits_of(model, ids)
        assert seen == [torch.Size([1, T, HEADS, 8])] * 2
    finally:
        model.clear_hooks()


def test_mean_ablation_puts_the_reference_mean_at_every_position(model, pair):
    reference = torch.randint(0, VOCAB, (3, 5), generator=torch.Generator().manual_seed(2))
    _, ref_cache = model.run_with_cache(reference, names_filter="blocks.0.attn.hook_z")
    mean = ref_cache["z", 0].mean(dim=(0, 1))  # [H, Dh]
    with ablate_heads(model, [(0, 1)], mode="mean", mean_over=reference):
        _, cache = model.run_with_cache(pair[0], names_filter="blocks.0.attn.hook_z")
    z = cache["z", 0]
    assert torch.equal(z[0, :, 1], mean[1].expand(T, -1))
    _, plain = model.run_with_cache(pair[0], names_filter="blocks.0.attn.hook_z")
    assert torch.equal(z[:, :, [0, 2, 3]], plain["z", 0][:, :, [0, 2, 3]])


def test_per_position_means_follow_the_token_index_while_decoding_with_a_cache(model):
    # each new token of a cached decode is at index cache.length, not 0: the same hooks must give the
    # logits of decoding without a cache (which reruns the whole sequence)
    from mct.analysis.interventions import head_ablation_hooks
    reference = torch.randint(0, VOCAB, (6, 12), generator=torch.Generator().manual_seed(3))
    _, cache = model.run_with_cache(reference, names_filter="blocks.0.attn.hook_z")
    means = {0: cache["z", 0].mean(0) * 20}  # [T, H, Dh], scaled so a misplaced mean shows
    prompts = reference[:2, :5]
    with model.hooks(fwd_hooks=head_ablation_hooks(model, [(0, 1)], means)):
        _, cached = model.generate(prompts, 7, return_logits=True)
        _, uncached = model.generate(prompts, 7, use_cache=False, return_logits=True)
        with pytest.raises(MctError, match="holds 12 positions"):
            model(torch.zeros(1, 13, dtype=torch.long))
    torch.testing.assert_close(cached, uncached, rtol=0, atol=1e-4)
    model(prompts)  # a forward pass without a cache starts at index 0 again
    assert model.token_offset == 0


def test_mean_ablation_over_the_same_one_token_input_changes_nothing(model):
    # mean over positions averages different activations, so only a one-position input is its own mean
    ids = torch.tensor([[7]])
    original = logits_of(model, ids)
    with ablate_heads(model, every_head(model), mode="mean", mean_over=ids.repeat(4, 1)):
        ablated = logits_of(model, ids)
    torch.testing.assert_close(ablated, original, rtol=0, atol=1e-6)


def test_patching_every_position_of_resid_pre_0_reproduces_the_clean_logits(model, pair):
    clean, corrupt = pair
    clean_logits, cache = model.run_with_cache(clean, names_filter="blocks.0.hook_resid_pre")
    with patch_activation(model, "blocks.0.hook_resid_pre", cache["resid_pre", 0]):
        patched = logits_of(model, corrupt)
    assert torch.equal(patched, clean_logits)
    assert not torch.equal(logits_of(model, corrupt), clean_logits)


def test_patching_chosen_positions_and_heads_only(model, pair):
    clean, corrupt = pair
    _, clean_cache = model.run_with_cache(clean, names_filter="blocks.1.attn.hook_z")
    _, corrupt_cache = model.run_with_cache(corrupt, names_filter="blocks.1.attn.hook_z")
    source = clean_cache["z", 1]
    with patch_activation(model, "blocks.1.attn.hook_z", source, positions=[4, 6], heads=[0, 2]):
        _, cache = model.run_with_cache(corrupt, names_filter="blocks.1.attn.hook_z")
    z, expected = cache["z", 1], corrupt_cache["z", 1].clone()
    for position in (4, 6):
        for head in (0, 2):
            expected[0, position, head] = source[0, position, head]
    assert torch.equal(z, expected)
    with patch_activation(model, "blocks.1.attn.hook_z", source, positions=slice(5, None)):
        _, cache = model.run_with_cache(corrupt, names_filter="blocks.1.attn.hook_z")
    assert torch.equal(cache["z", 1][:, 5:], source[:, 5:])
    assert torch.equal(cache["z", 1][:, :5], corrupt_cache["z", 1][:, :5])


def test_activation_patching_scores_by_position_and_head(model, pair):
    clean, corrupt = pair
    target = int(logits_of(model, clean)[0, -1].argmax())
    scores = activation_patching(model, clean, corrupt, target)
    assert list(scores) == ["blocks.0.hook_resid_pre", "blocks.0.attn.hook_z",
                            "blocks.1.hook_resid_pre", "blocks.1.attn.hook_z"]
    assert scores["blocks.0.hook_resid_pre"].shape == (T,)
    assert scores["blocks.1.attn.hook_z"].shape == (T, HEADS)
    # layer 0's residual is the embedding: patching the one differing position makes the run clean
    resid0 = scores["blocks.0.hook_resid_pre"]
    expected = torch.zeros(T)
    expected[3] = 1.0
    torch.testing.assert_close(resid0, expected, rtol=0, atol=1e-4)
    # causal: before the differing token, clean and corrupt activations are the same
    assert torch.equal(scores["blocks.0.attn.hook_z"][:3], torch.zeros(3, HEADS))
    assert torch.equal(scores["blocks.1.attn.hook_z"][:T - 1], torch.zeros(T - 1, HEADS))  # only the last query counts
    # an all-True mask is the same as no mask; several targets are summed
    masked = activation_patching(model, clean, corrupt, [target], hook_names=["blocks.0.hook_resid_pre"],
                                 attention_mask=torch.ones(1, T, dtype=torch.bool))
    torch.testing.assert_close(masked["blocks.0.hook_resid_pre"], resid0, rtol=0, atol=1e-4)


def test_activation_patching_with_nothing_to_recover_is_an_error(model, pair):
    with pytest.raises(MctError, match="nothing to recover"):
        activation_patching(model, pair[0], pair[0].clone(), 3)


@pytest.mark.parametrize("call, message", [
    (lambda m, ids: ablate_heads(m, [(0, HEADS)]), "head 4 .* out of range"),
    (lambda m, ids: ablate_heads(m, [(2, 0)]), "layer 2 is out of range"),
    (lambda m, ids: ablate_heads(m, [(0, 0)], mode="mean"), "needs mean_over"),
    (lambda m, ids: ablate_heads(m, [(0, 0)], mode="random"), "'zero' or 'mean'"),
    (lambda m, ids: patch_activation(m, "blocks.0.hook_resid_prez", torch.zeros(1)), "no hook point"),
    (lambda m, ids: patch_activation(m, "blocks.0.hook_resid_pre", torch.zeros(1), heads=[0]), "no head axis"),
    (lambda m, ids: patch_activation(m, "blocks.0.attn.hook_z", torch.zeros(1), heads=[-1]), "out of range"),
    (lambda m, ids: activation_patching(m, ids, ids, 0, hook_names=["blocks.9.hook_resid_pre"]), "no hook point"),
    (lambda m, ids: activation_patching(m, ids, ids[:, :-1], 0), r"\[1, T\]"),
    (lambda m, ids: activation_patching(m, ids, ids, VOCAB), "token ids"),
])
def test_user_mistakes_raise_mct_error(model, pair, call, message):
    with pytest.raises(MctError, match=message):
        result = call(model, pair[0])  # the context managers check their arguments before `with`
        with result if hasattr(result, "__enter__") else contextlib.nullcontext():
            pass


def test_a_source_of_the_wrong_shape_is_an_error_at_run_time(model, pair):
    wrong = torch.zeros(1, T + 1, 32)
    with patch_activation(model, "blocks.0.hook_resid_pre", wrong), pytest.raises(MctError, match="activation is"):
        logits_of(model, pair[0])
    assert all(not point._forward_hooks for point in model.hook_dict.values())
