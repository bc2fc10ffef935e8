import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mct.data import tasks
from mct.data.format import DataFormat, ParsedCompletion
from mct.errors import MctError

numbers = st.integers(min_value=0, max_value=10**12)
FAST = settings(max_examples=150, deadline=None)


def digit(n: int, i: int) -> int:
    return (n // 10**i) % 10


def check_column_steps(steps, x, y, sign, answer):
    pattern = re.compile(r"^(\d)([+-])(\d)\2([01])=([01])(\d)$")
    carry, digits = 0, []
    for i, step in enumerate(steps):
        m = pattern.match(step)
        assert m, step
        xi, op, yi, c_in, c_out, d = m.group(1), m.group(2), *m.group(3, 4, 5, 6)
        xi, yi, c_in, c_out, d = map(int, (xi, yi, c_in, c_out, d))
        assert op == sign and (xi, yi) == (digit(x, i), digit(y, i)) and c_in == carry
        if sign == "+":
            assert xi + yi + c_in == 10 * c_out + d
        else:
            assert xi - yi - c_in == d - 10 * c_out
        carry = c_out
        digits.append(d)
    assert len(steps) == max(len(str(x)), len(str(y)))
    value = sum(d * 10**i for i, d in enumerate(digits)) + (carry * 10 ** len(digits) if sign == "+" else 0)
    assert value == abs(int(answer))


@FAST
@given(numbers, numbers)
def test_add_answer_and_every_column_step_are_right(a, b):
    answer, steps, carries, chain = tasks.trace_add(a, b)
    assert answer == str(a + b)
    check_column_steps(steps, a, b, "+", answer)
    carry_flags = [s[-2] == "1" for s in steps]
    assert carries == sum(carry_flags)
    assert chain == max((len(r) for r in "".join("1" if f else "0" for f in carry_flags).split("0")), default=0)


@FAST
@given(numbers, numbers)
def test_sub_answer_and_every_borrow_step_are_right(a, b):
    answer, steps, carries, _ = tasks.trace_sub(a, b)
    assert int(answer) == a - b and answer == str(a - b)
    assert answer.startswith("-") == (a < b)
    check_column_steps(steps, max(a, b), min(a, b), "-", answer)
    assert carries == sum(s[-2] == "1" for s in steps)


@FAST
@given(st.integers(0, 10**8), st.integers(0, 10**6), st.integers(0, 9))
def test_mul_steps_are_partial_products_and_running_sums_least_significant_digit_first(a, b, width):
    answer, steps, _, _ = tasks.trace_mul(a, b, width)
    assert answer == str(a * b)
    a_digits, b_digits = max(len(str(a)), width), max(len(str(b)), width)
    assert len(steps) == 2 * b_digits - 1  # a running sum per digit of the (padded) b, a partial product from the 2nd
    sums, partials = steps[0::2], steps[1::2]
    for j, step in enumerate(sums):
        assert re.fullmatch(rf"\d{{{a_digits + b_digits}}}", step), step
        assert int(step[::-1]) == a * (b % 10 ** (j + 1))
    for j, step in enumerate(partials, start=1):
        assert re.fullmatch(rf"\d{{{a_digits + 1}}}", step), step
        assert int(step[::-1]) == a * digit(b, j)
    assert int(sums[-1][::-1]) == a * b


@FAST
@given(st.integers(2, 500), st.data())
def test_mod_answer_and_steps_are_right(modulus, data):
    a = data.draw(st.integers(0, modulus - 1))
    b = data.draw(st.integers(0, modulus - 1))
    answer, steps, _, _ = tasks.trace_mod(a, b, modulus)
    assert answer == str((a + b) % modulus)
    assert steps == [f"{a}+{b}={a + b}", f"{a + b}%{modulus}={(a + b) % modulus}"]


def test_hand_checked_traces():
    assert tasks.trace_add(7, 95) == ("102", ["7+5+0=12", "0+9+1=10"], 2, 2)
    assert tasks.trace_add(999, 1)[2:] == (3, 3)
    assert tasks.trace_sub(3, 15) == ("-12", ["5-3-0=02", "1-0-0=01"], 0, 0)
    assert tasks.trace_sub(100, 1) == ("99", ["0-1-0=19", "0-0-1=19", "1-0-1=00"], 2, 2)
    assert tasks.trace_mul(123, 45) == ("5535", ["51600", "2940", "53550"], 1, 1)
    assert tasks.trace_mul(123, 45, width=3) == ("5535", ["516000", "2940", "535500", "0000", "535500"], 1, 1)
    assert tasks.trace_mul(0, 7) == ("0", ["00"], 0, 0)


@pytest.mark.parametrize("task", tasks.TASKS)
@pytest.mark.parametrize("order", ["reversed", "plain"])
@pytest.mark.parametrize("use_steps", [True, False])
@settings(max_examples=40, deadline=None)
@given(a=st.integers(0, 10**6), b=st.integers(0, 10**6))
def test_target_parses_back_to_the_answer_and_steps(task, order, use_steps, a, b):
    fmt = DataFormat(task, order, use_steps, 97 if task == "mod" else None)
    if task == "mod":
        a, b = a % 97, b % 97
    target = fmt.target((a, b))
    assert target.endswith("<eos>") and "#" in target
    parsed = fmt.parse_completion(target)
    assert parsed == ParsedCompletion(fmt.solve((a, b)), fmt.steps((a, b)) if use_steps else [], None)
    assert fmt.parse_completion(target + "<pad><pad>").answer == fmt.solve((a, b))
    assert fmt.operands_from_prompt(fmt.prompt((a, b))) == (a, b)


def test_answer_order_examples():
    fmt = DataFormat("sub")
    assert fmt.order_answer("46") == "64" and fmt.order_answer("-123") == "-321" and fmt.order_answer("100") == "001"
    assert DataFormat("add").target((12, 34)) == "#64<eos>"
    assert DataFormat("add", "plain").target((12, 34)) == "#46<eos>"
    assert DataFormat("sub", use_steps=True).target((3, 15)) == "5-3-0=02|1-0-0=01|#-21<eos>"


def test_malformed_completions_are_named():
    fmt = DataFormat("add")
    assert fmt.parse_completion("#64").malformed == "no <eos>"
    assert fmt.parse_completion("64<eos>").malformed == "no answer marker"
    assert fmt.parse_completion("#6x<eos>").malformed == "answer is not a number"
    assert fmt.parse_completion("#<eos>").malformed == "empty answer"
    assert fmt.parse_completion("#6#4<eos>").malformed == "more than one answer marker"
    assert fmt.parse_completion("#64<eos>#99").answer == "46"


def test_format_dict_round_trip_and_bad_prompts():
    fmt = DataFormat("mod", "plain", True, 113)
    assert DataFormat.from_dict(fmt.to_dict()) == fmt
    assert DataFormat("add", modulus=113).modulus is None
    with pytest.raises(MctError, match="not an add problem"):
        DataFormat("add").operands_from_prompt("12*34=")
    with pytest.raises(MctError):
        DataFormat("mul").operands_from_prompt("hello")
    with pytest.raises(MctError, match="unknown task"):
        DataFormat("div")


# --- pairs padded to the longer operand (pad_to_longer) --------------------------------------------------
def test_pairs_padded_to_the_longer_operand():
    add = DataFormat("add", pad_to_longer=True)
    assert add.prompt((7, 1234)) == "0007+1234=" and add.target((7, 1234)) == "#14210<eos>"
    assert add.prompt((999, 999)) == "999+999=" and add.target((999, 999)) == "#8991<eos>"
    assert add.prompt((0, 0)) == "0+0=" and add.target((0, 0)) == "#00<eos>"
    long = 10**39 + 7  # no length is capped
    assert add.prompt((long, 5)) == f"{long}+{5:040d}=" and add.width((long, 5)) == 40
    sub = DataFormat("sub", pad_to_longer=True)
    assert sub.prompt((12, 345)) == "012-345=" and sub.target((12, 345)) == "#-333<eos>"
    assert sub.target((5, 5)) == "#+0<eos>" and sub.target((1000, 1)) == "#+9990<eos>"
    assert add.render_prompt("7+1234=") == "0007+1234=" and add.render_prompt("0007+1234=") == "0007+1234="
    for fmt, problem in ((add, (7, 1234)), (sub, (12, 345)), (sub, (1000, 1)), (add, (0, 0))):
        completion = fmt.target(problem)
        assert fmt.parse_completion(completion).answer == fmt.solve(problem)
    steps = DataFormat("add", use_steps=True, pad_to_longer=True)
    assert steps.target((7, 12)) == "7+2+0=09|0+1+0=01|#910<eos>"
    with pytest.raises(MctError, match="pad_to_longer"):
        DataFormat("add", operand_width=3, pad_to_longer=True)
    with pytest.raises(ValueError, match="pass the operands"):
        add.ordered_answer("1241")


def test_sub_complement_writes_the_sign_last_and_parses_back():
    fmt = DataFormat("sub", pad_to_longer=True, sub_complement=True)
    assert fmt.prompt((12, 345)) == "012-345=" and fmt.target((12, 345)) == "#766-<eos>"  # 667 - 1000 = -333
    assert fmt.target((345, 12)) == "#333+<eos>" and fmt.target((5, 5)) == "#0+<eos>"
    assert fmt.target((1000, 1)) == "#9990+<eos>" and fmt.target((1, 1000)) == "#1009-<eos>"  # -999 = 9001 - 10000
    fixed = DataFormat("sub", operand_width=3, sub_complement=True)
    assert fixed.target((3, 5)) == "#899-<eos>" and fixed.target((12345, 6)) == "#93321+<eos>"  # OOD: 5 digits
    for problem in ((12, 345), (345, 12), (5, 5), (1, 1000), (0, 99999), (10**30, 10**30 + 1)):
        for f in (fmt, fixed):
            assert f.parse_completion(f.target(problem)).answer == f.solve(problem)
    assert fmt.parse_completion("#766<eos>").malformed == "answer is not a number"  # no sign
    natural = DataFormat("sub", sub_complement=True)  # unpadded: w is the longer operand's digits
    assert natural.prompt((12, 345)) == "12-345=" and natural.target((12, 345)) == "#766-<eos>"
    assert natural.target((3, 5)) == "#8-<eos>" and natural.parse_completion("#8-<eos>").answer == "-2"
    for bad in (dict(task="add"), dict(task="sub", answer_order="plain")):
        with pytest.raises(MctError, match="sub_complement applies to sub"):
            DataFormat(**{"pad_to_longer": True, **bad, "sub_complement": True})


def test_sub_complement_steps_are_the_columns_of_a_minus_b_as_written():
    """With steps, ten's complement subtracts b from a column by column without swapping them (the
    sign-first steps subtract the smaller from the larger, so their first step needs the comparison): the
    step digits are the answer's and the last borrow is its sign."""
    fmt = DataFormat("sub", use_steps=True, sub_complement=True)
    assert fmt.target((12, 345)) == "2-5-0=17|1-4-1=16|0-3-1=16|#766-<eos>"
    assert fmt.target((345, 12)) == "5-2-0=03|4-1-0=03|3-0-0=03|#333+<eos>"
    assert fmt.target((5, 5)) == "5-5-0=00|#0+<eos>"
    assert DataFormat("sub", use_steps=True).target((12, 345)) == "5-2-0=03|4-1-0=03|3-0-0=03|#-333<eos>"
    padded = DataFormat("sub", use_steps=True, operand_width=3, sub_complement=True)
    assert padded.target((3, 5)) == "3-5-0=18|0-0-1=19|0-0-1=19|#899-<eos>"
    for f in (fmt, padded):
        for problem in ((12, 345), (345, 12), (5, 5), (0, 999), (100, 1), (1, 100), (999, 999)):
            parsed = f.parse_completion(f.target(problem))
            assert parsed.answer == f.solve(problem) and parsed.steps == f.steps(problem)
            # each step's digit is the answer's digit of its column; the last step's borrow is the sign
            digits = "".join(step[-1] for step in parsed.steps)
            assert f.target(problem).endswith("#" + digits + "+-"[int(parsed.steps[-1][-2])] + "<eos>")
    # a record's meta counts the borrows of |larger| - |smaller| in both formats
    assert tasks.trace_sub(12, 345, complement=True)[2:] == tasks.trace_sub(12, 345)[2:] == (0, 0)


def test_an_unset_sub_complement_is_on_wherever_it_applies():
    """data.sub_complement unset (none): ten's complement for reversed sub, with or without steps, padded or
    not, where the sign first learned in three (padded) to four (unpadded) times the steps; the sign first
    where the format writes plain answers; false keeps the sign first."""
    from mct.config import DataConfig

    def fmt(task="sub", **fields):
        return DataFormat.from_config(DataConfig(task=task, **fields))

    assert fmt(pad_operands=True).target((12, 34)) == "#879-<eos>"
    assert fmt(pad_to_longer=True).target((12, 345)) == "#766-<eos>"
    assert fmt(pad_operands=True, sub_complement=False).target((12, 34)) == "#-220<eos>"
    assert fmt(pad_operands=True, sub_complement=True).sub_complement
    assert fmt().target((12, 345)) == "#766-<eos>" and fmt(sub_complement=False).target((12, 345)) == "#-333<eos>"
    for fields in (dict(use_steps=True), dict(pad_operands=True, use_steps=True)):
        assert fmt(**fields).sub_complement and "#-" in fmt(**fields, sub_complement=False).target((3, 5)), fields
    for fields in (dict(answer_order="plain"), dict(pad_operands=True, answer_order="plain")):
        assert not fmt(**fields).sub_complement, fields
    assert not fmt("add", pad_operands=True).sub_complement


# --- zero-padded format (operand_width) -----------------------------------------------------------------
def test_padded_format_examples():
    add = DataFormat("add", operand_width=3)
    assert add.prompt((12, 34)) == "012+034=" and add.target((12, 34)) == "#6400<eos>"
    assert add.target((999, 1)) == "#0001<eos>" and add.prompt((999, 1)) == "999+001="
    assert DataFormat("add", "plain", operand_width=3).target((12, 34)) == "#0046<eos>"
    sub = DataFormat("sub", operand_width=3)
    assert sub.prompt((12, 34)) == "012-034=" and sub.target((12, 34)) == "#-220<eos>"
    assert DataFormat("sub", "plain", operand_width=3).target((12, 34)) == "#-022<eos>"
    assert sub.target((5, 5)) == "#+000<eos>" and sub.target((34, 12)) == "#+220<eos>"
    assert DataFormat("mul", operand_width=2).target((3, 4)) == "#2100<eos>"  # 12 -> 0012 -> 2100
    assert DataFormat("mod", operand_width=3, modulus=113).target((5, 3)) == "#800<eos>"  # 8 -> 008
    assert DataFormat("mod", operand_width=3, modulus=113).answer_width == 3
    assert add.prompt((12345, 6)) == "12345+006="  # longer operands (OOD) as they are
    assert add.target((12345, 6)) == "#15321<eos>"
    # one add/sub step per padded column, so every step sits at a fixed position (OOD operands: all columns)
    add_steps = DataFormat("add", use_steps=True, operand_width=3)
    assert add_steps.target((12, 34)) == "2+4+0=06|1+3+0=04|0+0+0=00|#6400<eos>"
    assert add_steps.target((2, 1)) == "2+1+0=03|0+0+0=00|0+0+0=00|#3000<eos>"
    assert add_steps.target((99, 1)) == "9+1+0=10|9+0+1=10|0+0+1=01|#0010<eos>"
    assert add_steps.steps((1234, 5)) == ["4+5+0=09", "3+0+0=03", "2+0+0=02", "1+0+0=01"]
    sub_steps = DataFormat("sub", use_steps=True, operand_width=3)
    assert sub_steps.target((3, 5)) == "5-3-0=02|0-0-0=00|0-0-0=00|#-200<eos>"
    assert DataFormat("add", use_steps=True).target((2, 1)) == "2+1+0=03|#3<eos>"  # unpadded: natural columns
    # mul: per digit of the padded b, the partial product (from the second digit on), then the running sum
    assert DataFormat("mul", use_steps=True, operand_width=2).steps((3, 4)) == ["2100", "000", "2100"]


def test_padded_parse_completion_drops_leading_zeros():
    plain = {"add": DataFormat("add", "plain", operand_width=3), "sub": DataFormat("sub", "plain", operand_width=3)}
    assert plain["add"].parse_completion("#0046<eos>").answer == "46"
    assert plain["sub"].parse_completion("#-022<eos>").answer == "-22"
    assert plain["sub"].parse_completion("#000<eos>").answer == "0"
    assert DataFormat("add", operand_width=3).parse_completion("#6400<eos>").answer == "46"
    assert DataFormat("add", operand_width=3).parse_completion("#64<eos>").answer == "46"  # unpadded also read
    # width 0 keeps the old behaviour exactly (leading zeros are kept)
    assert DataFormat("add", "plain").parse_completion("#0046<eos>").answer == "0046"
    assert DataFormat("add").parse_completion("#6400<eos>").answer == "0046"


def test_render_prompt_and_operands_from_padded_prompts():
    fmt = DataFormat("add", operand_width=3)
    assert fmt.operands_from_prompt("012+034=") == (12, 34)
    assert fmt.render_prompt("12+34=") == "012+034=" and fmt.render_prompt("012+034=") == "012+034="
    assert fmt.render_prompt(" 0012+34= ") == "012+034="
    assert DataFormat("add").render_prompt("012+034=") == "12+34="
    assert DataFormat("sub", operand_width=4).render_prompt("7-8=") == "0007-0008="
    with pytest.raises(MctError, match="not an add problem"):
        fmt.render_prompt("12*34=")


def test_padded_format_dict_round_trip_and_old_dicts():
    fmt = DataFormat("sub", "plain", True, operand_width=5)
    assert fmt.to_dict()["operand_width"] == 5 and DataFormat.from_dict(fmt.to_dict()) == fmt
    old = {"task": "add", "answer_order": "reversed", "use_steps": True, "modulus": None}
    assert DataFormat.from_dict(old).operand_width == 0
    with pytest.raises(MctError, match="operand_width"):
        DataFormat("add", operand_width=-1)


def test_from_config_sets_the_width_only_when_padding():
    from mct.config import DataConfig

    assert DataFormat.from_config(DataConfig(max_digits=4, pad_operands=True)).operand_width == 4
    assert DataFormat.from_config(DataConfig(max_digits=4)).operand_width == 0


@pytest.mark.parametrize("task", tasks.TASKS)
@pytest.mark.parametrize("order", ["reversed", "plain"])
@pytest.mark.parametrize("use_steps", [True, False])
@settings(max_examples=40, deadline=None)
@given(width=st.integers(1, 7), a=st.integers(0, 10**7 - 1), b=st.integers(0, 10**7 - 1))
def test_padded_target_parses_back_to_the_natural_answer(task, order, use_steps, width, a, b):
    fmt = DataFormat(task, order, use_steps, 97 if task == "mod" else None, operand_width=width)
    a, b = (a % 97, b % 97) if task == "mod" else (a % 10**width, b % 10**width)
    target = fmt.target((a, b))
    answer_text = target[target.index("#") + 1:-len("<eos>")]
    assert len(answer_text.lstrip("-+")) == fmt.answer_width
    # padded subtraction signs every answer, so each digit has one position whatever the sign
    assert answer_text[0] in "+-" if task == "sub" else answer_text[0].isdigit()
    parsed = fmt.parse_completion(target)
    assert parsed == ParsedCompletion(fmt.solve((a, b)), fmt.steps((a, b)) if use_steps else [], None)
    prompt = fmt.prompt((a, b))
    assert fmt.operands_from_prompt(prompt) == (a, b) and fmt.render_prompt(f"{a}{fmt.operator}{b}=") == prompt
    if task != "mod":
        assert len(prompt) == 2 * width + 2
