"""`mct.generation`: the cached forward path, position ids, device moves, batched decoding, and what a
model is asked under each step masking mode."""

import pytest
import torch

from mct.config import DataConfig
from mct.data.format import DataFormat
from mct.errors import MctError
from mct.generation import (
    DecodingPlan,
    KVCache,
    decode_batched,
    decoding_mode,
    decoding_plan,
    max_new_tokens_for,
    sample,
    to_device,
    written_steps,
)
from mct.tokenizer import Tokenizer
from test_model import POSITION_OPTIONS, V, padded_batch, tiny
from tiny_checkpoint import OracleModel


def fmt(task="add", use_steps=False, **extra):
    return DataFormat.from_config(DataConfig(task=task, use_steps=use_steps, **extra))


# ---- one forward path with a cache -------------------------------------------------------------


def test_kv_cache_gives_the_same_logits_and_tokens_as_recomputing():
    model = tiny(num_layers=3)
    ids, mask = padded_batch([7, 2, 5], 7, side="left", seed=5)
    new = 12
    with_cache = model.generate(ids, new, attention_mask=mask, use_cache=True)
    without = model.generate(ids, new, attention_mask=mask, use_cache=False)
    assert with_cache.shape == (3, 7 + new)
    assert torch.equal(with_cache, without)
    # logits step by step: cached decode vs a full forward over everything so far
    tokens = with_cache
    full_mask = torch.cat([mask, torch.ones(3, new, dtype=torch.bool)], dim=1)
    cache = KVCache(len(model.blocks), 7 + new)
    with torch.no_grad():
        prefill, _, _ = model(tokens[:, :7], full_mask[:, :7], cache=cache)
        assert torch.allclose(prefill, model(tokens[:, :7], full_mask[:, :7])[0], atol=1e-5)
        assert cache.length == 7
        step_logits = prefill[:, -1]
        for length in range(7, 7 + new):
            full, _, _ = model(tokens[:, :length], full_mask[:, :length])
            assert torch.allclose(step_logits, full[:, -1], atol=1e-5)
            step_logits = model(tokens[:, length:length + 1], full_mask[:, length:length + 1], cache=cache)[0][:, -1]


@pytest.mark.parametrize("positions", POSITION_OPTIONS, ids=["rope", "learned", "nope"])
def test_a_cache_fed_in_chunks_gives_the_full_forward_and_its_attention(positions):
    model = tiny(**positions)
    ids, mask = padded_batch([9, 4], 9, side="left", seed=3)
    full, _, full_weights = model(ids, mask, return_attention_weights=True)
    cache = KVCache(len(model.blocks), 9)
    start = 0
    with torch.no_grad():
        for size in (3, 1, 4, 1):
            end = start + size
            logits, _, weights = model(ids[:, start:end], mask[:, start:end], return_attention_weights=True,
                                       cache=cache)
            assert torch.allclose(logits, full[:, start:end], atol=1e-5)
            assert weights[0].shape == (2, 4, size, end)  # [B, H, new queries, every key so far]
            assert torch.allclose(weights[1], full_weights[1][:, :, start:end, :end], atol=1e-5)
            start = end
    with pytest.raises(MctError, match="KV cache holds 9"):
        model(ids[:, :1], cache=cache)


# ---- position ids ------------------------------------------------------------------------------


@pytest.mark.parametrize("positions", POSITION_OPTIONS, ids=["rope", "learned", "nope"])
def test_position_ids_default_to_the_mask_count_and_can_be_given(positions):
    model = tiny(**positions)
    ids, mask = padded_batch([6, 3], 6, side="left", seed=1)
    counted = (mask.long().cumsum(-1) - 1).clamp(min=0)
    default, _, _ = model(ids, mask)
    assert torch.equal(model(ids, mask, position_ids=counted)[0], default)
    shifted, _, _ = model(ids, mask, position_ids=counted + 5)
    if positions.get("absolute_positions") == "learned":
        assert not torch.allclose(shifted, default, atol=1e-4)  # other learned embeddings
    else:  # RoPE sees relative positions only, NoPE none at all
        assert torch.allclose(shifted, default, atol=1e-5)


def test_position_ids_of_the_wrong_shape_are_a_user_error():
    model = tiny()
    ids, _ = padded_batch([4], 4)
    with pytest.raises(MctError, match="position_ids must have the shape of input_ids"):
        model(ids, position_ids=torch.arange(3)[None])


