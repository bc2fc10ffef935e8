"""`mct.load` / `Predictor`: natural-order answers, raw completions, prompt errors, checkpoint errors."""

import pytest
import torch

import mct
from mct.config import DataConfig
from mct.data.format import DataFormat
from mct.errors import MctError
from mct.predictor import Predictor, TokenChoice
from mct.tokenizer import Tokenizer
from tiny_checkpoint import OracleModel, make_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def oracle_predictor(step_masking_mode=None, **data_fields):
    tokenizer = Tokenizer()
    data_format = DataFormat.from_config(DataConfig(**data_fields))
    model = OracleModel(tokenizer, data_format, max_seq_len=64, step_masking_mode=step_masking_mode or "none")
    return Predictor(model, tokenizer, data_format, step_masking_mode=step_masking_mode)


@pytest.mark.parametrize("order", ["reversed", "plain"])
def test_answer_is_in_natural_order_whatever_the_training_format(order):
    predictor = oracle_predictor(answer_order=order)
    assert predictor.answer("12+34=") == "46"
    assert predictor.answer(["999+1=", "5+5=", "7+0="]) == ["1000", "10", "7"]


def test_answer_appends_the_missing_equals_sign():
    predictor = oracle_predictor()
    assert predictor.answer("12+34") == "46"
    assert predictor.answer([" 12+34 "]) == ["46"]


def test_answer_of_a_subtraction_keeps_its_sign():
    assert oracle_predictor(task="sub").answer("3-12") == "-9"


def test_a_problem_whose_answer_does_not_fit_the_context_is_refused_with_the_limit():
    predictor = oracle_predictor(max_digits=10, pad_to_longer=True)  # context 64
    fits = "9" * 19 + "+" + "9" * 19 + "="  # 40 prompt tokens + "#", 20 digits, <eos> = 62
    assert predictor.answer(fits) == str(2 * (10**19 - 1))
    assert predictor.answer("7+1234") == "1241"  # padded to 0007+1234= as the format reads it
    too_long = "9" * 20 + "+" + "9" * 20 + "="  # 42 + 23 = 65 tokens
    for call in (predictor.answer, predictor.complete):
        with pytest.raises(MctError, match=r"needs 65 tokens with its answer.*\(max_seq_len\) is 64") as info:
            call(too_long)
        assert "\n" not in str(info.value)


def test_complete_returns_the_raw_training_format_text():
    predictor = oracle_predictor()
    assert predictor.complete("12+34=") == "#64<eos>"
    assert predictor.complete(["12+34=", "1+1="]) == ["#64<eos>", "#2<eos>"]
    assert predictor.complete([]) == []


def test_load_gives_a_predictor_with_model_tokenizer_format_and_config(checkpoint):
    predictor = mct.load(checkpoint, device="cpu")
    assert isinstance(predictor, Predictor)
    assert predictor.tokenizer == Tokenizer()
    assert predictor.data_format.task == "add" and predictor.data_format.answer_order == "reversed"
    assert predictor.config.model.d_model == 16
    assert not predictor.model.training
    assert "add" in repr(predictor)


def test_random_model_still_returns_strings_of_the_right_shape(checkpoint):
    predictor = mct.load(checkpoint, device="cpu")
    single = predictor.answer("12+34=")
    batch = predictor.answer(["12+34=", "1+1", "999+999="])
    assert isinstance(single, str) and isinstance(batch, list) and len(batch) == 3
    assert batch[0] == single  # batched decoding gives what the prompt gives alone
    completion = predictor.complete("12+34=")
    assert isinstance(completion, str)
    assert len(Tokenizer().encode(completion)) <= predictor.config.model.max_seq_len - len("12+34=")


def test_explain_lists_the_top_candidates_of_each_greedy_token(checkpoint):
    predictor = mct.load(checkpoint, device="cpu")
    choices = predictor.explain("12+34=", max_new_tokens=4, top_n=3)
    assert 1 <= len(choices) <= 4 and all(isinstance(c, TokenChoice) for c in choices)
    for choice in choices:
        probs = [p for _, p in choice.candidates]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
        assert choice.token == choice.candidates[0][0]  # greedy picks the most likely
        assert choice.probability == pytest.approx(probs[0])
    greedy = predictor.complete("12+34=", max_new_tokens=4)
    assert "".join(c.token for c in choices) == greedy


@pytest.mark.parametrize("prompt, message", [("12a+3=", "not in the vocabulary"),
                                             ("1" * 30 + "+1=", "max_seq_len")])
def test_bad_prompts_are_one_line_user_errors(checkpoint, prompt, message):
    predictor = mct.load(checkpoint, device="cpu")
    for call in (predictor.answer, predictor.complete):
        with pytest.raises(MctError, match=message) as info:
            call(prompt)
        assert "\n" not in str(info.value)


