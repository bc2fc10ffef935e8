"""The batch path (tensor operations) writes exactly the tokens of the text path, for every format."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mct.data import sampling, tasks
from mct.data.format import DataFormat
from mct.data.render import BatchRenderer, Digits, labels_for
from mct.data.stream import render_problems, sequence_width
from mct.config import DataConfig
from mct.errors import MctError
from mct.tokenizer import Tokenizer

TOK = Tokenizer()


def problems_strategy(task: str, max_digits: int):
    if task == "mod":
        number = st.integers(0, 112)
    elif task == "mul":
        number = st.integers(0, 10**max_digits - 1)
    else:  # add/sub at any length, well past int64
        number = st.one_of(st.integers(0, 999), st.integers(0, 10**max_digits - 1))
    return st.lists(st.tuples(number, number), min_size=1, max_size=12)


@pytest.mark.parametrize("task", tasks.TASKS)
@pytest.mark.parametrize("order", ["reversed", "plain"])
@pytest.mark.parametrize("use_steps", [False, True])
@pytest.mark.parametrize("width", [0, 4, "longer", "complement-0", "complement-4", "complement-longer", "residues"])
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_batch_ids_equal_the_encoded_text(task, order, use_steps, width, data):
    max_digits = {"add": 30, "sub": 30, "mul": 6, "mod": 3}[task]
    problems = data.draw(problems_strategy(task, max_digits))
    modulus = 113 if task == "mod" else None
    if width == "longer" and task in ("mul", "mod"):  # padding to the longer operand is an add/sub format
        with pytest.raises(MctError, match="pad_to_longer applies to add and sub"):
            DataFormat(task, order, use_steps, modulus, pad_to_longer=True)
        return
    if str(width).startswith("complement") and (task != "sub" or order != "reversed"):
        with pytest.raises(MctError, match="sub_complement applies to sub"):  # a reversed sub format only
            DataFormat(task, order, use_steps, modulus, operand_width=4, sub_complement=True)
        return
    tok = TOK
    if width == "residues" and (task != "mod" or use_steps or order != "plain"):
        with pytest.raises(MctError, match="residue_tokens .* applies to the mod task"):
            DataFormat(task, order, use_steps, modulus, residue_tokens=True)
        return
    if width == "residues":
        fmt = DataFormat(task, order, use_steps, modulus, residue_tokens=True)
        tok = fmt.tokenizer()
    elif str(width).startswith("complement"):
        longer = width.endswith("longer")
        fmt = DataFormat(task, order, use_steps, modulus, operand_width=0 if longer else int(width.split("-")[1]),
                         pad_to_longer=longer, sub_complement=True)
    elif width == "longer":
        fmt = DataFormat(task, order, use_steps, modulus, pad_to_longer=True)
    else:
        fmt = DataFormat(task, order, use_steps, modulus, operand_width=width)
    rendered = BatchRenderer(fmt, tok).render(Digits.from_ints([p[0] for p in problems]),
                                              Digits.from_ints([p[1] for p in problems]))
    for i, problem in enumerate(problems):
        text = fmt.prompt(problem) + fmt.target(problem)
        n = int(rendered["lengths"][i])
        assert rendered["input_ids"][i, :n].tolist() == tok.encode(text), text
        assert (rendered["input_ids"][i, n:] == tok.pad_id).all() and (rendered["roles"][i, n:] == -1).all()
        # roles: prompt up to '=', steps up to '#', then the answer
        roles = rendered["roles"][i, :n].tolist()
        prompt_len = len(tok.encode(fmt.prompt(problem)))
        mark = prompt_len + len(tok.encode(text[len(fmt.prompt(problem)):text.index("#")]))
        assert roles == [0] * prompt_len + [1] * (mark - prompt_len) + [2] * (n - mark)


@given(st.lists(st.integers(0, 10**40), min_size=1, max_size=20))
def test_digits_round_trip_at_any_size(numbers):
    digits = Digits.from_ints(numbers)
    assert digits.to_ints() == numbers
    assert digits.lengths.tolist() == [len(str(n)) for n in numbers]
    assert Digits.from_ints(np.array([n % 10**17 for n in numbers], dtype=np.int64)).to_ints() == \
        [n % 10**17 for n in numbers]


@pytest.mark.parametrize("mode,kept", [("none", {0, 1, 2}), ("mask_steps", {2}), ("mask_answer", {1})])
def test_labels_follow_the_step_masking_mode(mode, kept):
    fmt = DataFormat("add", use_steps=True)
    rendered = BatchRenderer(fmt, TOK).render(Digits.from_ints([12, 7]), Digits.from_ints([34, 95]))
    labels = labels_for(rendered["input_ids"], rendered["roles"], mode)
    has_loss = labels != -100
    role_kept = torch.zeros_like(has_loss)
    for role in kept:
        role_kept |= rendered["roles"] == role
    assert torch.equal(has_loss, role_kept)
    assert torch.equal(labels[has_loss], rendered["input_ids"][has_loss])


def test_render_problems_matches_the_collate_path():
    from mct.data.dataset import collate_fn, encode_example

    fmt = DataFormat("sub", use_steps=True, operand_width=3)
    problems = [(12, 345), (999, 1), (0, 0), (500, 500)]
    ids, labels = render_problems(fmt, TOK, problems, "mask_steps")
    batch = collate_fn([encode_example((fmt.prompt(p), fmt.target(p)), TOK) for p in problems], pad_id=TOK.pad_id)
    assert torch.equal(ids, batch["input_ids"]) and torch.equal(labels, batch["labels"])


@pytest.mark.parametrize("task", ["add", "sub", "mul"])
def test_sequence_width_is_the_longest_example(task):
    config = DataConfig(task=task, max_digits=3, use_steps=True)
    fmt = DataFormat.from_config(config)
    longest = max(len(TOK.encode(fmt.prompt((a, b)) + fmt.target((a, b))))
                  for a in range(0, 1000, 37) for b in (0, 1, 99, 100, 999, 998))
    assert sequence_width(fmt, TOK, config) >= longest
    assert sequence_width(fmt, TOK, config) == len(TOK.encode(fmt.prompt((999, 999)) + fmt.target((999, 999)))) \
        or task == "sub"


@pytest.mark.parametrize("task", ["add", "sub"])
@settings(max_examples=10, deadline=None)
@given(la=st.integers(1, 25), lb=st.integers(1, 25), seed=st.integers(0, 2**32))
def test_stream_samples_have_the_bucket_lengths_and_carries(task, la, lb, seed):
    """The column sampler draws problems of exactly its bucket (length pair, carry count), at any length."""
    buckets = sampling.space_buckets(task, [(la, lb)])[0]
    rng = np.random.default_rng(seed)
    for bucket in buckets[:: max(1, len(buckets) // 4)]:
        a, b = bucket.sample_digits(rng, 5)
        for x, y in zip(Digits(torch.from_numpy(a), torch.full((5,), la)).to_ints(),
                        Digits(torch.from_numpy(b), torch.full((5,), lb)).to_ints()):
            assert (len(str(x)), len(str(y))) == (la, lb)
            assert tasks.carry_stats(task, x, y)[0] == bucket.carries


def test_stream_sampling_is_uniform_within_a_bucket():
    bucket = sampling.space_buckets("add", [(1, 1)])[0][1]  # one-digit pairs with a carry: 45 problems
    a, b = bucket.sample_digits(np.random.default_rng(0), 45_000)
    counts = np.unique(a[:, 0] * 10 + b[:, 0], return_counts=True)[1]
    assert len(counts) == bucket.size == 45 and counts.min() > 800 and counts.max() < 1200
