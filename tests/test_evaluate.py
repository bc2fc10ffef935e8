"""Metrics of `score_completions` on hand-made completions, and `decode_batched` on an oracle model."""

import pytest

from mct.config import DataConfig
from mct.data.dataset import Record
from mct.data.format import DataFormat
from mct.errors import MctError
from mct.evaluate import (
    EvalReport,
    decode_batched,
    evaluate_records,
    max_new_tokens_for,
    score_completions,
)
from mct.tokenizer import Tokenizer
from tiny_checkpoint import OracleModel


def fmt(task="add", answer_order="reversed", use_steps=False, **extra):
    return DataFormat.from_config(DataConfig(task=task, answer_order=answer_order, use_steps=use_steps, **extra))


def rec(prompt, answer, meta=None):
    return Record(prompt=prompt, answer=answer, target=None, steps=[], meta=meta or {})


ADD = [rec("12+34=", "46"), rec("99+1=", "100"), rec("5+5=", "10")]


def test_exact_match_and_per_digit_accuracy_count_from_the_units():
    # right; "110" for 100 (digits 0 and 2 right, digit 1 wrong); right
    report = score_completions(fmt(), ADD, ["#64<eos>", "#011<eos>", "#01<eos>"])
    assert isinstance(report, EvalReport)
    assert report.n == 3 and report.correct == 2
    assert report.exact_match == pytest.approx(2 / 3)
    assert report.per_digit_accuracy == pytest.approx({0: 1.0, 1: 2 / 3, 2: 1.0})
    assert report.per_digit_count == {0: 3, 1: 3, 2: 1}
    assert report.errors == [{"prompt": "99+1=", "expected": "100", "got": "110",
                              "completion": "#011<eos>", "malformed": None}]


def test_plain_order_answers_are_compared_in_natural_order():
    report = score_completions(fmt(answer_order="plain"), ADD, ["#46<eos>", "#100<eos>", "#01<eos>"])
    assert report.correct == 2
    assert report.errors[0]["got"] == "01"
    assert report.per_digit_accuracy[0] == pytest.approx(2 / 3)  # "01" has units digit 1, not 0


def test_a_short_answer_gets_its_missing_high_digits_wrong():
    report = score_completions(fmt(), [rec("99+1=", "100")], ["#00<eos>"])
    assert report.per_digit_accuracy == {0: 1.0, 1: 1.0, 2: 0.0}
    assert report.exact_match == 0.0


def test_groups_by_operand_lengths_carries_and_chain_are_recomputed_without_meta():
    report = score_completions(fmt(), ADD, ["#64<eos>", "#011<eos>", "#01<eos>"])
    assert report.by_digits == {"1,1": {"n": 1, "exact_match": 1.0}, "2,1": {"n": 1, "exact_match": 0.0},
                                "2,2": {"n": 1, "exact_match": 1.0}}
    # 12+34: no carry; 5+5: one carry; 99+1: two carries in one chain
    assert report.by_carries == {"0": {"n": 1, "exact_match": 1.0}, "1": {"n": 1, "exact_match": 1.0},
                                 "2": {"n": 1, "exact_match": 0.0}}
    assert report.by_max_carry_chain == report.by_carries


def test_meta_is_used_when_the_record_has_it():
    records = [rec("12+34=", "46", meta={"digits": [2, 2], "carries": 5, "max_carry_chain": 3})]
    report = score_completions(fmt(), records, ["#64<eos>"])
    assert list(report.by_carries) == ["5"] and list(report.by_max_carry_chain) == ["3"]


def test_group_keys_sort_numerically():
    records = [rec(f"{a}+{b}=", str(a + b)) for a, b in ((1234567891, 1), (1, 1), (12, 1))]
    completions = ["#" + str(a + b)[::-1] + "<eos>" for a, b in ((1234567891, 1), (1, 1), (12, 1))]
    report = score_completions(fmt(max_digits=10), records, completions)
    assert list(report.by_digits) == ["1,1", "2,1", "10,1"]
    assert report.exact_match == 1.0


def test_malformed_outputs_are_counted_by_reason_and_count_as_wrong():
    completions = ["64<eos>", "#6+4<eos>", "#01<eos>"]  # no marker, a non-digit, right
    report = score_completions(fmt(), ADD, completions)
    assert report.malformed["count"] == 2
    assert sum(report.malformed["by_reason"].values()) == 2
    assert report.correct == 1
    assert [e["malformed"] is not None for e in report.errors] == [True, True]
    assert report.errors[0]["got"] == "64<eos>"  # the raw text when there is no answer
    assert report.per_digit_accuracy[0] == pytest.approx(1 / 3)


def test_subtraction_per_digit_ignores_the_sign_and_carries_count_borrows():
    data_format = fmt(task="sub")
    records = [rec("3-12=", "-9"), rec("10-1=", "9")]
    right = [data_format.target(data_format.operands_from_prompt(r.prompt)) for r in records]
    report = score_completions(data_format, records, right)
    assert report.exact_match == 1.0
    assert report.per_digit_accuracy == {0: 1.0}
    assert set(report.by_carries) <= {"0", "1", "2"} and sum(g["n"] for g in report.by_carries.values()) == 2


