"""The hard split: chains that stop inside the number, and the split's invariants."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from mct.data.hard import stopping_chain, hard_problems
from mct.data.tasks import trace_add, trace_sub


@st.composite
def chains(draw):
    length = draw(st.integers(3, 30))
    through = draw(st.integers(1, length - 2))
    start = draw(st.integers(0, length - 2 - through))
    return draw(st.sampled_from(["add", "sub"])), length, start, through, draw(st.integers(0, 2**32))


@settings(max_examples=300, deadline=None)
@given(chains())
def test_astopping_chain_carries_exactly_through_its_columns(case):
    task, length, start, through, seed = case
    a, b = stopping_chain(task, length, start, through, random.Random(seed))
    assert len(str(a)) == length and len(str(b)) == length
    trace = trace_add if task == "add" else trace_sub
    _, _, carries, longest = trace(a, b)
    # one run of carries (borrows): the start column and the `through` columns above it, and no other
    assert carries == longest == through + 1
    if task == "add":
        assert len(str(a + b)) == length  # the run ends inside the number: no carry out of the top
    else:
        assert a > b


def test_the_hard_split_holdsstopping_chains_of_every_inner_length():
    for task in ("add", "sub"):
        problems = hard_problems(task, 1, 6)
        assert problems == hard_problems(task, 1, 6)  # deterministic
        assert len(problems) == len(set(problems))
        trace = trace_add if task == "add" else trace_sub
        stopping = {}
        for a, b in problems:
            _, _, carries, longest = trace(a, b)
            ends_inside = len(str(a + b)) == len(str(max(a, b))) if task == "add" else True
            if carries == longest >= 2 and ends_inside and len(str(a)) == len(str(b)):
                stopping.setdefault(len(str(a)), set()).add(longest)
        for length in range(3, 7):  # a run through 1 to length - 2 columns, at every operand length
            assert set(range(2, length)) <= stopping[length], (task, length, stopping.get(length))
        if task == "sub":  # and each with a negative result too
            assert any(a < b and trace(a, b)[3] >= 2 for a, b in problems)


def test_zero_minus_zero_and_zero_plus_zero_not_padded_to_a_width_are_left_to_training():
    # the one problem that shows a first operand 0 need not give a negative answer, and, unpadded, the one
    # sum written "0"; padded, 0 + 0 looks like any other sum and stays a test of generalisation
    assert (0, 0) not in hard_problems("sub", 1, 3) and (0, 0) not in hard_problems("sub", 1, 3, padded=False)
    assert (0, 0) not in hard_problems("add", 1, 3, padded=False) and (0, 0) in hard_problems("add", 1, 3)
    assert (0, 9) in hard_problems("sub", 1, 3) and (0, 999) in hard_problems("add", 1, 3, padded=False)
    assert (0, 0) in hard_problems("mul", 1, 3, padded=False)  # 0 x b is 0 for every b
    # padded to the longer operand, 0 + 0 is still written "0+0=": left to training like the unpadded one
    from mct.config import load_config
    from mct.data.generate import hard_split

    longer = load_config(None, overrides={"data": {"pad_to_longer": True, "max_digits": 3}}, environ={}).data
    fixed = load_config(None, overrides={"data": {"pad_operands": True, "max_digits": 3}}, environ={}).data
    assert (0, 0) not in hard_split(longer) and (0, 0) in hard_split(fixed) and (0, 999) in hard_split(longer)


def test_mod_hard_problems_are_pairs_of_residues():
    for modulus in (2, 3, 113):
        assert all(a < modulus and b < modulus for a, b in hard_problems("mod", 1, 3, modulus))