@pytest.mark.parametrize("positions", POSITION_OPTIONS[:2], ids=["rope", "learned"])
@pytest.mark.parametrize("bad", [48, -1])
def test_position_ids_outside_the_models_tables_are_a_user_error(positions, bad):
    model = tiny(**positions)  # max_seq_len 48: rows 0..47
    ids, _ = padded_batch([4], 4)
    inside = torch.tensor([[0, 1, 2, 47]])
    assert model(ids, position_ids=inside)[0].shape == (1, 4, V)
    with pytest.raises(MctError, match=r"position_ids must lie in \[0, 48\) \(model.max_seq_len = 48\), got"):
        model(ids, position_ids=torch.tensor([[0, 1, 2, bad]]))


def test_any_position_id_reaches_a_model_without_position_tables():
    model = tiny(**POSITION_OPTIONS[2])  # NoPE: the ids are not read
    ids, _ = padded_batch([4], 4)
    assert model(ids, position_ids=torch.tensor([[0, 1, 2, 500]]))[0].shape == (1, 4, V)


# ---- inputs on another device ------------------------------------------------------------------


def test_to_device_moves_only_tensors_that_are_elsewhere():
    tensor = torch.ones(2)
    assert to_device(tensor, torch.device("cpu")) is tensor
    assert to_device(None, torch.device("cpu")) is None
    assert to_device(tensor, torch.device("meta")).device.type == "meta"


def test_inputs_on_the_cpu_reach_a_model_on_another_device_on_that_device():
    """A model on `meta` (the one other device every machine has) stands in for cuda: every input the
    caller gives on the CPU must arrive at the layers on the model's device."""
    model = tiny().to("meta")
    seen = {}
    model.embed.register_forward_pre_hook(lambda module, args: seen.update(ids=args[0].device))
    model.blocks[0].register_forward_pre_hook(lambda module, args: seen.update(mask=args[1].device))
    model.loss = lambda logits, labels: seen.update(labels=labels.device) or logits.sum()
    ids, mask = padded_batch([4, 2], 4)
    logits, _, _ = model(ids, mask, labels=ids, position_ids=torch.zeros_like(ids))
    assert logits.device.type == "meta" and set(seen.values()) == {torch.device("meta")}
    seen.clear()
    _, cache = model.run_with_cache(ids, mask, names_filter="blocks.0.hook_resid_pre")
    assert cache["resid_pre", 0].device.type == "meta" and set(seen.values()) == {torch.device("meta")}
    seen.clear()
    model.forward_analysis(ids, mask)
    assert set(seen.values()) == {torch.device("meta")}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cpu_inputs_work_with_a_model_on_cuda():
    model = tiny().to("cuda")
    ids, mask = padded_batch([5, 3], 5, side="left")
    logits, loss, _ = model(ids, mask, labels=ids)
    assert logits.device.type == "cuda" and torch.isfinite(loss)
    _, cache = model.run_with_cache(ids, mask)
    assert cache["pattern", 0].device.type == "cuda"
    assert model.forward_analysis(ids, mask)[1][0].device.type == "cuda"
    tokens = model.generate(ids, 4, attention_mask=mask)
    next_token = model.generate_next_token(ids, mask, temperature=0.0)
    assert tokens.device.type == "cpu" and next_token.device.type == "cpu"  # back where the inputs were
    assert torch.cat([ids, next_token], dim=1).shape == (2, 6) and tokens.shape == (2, 9)
    assert torch.allclose(logits.cpu(), tiny()(ids, mask)[0], atol=5e-3)  # loose: GPU kernels may use TF32


# ---- generate and sampling ---------------------------------------------------------------------


def test_generate_returns_the_logits_each_token_was_chosen_from():
    model = tiny()
    ids, mask = padded_batch([5, 2], 5, side="left", seed=4)
    tokens, logits = model.generate(ids, 6, attention_mask=mask, return_logits=True)
    assert logits.shape == (2, 6, V)
    assert torch.equal(tokens[:, 5:], logits.argmax(-1))  # greedy
    grown, grown_mask = ids, mask
    for step in range(6):  # the uncached one-step function agrees
        token, step_logits = model.generate_next_token(grown, grown_mask, temperature=0.0, return_logits=True)
        assert torch.allclose(step_logits, logits[:, step], atol=1e-5)
        grown, grown_mask = torch.cat([grown, token], 1), torch.cat([grown_mask, torch.ones(2, 1, dtype=torch.bool)], 1)


def test_an_empty_prompt_is_refused_in_one_line():
    model = tiny()
    empty = torch.zeros(2, 0, dtype=torch.long)
    for call in (lambda: model.generate(empty, 3), lambda: model.generate_next_token(empty)):
        with pytest.raises(MctError, match="at least one token"):
            call()