def test_steps_metrics_separate_right_steps_from_right_answers():
    data_format = fmt(use_steps=True)
    records = [rec("12+34=", "46"), rec("58+67=", "125"), rec("9+9=", "18")]
    targets = [data_format.target(data_format.operands_from_prompt(r.prompt)) for r in records]
    first_step = targets[1].split("|")[0]
    wrong_steps_right_answer = targets[1].replace(first_step, first_step[:-1] + "0", 1)
    right_steps_wrong_answer = targets[2].replace("#81", "#82")
    assert wrong_steps_right_answer != targets[1] and right_steps_wrong_answer != targets[2]
    report = score_completions(data_format, records, [targets[0], wrong_steps_right_answer, right_steps_wrong_answer])
    assert report.exact_match == pytest.approx(2 / 3)
    assert report.steps["steps_correct"] == pytest.approx(2 / 3)
    assert report.steps["right_answer_after_wrong_steps"] == 1
    assert report.steps["right_answer_after_wrong_steps_share"] == 1.0
    assert report.steps["wrong_answer_after_right_steps"] == 1


def test_formats_without_steps_report_no_step_metrics():
    assert score_completions(fmt(), ADD[:1], ["#64<eos>"]).steps is None


def test_to_dict_is_json_data_with_string_keys():
    import json

    report = score_completions(fmt(), ADD, ["#64<eos>", "#011<eos>", "#01<eos>"])
    data = json.loads(json.dumps(report.to_dict()))
    for key in ("n", "exact_match", "per_digit_accuracy", "by_carries", "by_max_carry_chain", "by_digits",
                "malformed", "steps", "n_errors"):
        assert key in data
    assert data["per_digit_accuracy"]["1"] == pytest.approx(2 / 3)
    assert "errors" not in data and len(report.to_dict(include_errors=True)["errors"]) == 1


def test_no_records_is_a_user_error():
    with pytest.raises(MctError, match="no records"):
        score_completions(fmt(), [], [])


def test_decode_batched_left_pads_sorts_and_restores_the_order():
    tokenizer, data_format = Tokenizer(), fmt()
    model = OracleModel(tokenizer, data_format)
    prompts = ["999+999=", "1+2=", "45+6=", "7+80=", "100+1="]
    completions = decode_batched(model, tokenizer, prompts, max_new_tokens=6, batch_size=2)
    assert completions == ["#8991<eos>", "#3<eos>", "#15<eos>", "#78<eos>", "#101<eos>"]
    assert [shape for shape, _ in model.calls] == [(2, 5), (2, 6), (1, 8)]  # shortest prompts first


def test_decode_batched_rejects_prompts_outside_the_vocabulary_or_context():
    tokenizer = Tokenizer()
    model = OracleModel(tokenizer, fmt(), max_seq_len=8)
    with pytest.raises(MctError, match="not in the vocabulary"):
        decode_batched(model, tokenizer, ["1a+2="], 4)
    with pytest.raises(MctError, match="max_seq_len"):
        decode_batched(model, tokenizer, ["12345+678="], 4)


def test_evaluate_records_scores_an_oracle_perfectly_and_limits():
    tokenizer, data_format = Tokenizer(), fmt()
    model = OracleModel(tokenizer, data_format)
    records = [rec(f"{a}+{b}=", str(a + b)) for a in (0, 7, 55, 999) for b in (1, 45, 999)]
    seen = []
    report = evaluate_records(model, tokenizer, data_format, records, batch_size=5,
                              progress=lambda done, total: seen.append((done, total)))
    assert report.n == 12 and report.exact_match == 1.0 and report.malformed["count"] == 0
    assert seen[-1] == (12, 12)
    assert evaluate_records(model, tokenizer, data_format, records, limit=3).n == 3
    # the longest target "#8991<eos>" is 6 tokens; one more shows an over-long answer as wrong
    assert max_new_tokens_for(data_format, tokenizer, records, 32) == 7


def test_natural_prompts_are_rendered_for_a_padded_model(tiny_trained_checkpoint):
    """External sets write "12+34="; a zero-padded model must be asked "012+034=" and scored the same."""
    from mct.checkpoint import load_checkpoint
    from mct.data.dataset import Record
    from mct.data.format import DataFormat
    from mct.evaluate import decode_batched, evaluate_records

    checkpoint = load_checkpoint(tiny_trained_checkpoint)
    data_format = DataFormat.from_dict(checkpoint.data_format)
    assert data_format.operand_width == 3
    natural = [Record("12+34=", "46"), Record("999+1=", "1000"), Record("5+5=", "10")]
    padded = [Record(data_format.render_prompt(r.prompt), r.answer) for r in natural]
    assert [r.prompt for r in padded] == ["012+034=", "999+001=", "005+005="]
    report_natural = evaluate_records(checkpoint.model, checkpoint.tokenizer, data_format, natural)
    report_padded = evaluate_records(checkpoint.model, checkpoint.tokenizer, data_format, padded)
    assert report_natural.to_dict() == report_padded.to_dict()
    completions = decode_batched(checkpoint.model, checkpoint.tokenizer, [r.prompt for r in padded], 6)
    got = [data_format.parse_completion(c).answer for c in completions]
    assert report_natural.correct == sum(g == r.answer for g, r in zip(got, natural))
