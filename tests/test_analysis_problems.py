"""mct.analysis.problems: the layout of problems for analysis, teacher-forced scores, carries."""

import random

import pytest
import torch

from mct.analysis.problems import carry_into, problem_set, sample_operands, score_problems
from mct.config import DataConfig
from mct.data import tasks
from mct.data.format import DataFormat
from mct.predictor import Predictor
from mct.tokenizer import Tokenizer

TOKENIZER = Tokenizer()


def layout(**data_fields):
    fmt = DataFormat.from_config(DataConfig(**data_fields))
    return fmt, problem_set(fmt, TOKENIZER, [(12, 34), (999, 1)])


def text(ids) -> str:
    return TOKENIZER.decode(ids)


def test_padded_reversed_addition_places_every_digit():
    fmt, problems = layout(task="add", pad_operands=True, answer_order="reversed")
    assert text(problems.input_ids[0]) == "012+034=#6400<eos>"
    assert problems.num_places == 4 and problems.operand_places == 3
    row = problems.input_ids[0]
    for place, digit in enumerate("6400"):  # the units digit is written first
        position = problems.answer_positions[0, place]
        assert TOKENIZER.vocab[row[position + 1]] == digit == TOKENIZER.vocab[problems.answer_tokens[0, place]]
    assert problems.operand_positions[0, 0].tolist() == [2, 1, 0]  # a = 012: units at position 2
    assert problems.operand_positions[0, 1].tolist() == [6, 5, 4]
    labelled = [TOKENIZER.vocab[i] for i in problems.labels[0][problems.labels[0] != -100]]
    assert labelled == ["#", "6", "4", "0", "0", "<eos>"]
    assert problems.roles(TOKENIZER)[:9] == ["a2", "a1", "a0", "+", "b2", "b1", "b0", "=", "#"]


def test_plain_unpadded_answers_count_places_from_the_right_and_pad_short_rows():
    fmt, problems = layout(task="add", answer_order="plain")
    assert text(problems.input_ids[1]) == "999+1=#1000<eos>"
    assert text(problems.input_ids[0]) == "12+34=#46<eos>"  # <pad> dropped by decode
    assert problems.answer_positions[0].tolist()[2:] == [-1, -1]  # 46 has no hundreds or thousands
    units = problems.answer_positions[0, 0]
    assert TOKENIZER.vocab[problems.input_ids[0, units + 1]] == "6"
    assert problems.operand_positions[1, 1].tolist() == [4, -1, -1]  # b = 1 has one digit


def test_signed_subtraction_and_steps_keep_the_digits_in_place():
    fmt = DataFormat.from_config(DataConfig(task="sub", pad_operands=True, use_steps=True, sub_complement=False))
    problems = problem_set(fmt, TOKENIZER, [(12, 34)])
    written = text(problems.input_ids[0])
    assert written.startswith("012-034=") and written.endswith("#-220<eos>")
    assert [TOKENIZER.vocab[i] for i in problems.answer_tokens[0]] == ["2", "2", "0"]
    assert TOKENIZER.vocab[problems.labels[0][problems.labels[0] != -100][0]] == "#"  # steps are supplied
    # ten's complement (the default): the steps of 12 - 34 as written, the answer's digits after them
    fmt = DataFormat.from_config(DataConfig(task="sub", pad_operands=True, use_steps=True))
    problems = problem_set(fmt, TOKENIZER, [(12, 34)])
    assert text(problems.input_ids[0]) == "012-034=2-4-0=18|1-3-1=17|0-0-1=19|#879-<eos>"
    assert [TOKENIZER.vocab[i] for i in problems.answer_tokens[0]] == ["8", "7", "9"]


