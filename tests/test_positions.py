"""Place-value positions (abacus, coupled): ids from the text, through training, generation and hooks."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mct.config import Config, ModelConfig
from mct.data.format import DataFormat, is_token, place_ids, shifted_place_ids
from mct.errors import MctError
from mct.generation import generate
from mct.model import create_model
from mct.tokenizer import Tokenizer
from mct.train.step import training_positions

TOK = Tokenizer()


def ids(text):
    return torch.tensor([TOK.encode(text)])


def test_place_ids_count_operands_from_the_right_and_the_answer_from_the_left():
    assert place_ids(ids("123+45=#861<eos>"), TOK).tolist() == [[3, 2, 1, 0, 2, 1, 0, 0, 1, 2, 3, 0]]
    assert place_ids(ids("123+45=#861<eos>"), TOK, coupled=True).tolist() == [[3, 2, 1, 4, 2, 1, 4, 0, 1, 2, 3, 0]]
    assert place_ids(ids("12-345=#-333<eos>"), TOK).tolist() == [[2, 1, 0, 3, 2, 1, 0, 0, 0, 1, 2, 3, 0]]
    # left padding is not a digit
    assert place_ids(ids("<pad><pad>7+5=#21"), TOK).tolist() == [[0, 0, 1, 0, 1, 0, 0, 1, 2]]


@pytest.mark.parametrize("vocab", [None, ("<pad>", "9", "+", "0", "<eos>", "=", "5", "1", "-", "2", "3", "4", "6",
                                          "7", "8", "*", "#")])
@pytest.mark.parametrize("chars", ["0123456789", "+-*=", "+-", "#"])
def test_is_token_equals_isin_whatever_the_order_of_the_ids(vocab, chars):
    """is_token compares with numbers (capturable in a CUDA graph); it finds what isin of the ids finds."""
    tokenizer = TOK if vocab is None else Tokenizer(vocab)
    tokens = torch.randint(0, tokenizer.vocab_size, (4, 50), generator=torch.Generator().manual_seed(0))
    wanted = torch.tensor([tokenizer.token_to_id[c] for c in chars])
    assert torch.equal(is_token(tokens, tokenizer, chars), torch.isin(tokens, wanted))


@settings(max_examples=50, deadline=None)
@given(a=st.integers(0, 10**30), b=st.integers(0, 10**30))
def test_operand_and_answer_digits_of_one_place_share_an_id(a, b):
    fmt = DataFormat("add")
    text = fmt.prompt((a, b)) + fmt.target((a, b))
    places = place_ids(ids(text), TOK)[0].tolist()
    tokens = TOK.encode(text)
    answer_start = text.index("#") + 1
    operand_a = places[: len(str(a))]
    assert operand_a == list(range(len(str(a)), 0, -1))
    answer = places[answer_start: answer_start + len(str(a + b))]
    assert answer == list(range(1, len(str(a + b)) + 1))
    assert places[-1] == 0 and tokens[-1] == TOK.eos_id


def place_model(scheme="abacus", **extra):
    return create_model(ModelConfig(vocab_size=TOK.vocab_size, d_model=32, num_layers=2, num_heads=4, d_ff=64,
                                    use_rope=False, absolute_positions=scheme, max_place=60, max_seq_len=140, **extra))


def randomise_place_bias(model):
    """Relative place codes start at zero bias (no effect): give them values, so that tests see them."""
    with torch.no_grad():
        for block in model.blocks:
            if block.attn.place_window:
                block.attn.place_bias.normal_(0, 2.0)
    return model


@pytest.mark.parametrize("scheme, extra", [("abacus", {}), ("coupled", {}), ("coupled", {"place_base": 3}),
                                           ("coupled", {"place_codes": "relative", "place_base": 3}),
                                           ("abacus", {"place_codes": "relative", "place_base": 1}),
                                           ("coupled", {"place_codes": "relative", "place_far": "masked",
                                                        "place_base": 2})])
def test_cached_decoding_equals_uncached_and_reaches_long_numbers(scheme, extra):
    torch.manual_seed(0)
    model = randomise_place_bias(place_model(scheme, **extra).eval())
    prompts = [ids("12345678901234567890123+9=")[0], ids("7+5=")[0]]
    width = max(len(p) for p in prompts)
    batch = torch.full((2, width), TOK.pad_id)
    mask = torch.zeros(2, width, dtype=torch.bool)
    for row, p in enumerate(prompts):
        batch[row, width - len(p):], mask[row, width - len(p):] = p, True
    cached = generate(model, batch, 20, attention_mask=mask, use_cache=True)
    uncached = generate(model, batch, 20, attention_mask=mask, use_cache=False)
    assert torch.equal(cached, uncached)


def test_the_ids_pass_through_hook_pos_embed():
    model = place_model()
    seen = {}
    model.register_hook("pos", "hook_pos_embed", lambda module, inputs, output: seen.setdefault("out", output))
    model(ids("123+45=#861"))
    expected = model.pos_embed(place_ids(ids("123+45=#861"), TOK))
    assert torch.allclose(seen["out"], expected)


def test_a_number_past_max_place_is_one_clear_error():
    model = place_model()
    with pytest.raises(MctError, match=r"at most 59 digits \(model.max_place = 60"):
        model(ids("1" * 70 + "+1="))


def test_an_answer_that_runs_past_max_place_is_read_not_refused():
    # a model that does not stop writes more answer digits than it has ids: a wrong answer, not an error
    model = place_model("coupled").eval()
    logits, _, _ = model(ids("12+34=#" + "6" * 70))
    assert logits.shape[1] == 77 and torch.isfinite(logits).all()


def test_training_offsets_shift_every_place_and_stay_in_the_table():
    config = Config(model={"use_rope": False, "absolute_positions": "coupled", "max_place": 30, "max_seq_len": 64},
                    data={"max_digits": 5, "max_seq_len": 40})
    model = place_model("coupled")
    batch = ids("123+45=#861<eos>").repeat(64, 1)
    torch.manual_seed(0)
    positions = training_positions(model, batch, config)
    base = place_ids(batch, TOK, coupled=True)
    shift = (positions - base)[base > 0].view(64, -1)
    assert (shift == shift[:, :1]).all()  # one offset per example ...
    assert len(set(shift[:, 0].tolist())) > 5  # ... that differs between examples (coupled)
    marker = batch == TOK.token_to_id["#"]
    assert int(positions.max()) <= 30 and (positions[base > 0] > 0).all() and (positions[(base == 0) & ~marker] == 0).all()


@pytest.mark.parametrize("scheme", ["abacus", "coupled"])
def test_the_answer_marker_stays_one_below_the_units_digit_it_predicts_under_any_offset(scheme):
    # '#' predicts the units digit: with the old ids it stayed 0 while the units moved with the training
    # offset, so the first answer digit could not find its operands (22% exact even at 1 digit)
    config = Config(model={"use_rope": False, "absolute_positions": scheme, "max_place": 30, "max_seq_len": 64},
                    data={"max_digits": 5, "max_seq_len": 40})
    batch = ids("7+8=#51<eos>").repeat(4, 1)
    marker, units = batch[0].tolist().index(TOK.token_to_id["#"]), 0
    torch.manual_seed(0)
    positions = torch.cat([training_positions(place_model(scheme), batch, config) for _ in range(8)])
    assert (positions[:, marker] == positions[:, units] - 1).all()
    assert len(set(positions[:, marker].tolist())) > 1  # moved by the offset, not pinned to 0


def test_a_negative_answers_sign_predicts_the_units_digit_and_moves_with_it():
    batch = ids("12-345=#-333<eos>")
    shifted = shifted_place_ids(batch, TOK, 7, coupled=True)[0].tolist()
    assert shifted[7:12] == [7, 7, 8, 9, 10]  # '#', '-', then the answer's places 1-3
    assert shifted[2] == 11 and shifted[-1] == 0  # the operator '-' is a joiner (coupled), not a sign


def test_place_positions_need_reversed_answers():
    with pytest.raises(ValueError, match="answer_order = 'reversed'"):
        Config(model={"use_rope": False, "absolute_positions": "abacus"}, data={"answer_order": "plain"})


def test_orthogonal_place_codes_are_orthonormal_fixed_and_kept_by_checkpoints(tmp_path):
    from mct.checkpoint import load_checkpoint, save_checkpoint
    from mct.train.step import build_optimizer

    config = Config(model={"vocab_size": TOK.vocab_size, "d_model": 32, "num_layers": 1, "num_heads": 2, "d_ff": 64,
                           "use_rope": False, "absolute_positions": "coupled", "place_codes": "orthogonal",
                           "max_place": 20, "max_seq_len": 64}, data={"max_digits": 5, "max_seq_len": 40})
    torch.manual_seed(0)
    model = create_model(config)
    codes = model.pos_embed.weight.detach().clone()
    assert torch.allclose(codes @ codes.T, torch.eye(21), atol=1e-5)
    optimizer = build_optimizer(model, config)
    batch = ids("123+45=#861<eos>")
    _, loss, _ = model(batch, labels=batch, position_ids=training_positions(model, batch, config))
    loss.backward()
    optimizer.step()
    assert torch.equal(model.pos_embed.weight, codes)  # not trained ...
    assert model.embed.weight.grad is not None  # ... while the rest is
    save_checkpoint(tmp_path / "m.pt", model, config, TOK, DataFormat().to_dict())
    assert torch.equal(load_checkpoint(tmp_path / "m.pt").model.pos_embed.weight, codes)


def test_orthogonal_place_codes_need_one_dimension_per_id():
    with pytest.raises(ValueError, match=r"max_place \+ 1 \(49\) <= d_model \(32\)"):
        ModelConfig(d_model=32, num_heads=2, use_rope=False, absolute_positions="coupled", place_codes="orthogonal",
                    max_place=48)


def test_the_place_base_moves_every_id_at_inference_and_must_be_a_trained_offset():
    model = place_model("coupled", place_base=5).eval()
    assert model.place_ids(ids("123+45=#861<eos>")).tolist() == [[8, 7, 6, 9, 7, 6, 9, 5, 6, 7, 8, 0]]
    with pytest.raises(ValueError, match=r"place_base \(40\) must lie within the training offsets \(0 to 18"):
        Config(model={"use_rope": False, "absolute_positions": "coupled", "max_place": 30, "place_base": 40},
               data={"max_digits": 10})


def test_relative_place_codes_bias_attention_by_the_clipped_difference_of_place_ids():
    torch.manual_seed(0)
    model = randomise_place_bias(place_model("coupled", place_codes="relative", place_window=2, place_base=3)).eval()
    assert not hasattr(model, "pos_embed")  # no vector per id: the ids act through attention alone
    tokens = ids("123+45=#86")
    places = model.place_ids(tokens)  # [[6, 5, 4, 7, 5, 4, 7, 3, 4, 5]]
    diff = model.place_differences(places)[0]
    assert diff[9].tolist() == [1, 0, -1, 2, 0, -1, 2, -2, -1, 0]  # query "8" (place 2)
    far = model.place_differences(model.place_ids(ids("<pad>12345+1=#")))[0]
    assert far[-1].tolist() == [4, 3, 3, 3, 2, 1, 3, 1, 3, 0]  # "#" (place 0): 3 = farther, 4 = no place (<pad>)
    seen = {}
    model.register_hook("bias", "blocks.0.attn.hook_place_bias", lambda module, inputs, output: seen.setdefault("b", output))
    model(tokens)
    table = model.blocks[0].attn.place_bias.view(4, 8)
    assert torch.equal(seen["b"][0, :, 9], table[:, diff[9] + 3])


def flip_digit(text: str, number: int, place: int) -> str:
    digits = list(str(number))
    digits[-place] = str((int(digits[-place]) + 5) % 10)
    return text.replace(str(number), "".join(digits), 1)


@settings(max_examples=20, deadline=None)
@given(a=st.integers(10**11, 10**12 - 1), b=st.integers(10**11, 10**12 - 1), place=st.integers(7, 12))
def test_masked_far_places_leave_what_a_query_sees_independent_of_far_digits(a, b, place):
    torch.manual_seed(0)
    model = randomise_place_bias(place_model("coupled", place_codes="relative", place_window=2, place_base=3,
                                             place_far="masked")).eval()
    text = f"{a}+{b}=#{str(a + b)[::-1][:2]}"  # the last token (place 2) writes place 3
    last = lambda text: model(ids(text))[0][0, -1]  # noqa: E731
    # 2 layers, window 2: places 0-6 can reach the last token; places 7 and up cannot
    assert torch.allclose(last(text), last(flip_digit(text, a, place)), atol=1e-5)
    assert not torch.allclose(last(text), last(flip_digit(text, a, 3)), atol=1e-5)


@pytest.mark.parametrize("far", ["biased", "masked"])
def test_relative_place_codes_see_differences_only_and_the_fast_path_equals_the_explicit_one(far):
    torch.manual_seed(0)
    model = randomise_place_bias(place_model("coupled", place_codes="relative", place_far=far, place_base=3)).eval()
    tokens = ids("98765432109876+123456789=#7")
    places = model.place_ids(tokens)
    fast, _, _ = model(tokens, position_ids=places)
    explicit, _, _ = model(tokens, position_ids=places, return_attention_weights=True)
    moved, _, _ = model(tokens, position_ids=torch.where(places > 0, places + 17, 0))
    assert torch.allclose(fast, explicit, atol=1e-5)
    assert torch.allclose(fast, moved, atol=1e-5)  # every place moved: the same function


def test_relative_place_codes_need_place_ids():
    with pytest.raises(ValueError, match="place_codes = 'relative'.*absolute_positions = 'abacus' or 'coupled'"):
        ModelConfig(use_rope=False, absolute_positions="learned", place_codes="relative")
    with pytest.raises(ValueError, match="needs place_base >= 1"):
        ModelConfig(use_rope=False, absolute_positions="coupled", place_codes="relative")


def test_a_model_that_reads_any_length_widens_its_context_for_a_longer_problem():
    """Relative place codes index nothing by position: a 100-digit problem, past the model's max_seq_len
    (140) and max_place (60), is decoded, evaluated and cached as any other, and the widened model computes
    what it did before on what fitted. A model with a row per position keeps its context."""
    from mct.data.generate import make_record
    from mct.evaluate import evaluate_records
    from mct.predictor import Predictor

    torch.manual_seed(0)
    model = randomise_place_bias(place_model("coupled", place_codes="relative", place_far="masked", place_base=2))
    model.eval()
    assert model.reads_any_length
    short = ids("12345+678=#")
    before = model(short)[0]
    fmt = DataFormat("add", pad_to_longer=True)
    a, b = 10**99 + 12345, 10**100 - 1  # 100 digits each: 202 prompt tokens, 101 answer digits
    completion = Predictor(model, TOK, fmt).complete(f"{a}+{b}=")
    assert model.config.max_seq_len == 202 + len(TOK.encode(fmt.target((a, b)))) + 1  # prompt, answer, slack
    assert len(TOK.encode(completion)) <= 105 and model.causal_mask.shape == (model.config.max_seq_len,) * 2
    assert torch.equal(model(short)[0], before)
    report = evaluate_records(model, TOK, fmt, [make_record(fmt, a, b), make_record(fmt, 7, 5)])
    assert report.n == 2
    long_prompt = ids(f"{a}+{b}=")
    assert torch.equal(generate(model, long_prompt, 30, use_cache=True), generate(model, long_prompt, 30, use_cache=False))

    learned = create_model(ModelConfig(vocab_size=TOK.vocab_size, d_model=16, num_layers=1, num_heads=2, d_ff=32,
                                       max_seq_len=64))
    learned.fit_context(1000)
    assert not learned.reads_any_length and learned.config.max_seq_len == 64
    with pytest.raises(MctError, match=r"needs \d+ tokens with its answer.*\(max_seq_len\) is 64"):
        Predictor(learned, TOK, DataFormat("add")).complete("9" * 30 + "+1=")