def test_sampling_refuses_a_negative_temperature_and_top_k_below_one():
    logits = torch.randn(2, V)
    assert torch.equal(sample(logits, 0.0, None)[:, 0], logits.argmax(-1))
    with pytest.raises(MctError, match="temperature"):
        sample(logits, -1.0, None)
    with pytest.raises(MctError, match="top_k"):
        sample(logits, 1.0, 0)


# ---- batched decoding of text prompts ----------------------------------------------------------


def test_decode_batched_left_pads_sorts_and_restores_the_order():
    tokenizer, data_format = Tokenizer(), fmt()
    model = OracleModel(tokenizer, data_format)
    prompts = ["999+999=", "1+2=", "45+6=", "7+80=", "100+1="]
    completions = decode_batched(model, tokenizer, prompts, max_new_tokens=6, batch_size=2)
    assert completions == ["#8991<eos>", "#3<eos>", "#15<eos>", "#78<eos>", "#101<eos>"]
    assert [shape for shape, _ in model.calls] == [(2, 5), (2, 6), (1, 8)]  # shortest prompts first


def test_decode_batched_cuts_each_completion_at_its_own_budget():
    tokenizer, data_format = Tokenizer(), fmt()
    model = OracleModel(tokenizer, data_format)
    completions = decode_batched(model, tokenizer, ["999+999=", "1+2="], max_new_tokens=[2, 6])
    assert completions == ["#8", "#3<eos>"]
    assert model.calls[-1][1] == 6  # one decode, as long as the longest budget
    with pytest.raises(MctError, match="batch_size must be at least 1"):
        decode_batched(model, tokenizer, ["1+2="], 4, batch_size=0)


def test_decode_batched_rejects_prompts_outside_the_vocabulary_or_context():
    tokenizer = Tokenizer()
    model = OracleModel(tokenizer, fmt(), max_seq_len=8)
    with pytest.raises(MctError, match="not in the vocabulary"):
        decode_batched(model, tokenizer, ["1a+2="], 4)
    with pytest.raises(MctError, match="max_seq_len"):
        decode_batched(model, tokenizer, ["12345+678="], 4)


# ---- what the model is asked, by step masking mode ---------------------------------------------


def test_decoding_plan_supplies_or_expects_the_steps_by_mode():
    steps = "2+4+0=06|1+3+0=04|"
    with_steps = fmt(use_steps=True)
    assert decoding_plan(with_steps, "12+34=", "none") == DecodingPlan("", steps + "#64<eos>")
    assert decoding_plan(with_steps, "12+34=", "mask_steps") == DecodingPlan(steps, "#64<eos>")
    assert decoding_plan(with_steps, "12+34=", "mask_answer") == DecodingPlan("", steps)
    # without steps every mode asks for the answer
    assert decoding_plan(fmt(), "12+34=", "mask_steps") == DecodingPlan("", "#64<eos>")
    assert decoding_mode(fmt(), "mask_steps") == "none" and decoding_mode(with_steps, None) == "none"
    with pytest.raises(MctError, match="step_masking_mode"):
        decoding_mode(with_steps, "all")
    with pytest.raises(MctError, match="not an add problem"):
        decoding_plan(with_steps, "5-3=", "mask_steps")


def test_token_budget_by_mode():
    tokenizer, with_steps = Tokenizer(), fmt(use_steps=True)
    prompts = ["12+34=", "5+5="]
    # '#64<eos>' is 4 tokens, '#01<eos>' 4: one more shows an over-long answer as wrong
    assert max_new_tokens_for(with_steps, tokenizer, prompts, 64, "mask_steps") == 5
    assert max_new_tokens_for(with_steps, tokenizer, prompts, 64, "none") == 18 + 4 + 1
    # the steps exactly, one budget per prompt ("5+5+0=10|" is 9 tokens)
    assert max_new_tokens_for(with_steps, tokenizer, prompts, 64, "mask_answer") == [18, 9]
    assert max_new_tokens_for(with_steps, tokenizer, prompts, 12, "none") == 11  # within the context


def test_written_steps_parses_a_steps_only_completion():
    assert written_steps("2+4+0=06|1+3+0=04|") == (["2+4+0=06", "1+3+0=04"], None)
    assert written_steps("2+4+0=06|1+3+") == (["2+4+0=06"], "unfinished step")
    assert written_steps("2+4+0=06|#64<eos>") == (["2+4+0=06"], "answer marker or <eos> before the steps end")