def test_ten_s_complement_places_its_digits_and_leaves_the_sign_out():
    """sub_complement writes the digits, then the sign: the sign is no answer place."""
    fmt = DataFormat.from_config(DataConfig(task="sub", pad_operands=True, sub_complement=True))
    problems = problem_set(fmt, TOKENIZER, [(12, 34), (34, 12)])
    assert text(problems.input_ids[0]).endswith("012-034=#879-<eos>")  # -22 = 978 - 1000
    assert problems.num_places == 3
    assert [TOKENIZER.vocab[i] for i in problems.answer_tokens[0]] == ["8", "7", "9"]
    assert [TOKENIZER.vocab[i] for i in problems.answer_tokens[1]] == ["2", "2", "0"]
    labelled = [TOKENIZER.vocab[i] for i in problems.labels[1][problems.labels[1] != -100]]
    assert labelled == ["#", "2", "2", "0", "+", "<eos>"]  # the sign is still scored as a token


def test_teacher_forced_exact_match_is_what_greedy_decoding_gets(tiny_trained_checkpoint):
    predictor = Predictor.from_checkpoint(tiny_trained_checkpoint, device="cpu")
    fmt, config = predictor.data_format, predictor.config
    operands = sample_operands(fmt, config.data, 200, seed=1)
    problems = problem_set(fmt, predictor.tokenizer, operands)
    score = score_problems(predictor.model, problems, batch_size=64)
    answers = predictor.answer([f"{a}+{b}=" for a, b in operands])
    greedy = torch.tensor([answer == str(a + b) for answer, (a, b) in zip(answers, operands)])
    assert torch.equal(score.exact, greedy)
    assert 0 < score.exact_match < 1  # a few steps of training: some right, some wrong
    assert len(score.digit_accuracy) == 4 and score.loss.shape == (200,)


def test_sampled_problems_are_distinct_and_mod_uses_the_runs_split():
    fmt = DataFormat.from_config(DataConfig(task="add", max_digits=2))
    operands = sample_operands(fmt, DataConfig(task="add", max_digits=2), 300)
    assert len(set(operands)) == 300
    data = DataConfig(task="mod", modulus=11, train_fraction=0.5)
    mod = DataFormat.from_config(data)
    train, test = set(sample_operands(mod, data, 999, split="train")), set(sample_operands(mod, data, 999))
    assert train and test and not train & test
    assert len(sample_operands(mod, data, 0, split="all")) == 121


def test_carries_match_the_column_arithmetic_of_every_task():
    rng = random.Random(0)
    for _ in range(300):
        a, b = rng.randrange(10_000), rng.randrange(10_000)
        steps = tasks.trace_add(a, b)[1]  # "x+y+c=co d", least significant first
        for column, step in enumerate(steps[1:], start=1):
            assert carry_into("add", a, b, column) == int(steps[column - 1].split("=")[1][0])
            assert carry_into("add", a, b, column) == int(step.split("+")[2].split("=")[0])
        borrows = tasks.trace_sub(a, b)[1]
        for column in range(1, len(borrows)):
            assert carry_into("sub", a, b, column) == int(borrows[column - 1].split("=")[1][0])
        borrows = tasks.trace_sub(a, b, complement=True)[1]  # ten's complement: the columns of a - b
        for column in range(1, len(borrows)):
            assert carry_into("sub", a, b, column, complement=True) == int(borrows[column - 1].split("=")[1][0])
        x, y = rng.randrange(1000), rng.randrange(1000)
        product = str(x * y)[::-1]
        xd, yd = [int(c) for c in str(x)[::-1]], [int(c) for c in str(y)[::-1]]
        for column in range(len(product)):
            column_sum = sum(p * q for i, p in enumerate(xd) for j, q in enumerate(yd) if i + j == column)
            assert (column_sum + carry_into("mul", x, y, column)) % 10 == int(product[column])
            assert (column_sum + carry_into("mul", x, y, column)) // 10 == carry_into("mul", x, y, column + 1)
    assert carry_into("mod", 7, 5, 1) == 1 and carry_into("mod", 3, 5, 1) == 0
    with pytest.raises(Exception):
        carry_into("div", 1, 1, 1)
