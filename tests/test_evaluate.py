"""Metrics of `score_completions` on hand-made completions, and `evaluate_records` on oracle and tiny
models, under each step masking mode."""

import pytest

from mct.config import DataConfig
from mct.data.dataset import Record
from mct.data.format import DataFormat
from mct.errors import MctError
from mct.evaluate import EvalReport, evaluate_records, score_completions
from mct.generation import decode_batched, max_new_tokens_for
from mct.tokenizer import Tokenizer
from tiny_checkpoint import OracleModel, make_checkpoint


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
    # the report names the answer format: ten's complement (the default for sub), or the sign first
    assert report.sub_complement and report.to_dict()["sub_complement"] is True
    assert score_completions(fmt(), [rec("1+2=", "3")], ["#3<eos>"]).sub_complement is False


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


# ---- step masking: what is decoded and scored follows the training -------------------------------

STEP_RECORDS = [rec("12+34=", "46"), rec("58+67=", "125"), rec("9+9=", "18")]


def test_mask_steps_supplies_the_reference_steps_and_scores_the_answer():
    tokenizer, data_format = Tokenizer(), fmt(use_steps=True)
    model = OracleModel(tokenizer, data_format, max_seq_len=64, step_masking_mode="mask_steps")
    report = evaluate_records(model, tokenizer, data_format, STEP_RECORDS, step_masking_mode="mask_steps")
    assert report.exact_match == 1.0 and report.malformed["count"] == 0
    assert report.scored == "answer" and report.steps_supplied and report.steps is None
    assert report.step_masking_mode == "mask_steps"
    assert sorted(model.prompts) == sorted(r.prompt + "".join(s + "|" for s in data_format.steps(
        data_format.operands_from_prompt(r.prompt))) for r in STEP_RECORDS)
    assert model.calls[-1][1] == len("#521<eos>") - 4 + 1  # the answer's tokens and one of slack
    # the old protocol asked this model for steps it was never trained to write: 0%
    assert evaluate_records(model, tokenizer, data_format, STEP_RECORDS).exact_match == 0.0


def test_a_real_mask_steps_model_is_given_the_steps_and_decodes_only_the_answer(tmp_path, monkeypatch):
    from mct.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(make_checkpoint(tmp_path / "steps.pt", use_steps=True, max_seq_len=64))
    assert checkpoint.config.data.step_masking_mode == "mask_steps"
    model, tokenizer = checkpoint.model, checkpoint.tokenizer
    data_format = DataFormat.from_dict(checkpoint.data_format)
    decoded, generate = [], model.generate

    def recording_generate(input_ids, max_new_tokens, attention_mask=None, **options):
        decoded.extend(tokenizer.decode(row[keep].tolist()) for row, keep in zip(input_ids, attention_mask))
        decoded.append(max_new_tokens)
        return generate(input_ids, max_new_tokens, attention_mask, **options)

    monkeypatch.setattr(model, "generate", recording_generate)
    report = evaluate_records(model, tokenizer, data_format, STEP_RECORDS[:2],
                              step_masking_mode=checkpoint.config.data.step_masking_mode)
    assert decoded == ["12+34=2+4+0=06|1+3+0=04|", "58+67=8+7+0=15|5+6+1=12|", 6]  # '#', 3 digits, <eos>, slack
    assert report.n == 2 and report.steps_supplied and report.scored == "answer"


def test_mask_answer_decodes_the_steps_exactly_and_scores_them():
    tokenizer, data_format = Tokenizer(), fmt(use_steps=True)
    model = OracleModel(tokenizer, data_format, max_seq_len=64, step_masking_mode="mask_answer")
    report = evaluate_records(model, tokenizer, data_format, STEP_RECORDS, step_masking_mode="mask_answer")
    # the oracle keeps writing made-up steps after the right ones: each completion is cut at its steps
    assert report.exact_match == 1.0 and report.scored == "steps" and report.malformed["count"] == 0
    assert report.steps == {"steps_correct": 1.0, "steps_wrong_count": 0}
    assert report.per_digit_accuracy == {} and not report.steps_supplied
    data = report.to_dict()
    assert data["scored"] == "steps" and data["step_masking_mode"] == "mask_answer"


def test_mask_answer_scores_wrong_steps_as_wrong_whatever_the_answer():
    data_format = fmt(use_steps=True)
    right = "2+4+0=06|1+3+0=04|"
    report = score_completions(data_format, STEP_RECORDS[:1] * 3, [right, "2+4+0=06|1+3+0=05|", "2+4+0=06|#64"],
                               step_masking_mode="mask_answer")
    assert report.correct == 1 and report.by_carries == {"0": {"n": 3, "exact_match": pytest.approx(1 / 3)}}
    assert report.errors[0]["expected"] == right and report.errors[0]["got"] == "2+4+0=06|1+3+0=05|"
    assert report.malformed["by_reason"] == {"answer marker or <eos> before the steps end": 1}


def test_formats_without_steps_score_the_answer_whatever_the_mode():
    report = score_completions(fmt(), ADD, ["#64<eos>", "#001<eos>", "#01<eos>"], step_masking_mode="mask_steps")
    assert report.exact_match == 1.0 and report.step_masking_mode == "none" and not report.steps_supplied


@pytest.mark.parametrize("record, other", [(rec("5-3=", "2"), "sub"), (rec("5*3=", "15"), "mul"),
                                           (rec("5+3=", "8", meta={"task": "mod"}), "mod")])
def test_records_of_another_task_are_refused_in_one_line(record, other):
    tokenizer, data_format = Tokenizer(), fmt()
    with pytest.raises(MctError, match=f"record 2: .* is a {other} problem but the model was trained on add"):
        evaluate_records(OracleModel(tokenizer, data_format), tokenizer, data_format, [ADD[0], record])


def test_evaluate_records_refuses_a_wrong_answer_before_decoding():
    # "+" records without meta.task are add or mod: the model's format decides, before any decoding
    records = [rec("12+34=", "46"), Record("100+50=", "150", source="ext.jsonl:2")]
    with pytest.raises(MctError, match=r"^ext\.jsonl:2: answer 150 is not 100\+50 mod 113 \(37\)"):
        evaluate_records(None, Tokenizer(), fmt(task="mod", modulus=113), records)
    with pytest.raises(MctError, match=r"^record 1: answer 46 is not 12\+34 mod 7 \(4\)"):
        evaluate_records(None, Tokenizer(), fmt(task="mod", modulus=7), records)


def test_an_answer_with_leading_zeros_scores_as_its_number():
    report = score_completions(fmt(), [rec("12+34=", "046"), rec("1+1=", "+2")], ["#64<eos>", "#2<eos>"])
    assert report.correct == 2 and report.errors == []