def test_a_prompt_with_text_after_its_equals_sign_is_quoted_as_typed(checkpoint):
    predictor = mct.load(checkpoint, device="cpu")
    with pytest.raises(MctError, match=r"prompt '12\+34=5' is not an add problem"):
        predictor.answer("12+34=5")
    assert predictor.normalize_prompt(" 12+34 ") == predictor.normalize_prompt("12+34=")  # "=" added when missing


def test_missing_truncated_and_foreign_checkpoints_are_user_errors(tmp_path, checkpoint):
    with pytest.raises(MctError):
        mct.load(tmp_path / "missing.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:200])
    with pytest.raises(MctError):
        mct.load(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(MctError):
        mct.load(foreign)


def test_a_mask_steps_model_is_given_the_reference_steps_and_answers():
    predictor = oracle_predictor("mask_steps", use_steps=True)
    assert predictor.step_masking_mode == "mask_steps" and "mask_steps" in repr(predictor)
    assert predictor.supplied_steps("12+34=") == "2+4+0=06|1+3+0=04|"
    assert predictor.answer(["12+34", "58+67="]) == ["46", "125"]
    assert predictor.complete("12+34=") == "#64<eos>"  # what the model wrote after the supplied steps
    assert predictor.model.prompts[-1] == "12+34=2+4+0=06|1+3+0=04|"
    graded = predictor.grade("12+34=", "#64<eos>")
    assert graded["supplied"] == "2+4+0=06|1+3+0=04|" and graded["steps"] == ["2+4+0=06", "1+3+0=04"]
    assert graded["answer"] == "46" and graded["correct"] and graded["scored"] == "answer"


def test_a_mask_answer_model_writes_the_steps_and_has_no_answer():
    predictor = oracle_predictor("mask_answer", use_steps=True)
    assert predictor.complete(["12+34=", "5+5="]) == ["2+4+0=06|1+3+0=04|", "5+5+0=10|"]  # cut at the steps
    assert predictor.supplied_steps("12+34=") == ""
    graded = predictor.grade("5+5=", "5+5+0=10|")
    assert graded["scored"] == "steps" and graded["correct"] and graded["expected"] == "5+5+0=10|"
    assert graded["answer"] is None and graded["malformed"] is None
    with pytest.raises(MctError, match="mask_answer") as info:
        predictor.answer("12+34=")
    assert "\n" not in str(info.value)


def test_without_steps_the_mode_changes_nothing():
    predictor = oracle_predictor("mask_steps")
    assert predictor.step_masking_mode == "none"
    assert predictor.answer("12+34=") == "46" and predictor.complete("12+34=") == "#64<eos>"


def test_a_checkpoint_gives_the_predictor_its_step_masking_mode(tmp_path):
    path = make_checkpoint(tmp_path / "steps.pt", use_steps=True, max_seq_len=64, step_masking_mode="mask_answer")
    predictor = mct.load(path, device="cpu")
    assert predictor.step_masking_mode == "mask_answer"
    steps = predictor.complete("12+34=")
    assert len(Tokenizer().encode(steps)) <= len("2+4+0=06|1+3+0=04|")  # a random model, cut at the steps


def test_to_tokens_and_to_str_tokens_follow_transformerlens(checkpoint):
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    tokens = predictor.to_tokens("12+34=#")
    assert tokens.shape == (1, 7) and predictor.to_str_tokens(tokens) == ["1", "2", "+", "3", "4", "=", "#"]
    batch = predictor.to_tokens(["1+1=", "12+34="], padding_side="left")
    pad = predictor.tokenizer.pad_id
    assert batch.tolist()[0][:2] == [pad, pad] and predictor.to_str_tokens(batch)[1] == list("12+34=")
    assert predictor.to_tokens(["1+1=", "12+34="]).tolist()[0][-2:] == [pad, pad]
    assert predictor.to_str_tokens("7<eos>") == ["7", "<eos>"]
    with pytest.raises(MctError):
        predictor.to_tokens("12?3")


def test_a_prompt_longer_than_training_gets_a_note_unless_positions_are_place_values(checkpoint):
    predictor = mct.load(checkpoint, device="cpu")  # learned positions, 1-3 digit operands
    assert predictor.grade("12+34=", "#64<eos>")["note"] is None
    note = predictor.grade("1234+5=", "#9321<eos>")["note"]
    assert "operand of 4 digits" in note and "trained on 1-3" in note and "configs/add-coupled.toml" in note
    predictor.config.model.use_rope = False  # place values: longer numbers are their point
    predictor.config.model.absolute_positions = "coupled"
    assert predictor.grade("1234+5=", "#9321<eos>")["note"] is None
    assert predictor.grade("hello", "x")["note"] is None  # not a problem of the task: nothing to say
