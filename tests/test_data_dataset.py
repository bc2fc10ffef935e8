import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mct.config import DataConfig
from mct.data.dataset import Example, Record, collate_fn, encode_example, read_records
from mct.data.format import DataFormat
from mct.data.generate import sample_heldout, write_dataset
from mct.data.stream import GeneratedBatches, HeldOut
from mct.errors import MctError
from mct.tokenizer import Tokenizer

TOK = Tokenizer()


def ids(text):
    return TOK.encode(text)


def test_encode_example_roles_on_a_hand_checked_record():
    ex = encode_example(("1+2=", "1+2+0=03|#3<eos>"), TOK)
    assert ex.input_ids == ids("1+2=1+2+0=03|#3<eos>")
    assert ex.roles == [0] * 4 + [1] * 9 + [2] * 3


def test_masks_for_each_step_masking_mode_on_hand_checked_examples():
    with_steps = encode_example(("1+2=", "1+2+0=03|#3<eos>"), TOK)
    plain = encode_example(("9+9=", "#81<eos>"), TOK)
    batch = collate_fn([with_steps, plain], pad_id=TOK.pad_id, step_masking_mode="mask_steps")
    seq = ids("1+2=1+2+0=03|#3<eos>")
    assert batch["input_ids"].shape == (2, 16) and batch["input_ids"].dtype == torch.long
    assert batch["input_ids"][1].tolist() == ids("9+9=#81<eos>") + [TOK.pad_id] * 8
    assert batch["attention_mask"].dtype == torch.bool
    assert batch["attention_mask"][1].tolist() == [True] * 8 + [False] * 8
    assert batch["labels"][0].tolist() == [-100] * 13 + ids("#3<eos>")
    assert batch["labels"][1].tolist() == [-100] * 4 + ids("#81<eos>") + [-100] * 8
    steps_only = collate_fn([with_steps], step_masking_mode="mask_answer")["labels"][0].tolist()
    assert steps_only == [-100] * 4 + ids("1+2+0=03|") + [-100] * 3
    with pytest.raises(MctError, match="scores the steps, and these examples have none"):
        collate_fn([plain], step_masking_mode="mask_answer")  # nothing to score: a loss of 0 would learn nothing
    everything = collate_fn([with_steps, plain], step_masking_mode="none")["labels"]
    assert everything[0].tolist() == seq
    assert everything[1].tolist() == ids("9+9=#81<eos>") + [-100] * 8
    assert batch["num_truncated"] == 0


def test_long_examples_are_dropped_and_counted_never_cut():
    short = encode_example(("1+2=", "#3<eos>"), TOK)
    long = encode_example(("123+456=", "#975<eos>"), TOK)
    batch = collate_fn([short, long, short], max_seq_len=8)
    assert batch["num_truncated"] == 1 and batch["input_ids"].shape == (2, 7)
    with pytest.raises(MctError, match="max_seq_len=3"):
        collate_fn([short, long], max_seq_len=3)
    with pytest.raises(MctError, match="step_masking_mode"):
        collate_fn([short], step_masking_mode="bogus")


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_records_accepts_prompt_and_answer_only(tmp_path):
    path = write_lines(tmp_path / "ext.jsonl", ['{"prompt": "12+34=", "answer": "46"}', "", '{"prompt": "1+1=", "answer": 2}'])
    records = read_records(path, TOK)
    assert records == [Record("12+34=", "46"), Record("1+1=", "2")]
    with pytest.raises(MctError, match=r"ext.jsonl:1: .*no 'target' field"):
        read_records(path, require_target=True)


@pytest.mark.parametrize("line,message", [
    ('{"prompt": "1+1=", "answer": "2"', r"bad.jsonl:2: not valid JSON"),
    ('{"answer": "2"}', r"bad.jsonl:2: the record has no 'prompt' field"),
    ('{"prompt": "1+1=", "answer": "2", "target": "#2x<eos>"}', r"bad.jsonl:2: target: character 'x' at position 2"),
    ('{"prompt": "1 + 1=", "answer": "2"}', r"bad.jsonl:2: prompt: character ' '"),
    ('[1, 2]', r"bad.jsonl:2: a record must be a JSON object"),
    ('null', r"bad.jsonl:2: a record must be a JSON object, got null"),  # was skipped as if blank
    ('{"prompt": "1+1=", "answer": null}', r"bad.jsonl:2: the record's 'answer' is null"),
])
def test_read_records_errors_name_file_and_line(tmp_path, line, message):
    path = write_lines(tmp_path / "bad.jsonl", ['{"prompt": "1+2=", "answer": "3", "target": "#3<eos>"}', line])
    with pytest.raises(MctError, match=message):
        read_records(path, TOK)


def test_read_records_missing_or_empty_file(tmp_path):
    with pytest.raises(MctError, match="does not exist"):
        read_records(tmp_path / "none.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(MctError, match="holds no records"):
        read_records(tmp_path / "empty.jsonl")


def test_generated_files_read_back_and_encode(tmp_path):
    cfg = DataConfig(task="sub", use_steps=True, n_train=50, n_val=5, n_test=5)
    write_dataset(cfg, tmp_path)
    records = read_records(tmp_path / "train.jsonl", TOK, require_target=True)
    fmt = DataFormat.from_config(cfg)
    for r in records:
        assert r.target == fmt.target(fmt.operands_from_prompt(r.prompt))
        ex = encode_example(r, TOK)
        assert TOK.decode(ex.input_ids) == r.prompt + r.target


def _decoded_rows(ids):
    return [TOK.decode(row) for row in ids.tolist()]


def test_generated_batches_never_yield_held_out_problems_and_match_the_format():
    cfg = DataConfig(min_digits=1, max_digits=2, use_steps=True, step_masking_mode="none", n_train=5000,
                     n_val=100, n_test=100)
    val, test = sample_heldout(cfg, 2000, 2000, seed=0)
    fmt = DataFormat.from_config(cfg)
    held = {fmt.operands_from_prompt(r.prompt) for r in val + test}
    batches = GeneratedBatches(cfg, fmt, TOK, 500, "cpu", exclude=held, seed=0)
    seen = set()
    for _ in range(6):
        ids, labels = batches.next_batch()
        assert ids.shape == (500, batches.width) and labels.shape == ids.shape
        for text in _decoded_rows(ids):
            prompt = text[: text.index("=") + 1]
            assert text == prompt + fmt.target(fmt.operands_from_prompt(prompt))
            seen.add(fmt.operands_from_prompt(prompt))
        # "none": every real token carries loss, padding none
        assert torch.equal(labels != -100, ids != TOK.pad_id)
    assert not seen & held and len(seen) > 500


def _digit_rows(values, width):
    """values -> (digit rows [N, width] least significant first, lengths [N]), as the stream draws them."""
    rows = np.array([[v // 10**i % 10 for i in range(width)] for v in values], dtype=np.int64).reshape(-1, width)
    return rows, np.array([len(str(v)) for v in values], dtype=np.int64)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12).flatmap(lambda width: st.tuples(
    st.just(width),
    st.lists(st.tuples(st.integers(0, 10**width - 1), st.integers(0, 10**width - 1)), min_size=1, max_size=30),
    st.lists(st.tuples(st.integers(-5, 10**width + 5), st.integers(-5, 10**width + 5)), max_size=30))))
def test_held_out_mask_is_set_membership_for_any_width(case):
    """The numpy key path (up to 9 digits) and the Python path (longer) agree with `pair in held`, also
    for held pairs outside the digit range (which must never match a drawn problem)."""
    width, drawn, held = case
    held = set(held) | set(drawn[: len(drawn) // 2])
    a, a_len = _digit_rows([x for x, _ in drawn], width)
    b, b_len = _digit_rows([y for _, y in drawn], width)
    mask = HeldOut(held, width).mask(a, a_len, b, b_len)
    assert mask.tolist() == [pair in held for pair in drawn]


def test_generated_batches_resume_identically_from_state_dict():
    cfg = DataConfig(task="sub", n_train=1000, n_val=10, n_test=10)
    fmt = DataFormat.from_config(cfg)
    a = GeneratedBatches(cfg, fmt, TOK, 64, "cpu", exclude={(1, 2)}, seed=5)
    a.steps_per_chunk = 3  # cross chunk boundaries
    for _ in range(4):
        a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))  # plain data
    expected = [a.next_batch()[0] for _ in range(4)]
    b = GeneratedBatches(cfg, fmt, TOK, 64, "cpu", exclude={(1, 2)}, seed=5)
    b.steps_per_chunk = 3
    b.load_state_dict(state)
    assert all(torch.equal(b.next_batch()[0], x) for x in expected)
    c = GeneratedBatches(cfg, fmt, TOK, 64, "cpu", exclude={(1, 2)}, seed=5)
    c.steps_per_chunk = 3
    replay = [c.next_batch()[0] for _ in range(8)][4:]
    assert all(torch.equal(x, y) for x, y in zip(replay, expected))  # deterministic from the seed


@pytest.mark.parametrize("task", ["add", "sub", "mul"])
@pytest.mark.parametrize("layout", [dict(pad_operands=True), dict(pad_operands=False),
                                    dict(use_steps=True, max_seq_len=96),
                                    dict(use_steps=True, step_masking_mode="mask_answer", max_seq_len=96),
                                    dict(use_steps=True, step_masking_mode="none", max_seq_len=96)],
                         ids=["padded", "unpadded", "steps", "mask-answer", "none"])
def test_scored_from_is_the_first_labelled_position_of_every_batch(task, layout):
    """The last block trains only from `scored_from` on, so no batch may hold a label at or before it (it
    would be lost); and it is tight: the batches' earliest label is right after it."""
    cfg = DataConfig(task=task, min_digits=1, max_digits=2, **layout)
    batches = GeneratedBatches(cfg, DataFormat.from_config(cfg), TOK, 2000, "cpu", seed=1)
    ids, labels = batches.next_batch()
    scored = (labels[:, 1:] != -100).any(0).nonzero()[:, 0]
    assert int(scored[0]) == batches.scored_from


def test_generated_batches_are_balanced_over_carries():
    cfg = DataConfig(min_digits=3, max_digits=3, n_train=100_000)
    fmt = DataFormat.from_config(cfg)
    ids, _ = GeneratedBatches(cfg, fmt, TOK, 4000, "cpu", seed=0).next_batch()
    counts = [0] * 4
    for text in _decoded_rows(ids):
        counts[fmt.carry_stats(fmt.operands_from_prompt(text[: text.index("=") + 1]))[0]] += 1
    assert min(counts) > 0.2 * 4000  # uniform pairs would give 3 carries to ~ 7%


def test_generated_batches_give_up_when_everything_is_held_out():
    cfg = DataConfig(min_digits=1, max_digits=1)
    with pytest.raises(MctError, match="held-out"):
        GeneratedBatches(cfg, DataFormat.from_config(cfg), TOK, 8, "cpu",
                         exclude={(a, b) for a in range(10) for b in range(10)}).next_batch()


def test_a_width_above_max_seq_len_is_refused_up_front():
    cfg = DataConfig(max_digits=3, use_steps=True, max_seq_len=20)
    with pytest.raises(MctError, match=r"data.max_seq_len is 20.*at least 4\d"):
        GeneratedBatches(cfg, DataFormat.from_config(cfg), TOK, 8, "cpu")


def test_example_length():
    assert len(Example([1, 2, 3], [0, 2, 2])) == 3


@pytest.mark.parametrize("task", ["add", "sub", "mul"])
def test_generated_batches_with_padding_yield_padded_prompts_and_targets(task):
    cfg = DataConfig(task=task, min_digits=1, max_digits=3, use_steps=task != "mul", pad_operands=True,
                     modulus=113, n_train=5000, n_val=10, n_test=10)
    fmt = DataFormat.from_config(cfg)
    assert fmt.operand_width == 3
    ids, labels = GeneratedBatches(cfg, fmt, TOK, 64, "cpu", seed=2).next_batch()
    for text, row in zip(_decoded_rows(ids), labels.tolist()):
        prompt = text[: text.index("=") + 1]
        assert len(prompt) == len("000+000=")
        a, b = fmt.operands_from_prompt(prompt)
        assert prompt == fmt.prompt((a, b)) and text == prompt + fmt.target((a, b))
        # mask_steps: loss on '#', the answer and <eos> only
        answer_start = text.index("#")  # every token before the answer is one character
        assert all(v == -100 for v in row[:answer_start]) and row[answer_start] == TOK.encode("#")[0]


def test_mod_trains_on_its_training_pairs_each_epoch_in_full():
    from mct.config import Config
    from mct.data.sampling import mod_partition
    from mct.train.data import training_batches

    config = Config(data=DataConfig(task="mod", modulus=13, train_fraction=0.5, pad_operands=True, max_digits=2),
                    train={"batch_size": 84})
    fmt = DataFormat.from_config(config.data)
    train_pairs, val, test = mod_partition(13, 0.5, 0)
    data, _ = training_batches(config, TOK, fmt, set(val) | set(test), "cpu")
    for _ in range(2):  # the batch is the whole training set: the full-batch (grokking) set-up
        ids, _ = data.next_batch()
        prompts = {text[: text.index("=") + 1] for text in _decoded_rows(ids)}
        assert prompts == {fmt.prompt(p) for p in train_pairs} and len(train_pairs) == 84


@pytest.mark.parametrize("length_weights", ["equal", "sqrt", "size"])
def test_a_training_file_gives_each_operand_length_pair_its_share(tmp_path, length_weights):
    # mct gen writes each problem once: 1-digit pairs are a sliver of the file; "equal" draws them as often as
    # any other pair (as the generated stream does), "size" reads each record once per epoch, "sqrt" gives a
    # pair a share by the square root of its records
    from collections import Counter

    from mct.config import Config
    from mct.train.data import training_batches

    cfg = DataConfig(task="add", max_digits=2, n_train=3000, n_val=5, n_test=5, length_weights=length_weights)
    write_dataset(cfg, tmp_path)
    config = Config(data=cfg.model_copy(update={"train_path": tmp_path / "train.jsonl"}), train={"batch_size": 100})
    fmt = DataFormat.from_config(config.data)
    records = read_records(tmp_path / "train.jsonl", TOK, require_target=True)
    in_file = Counter((len(str(a)), len(str(b))) for a, b in (fmt.operands_from_prompt(r.prompt) for r in records))
    epoch = training_batches(config, TOK, fmt, set(), "cpu")[0].epoch_size
    config.train.batch_size = epoch  # one batch is one epoch
    data, _ = training_batches(config, TOK, fmt, set(), "cpu")
    drawn = Counter()
    seen = set()
    for text in _decoded_rows(data.next_batch()[0]):
        a, b = fmt.operands_from_prompt(text[: text.index("=") + 1])
        drawn[(len(str(a)), len(str(b)))] += 1
        seen.add((a, b))
    assert len(seen) == len(records)  # every record is drawn in an epoch
    if length_weights == "size":
        assert drawn == in_file and epoch == data.size == len(records)
    elif length_weights == "sqrt":
        assert set(drawn) == set(in_file) and all(drawn[pair] >= in_file[pair] for pair in in_file)
        for pair in in_file:  # shares by the square root of the pair's records, to rounding
            assert drawn[pair] / drawn[(2, 2)] == pytest.approx((in_file[pair] / in_file[(2, 2)]) ** 0.5, abs=0.01)
    else:
        assert in_file[(1, 1)] < in_file[(2, 2)] // 10
        assert set(drawn.values()) == {epoch // 4} and set(drawn) == set(in_file)
    state = data.state_dict()  # a resumed run draws the same next batch
    again, _ = training_batches(config, TOK, fmt, set(), "cpu")
    again.load_state_dict(state)
    assert torch.equal(again.next_batch()[0], data.next_batch()[0])


def test_padded_examples_encode_like_the_stream(tmp_path):
    cfg = DataConfig(task="add", max_digits=3, pad_operands=True, use_steps=True, n_train=50, n_val=5, n_test=5)
    write_dataset(cfg, tmp_path)
    for r in read_records(tmp_path / "train.jsonl", TOK, require_target=True):
        assert TOK.decode(encode_example(r, TOK).input_ids) == r.prompt + r.target
        assert len(r.prompt) == 8 and len(r.target) - r.target.index("#") == len("#0000<eos>")


def test_carry_mix_adds_long_carry_chains_deterministically():
    plain = DataConfig(min_digits=4, max_digits=4, n_train=100_000)
    mixed = DataConfig(min_digits=4, max_digits=4, n_train=100_000, carry_mix=0.5)

    def chains(cfg, seed=0):
        fmt = DataFormat.from_config(cfg)
        ids, _ = GeneratedBatches(cfg, fmt, TOK, 2000, "cpu", seed=seed).next_batch()
        return [fmt.carry_stats(fmt.operands_from_prompt(t[: t.index("=") + 1]))[1] for t in _decoded_rows(ids)]

    full_plain = sum(c == 4 for c in chains(plain)) / 2000  # a full 4-column chain
    full_mixed = sum(c == 4 for c in chains(mixed)) / 2000
    assert full_mixed > full_plain + 0.35  # half of the problems move to the all-carry bucket
    assert chains(mixed) == chains(mixed)  # deterministic for a seed


@pytest.mark.parametrize("weights, expected", [("equal", 0.25), ("sqrt", 90 / 160), ("size", 0.81)])
def test_length_weights_set_the_share_of_each_operand_length_pair(weights, expected):
    cfg = DataConfig(task="mul", min_digits=1, max_digits=2, pad_operands=True, length_weights=weights)
    ids, _ = GeneratedBatches(cfg, DataFormat.from_config(cfg), TOK, 4000, "cpu", seed=0).next_batch()
    both_two_digits = [min(DataFormat("mul").operands_from_prompt(t[: t.index("=") + 1])) >= 10
                       for t in _decoded_rows(ids)]
    # 8,100 of the 10,000 products; by square roots 90 of 10 + 30 + 30 + 90
    assert abs(sum(both_two_digits) / len(both_two_digits) - expected) < 0.03


def test_length_curriculum_grows_the_longest_operand():
    cfg = DataConfig(min_digits=1, max_digits=5, curriculum_steps=100, n_train=100_000)
    batches = GeneratedBatches(cfg, DataFormat.from_config(cfg), TOK, 64, "cpu", seed=0)
    longest = []
    for _ in range(120):
        ids, _ = batches.next_batch()
        longest.append(max(len(t[: t.index("+")]) for t in _decoded_rows(ids)))
    assert max(longest[:10]) == 1 and max(longest[45:55]) <= 3 and max(longest[100:]) == 5
    assert longest == sorted(longest) or max(longest[:50]) < 5  # grows, never jumps to the end early


def test_tie_mix_gives_operands_that_agree_in_their_top_digits():
    plain = DataConfig(task="sub", min_digits=1, max_digits=3, n_train=100_000)
    mixed = DataConfig(task="sub", min_digits=1, max_digits=3, n_train=100_000, tie_mix=0.6)

    def operands(cfg):
        fmt = DataFormat.from_config(cfg)
        ids, _ = GeneratedBatches(cfg, fmt, TOK, 3000, "cpu", seed=0).next_batch()
        return [fmt.operands_from_prompt(t[: t.index("=") + 1]) for t in _decoded_rows(ids)]

    for cfg, low, high in ((plain, 0.05, 0.2), (mixed, 0.55, 0.75)):  # 0.6 + 0.4 * the plain share
        same_length = [(a, b) for a, b in operands(cfg) if len(str(a)) == len(str(b))]
        assert low < sum(str(a)[0] == str(b)[0] for a, b in same_length) / len(same_length) < high
    problems = operands(mixed)
    for length in (2, 3):  # equal operands (all digits shared) at every length; plain draws almost none
        assert sum(a == b and len(str(a)) == length for a, b in problems) > 40
        assert sum(a == b and len(str(a)) == length for a, b in operands(plain)) < 15
    assert problems == operands(mixed)  # deterministic for a seed


def test_tie_mix_gives_additions_whose_top_columns_sum_to_nine():
    def nines(tie_mix):  # problems of 3 digits (both operands padded to 3) whose top column sums to 9
        cfg = DataConfig(task="add", min_digits=3, max_digits=3, pad_operands=True, n_train=100_000, tie_mix=tie_mix)
        fmt = DataFormat.from_config(cfg)
        ids, _ = GeneratedBatches(cfg, fmt, TOK, 2000, "cpu", seed=0).next_batch()
        problems = [fmt.operands_from_prompt(t[: t.index("=") + 1]) for t in _decoded_rows(ids)]
        return [(a // 100 + b // 100 == 9, (a + b) // 1000, a, b) for a, b in problems]

    plain, mixed = nines(0.0), nines(0.5)
    assert sum(top for top, *_ in plain) < 300 < sum(top for top, *_ in mixed)  # ~1/9 vs ~0.5 + 0.5/9
    all_nines = [(a, b) for _, _, a, b in mixed if a + b == 999]  # every column a tie: no carry at all
    assert len(all_nines) > 100 and all(min(a, b) >= 100 for _, _, a, b in mixed)  # lengths stay in range


def test_tie_mix_gives_additions_of_unequal_lengths_runs_of_nines_above_the_shorter_operand():
    """99999+1: above the shorter operand's top its padding 0 and the longer's 9 sum to 9 and pass a carry
    on, so the carry into the top is decided below; sub keeps ties to operands of equal length."""
    import numpy as np

    from mct.data import sampling

    buckets, weights = sampling.stream_weights("add", 1, 5, 100_000)
    a, a_len, b, b_len = sampling.sample_stream(np.random.default_rng(0), buckets, weights, 4000, 5)
    drawn = [x.copy() for x in (a, a_len, b, b_len)]
    sampling.tie_top_columns(np.random.default_rng(1), "add", a, a_len, b, b_len, 1.0)
    powers = 10 ** np.arange(5)
    x, y = (a * powers).sum(1), (b * powers).sum(1)
    assert [len(str(v)) for v in x] == a_len.tolist() and [len(str(v)) for v in y] == b_len.tolist()
    unequal = a_len != b_len
    longer = np.where((a_len > b_len)[:, None], a, b)[unequal]
    top = (np.maximum(a_len, b_len) - 1)[unequal]
    assert (np.take_along_axis(longer, top[:, None], 1)[:, 0] == 9).mean() > 0.9  # top digit 9 in (almost) all
    column_sums = a + b  # least significant first; 9 from the top down to where the tie stops
    whole = (column_sums == 9) | (np.arange(5)[None, :] >= np.maximum(a_len, b_len)[:, None])
    assert whole[unequal].all(1).mean() > 0.1  # ties through every column: no carry at all (99990+9)
    sub = [x.copy() for x in drawn]
    sampling.tie_top_columns(np.random.default_rng(1), "sub", *sub, 1.0)
    assert all((before[unequal] == after[unequal]).all() for before, after in zip(drawn, sub))


def test_chain_mix_gives_carries_that_run_through_inner_columns_and_stop():
    from mct.data.tasks import trace_add, trace_sub

    def stopping(task, chain_mix):  # problems whose one run of carries (borrows) has 2+ columns and ends inside
        cfg = DataConfig(task=task, min_digits=1, max_digits=4, n_train=100_000, chain_mix=chain_mix)
        fmt = DataFormat.from_config(cfg)
        ids, _ = GeneratedBatches(cfg, fmt, TOK, 3000, "cpu", seed=0).next_batch()
        problems = [fmt.operands_from_prompt(t[: t.index("=") + 1]) for t in _decoded_rows(ids)]
        trace = trace_add if task == "add" else trace_sub
        count = 0
        for a, b in problems:
            _, _, carries, longest = trace(a, b)
            inside = len(str(a + b)) == max(len(str(a)), len(str(b))) if task == "add" else True
            count += carries == longest >= 2 and inside
        return count, problems

    for task in ("add", "sub"):
        plain, _ = stopping(task, 0.0)
        mixed, problems = stopping(task, 0.5)
        assert mixed > 1.5 * plain, (task, plain, mixed)
        # lengths stay as drawn: every operand length pair is still there, none has a leading zero (any 1-4)
        assert {(len(str(a)), len(str(b))) for a, b in problems} == {(x, y) for x in range(1, 5) for y in range(1, 5)}
        assert problems == stopping(task, 0.5)[1]  # deterministic for a seed


@pytest.mark.parametrize("task", ["add", "sub"])
def test_plant_chains_puts_a_chain_of_two_or_more_columns_in_almost_every_row(task):
    import numpy as np

    from mct.data import sampling
    from mct.data.tasks import trace_add, trace_sub

    buckets, weights = sampling.stream_weights(task, 2, 5, 100_000)
    a, a_len, b, b_len = sampling.sample_stream(np.random.default_rng(0), buckets, weights, 3000, 5)
    before = (a.copy(), b.copy())
    sampling.plant_chains(np.random.default_rng(1), task, a, a_len, b, b_len, 0.0)
    assert (a == before[0]).all() and (b == before[1]).all()  # share 0: the draw is untouched
    sampling.plant_chains(np.random.default_rng(1), task, a, a_len, b, b_len, 1.0)
    powers = 10 ** np.arange(5)
    x, y = (a * powers).sum(1), (b * powers).sum(1)
    assert ([len(str(v)) for v in x] == a_len.tolist()) and ([len(str(v)) for v in y] == b_len.tolist())
    trace = trace_add if task == "add" else trace_sub
    chains = [trace(int(u), int(v))[3] for u, v, la, lb in zip(x, y, a_len, b_len)
              if (la != lb if task == "sub" else True) or la >= 3]  # rows with room for a run
    assert sum(c >= 2 for c in chains) / len(chains) > 0.85
    if task == "sub":  # negative results get their chain too (the larger operand's subtraction)
        negative = [trace(int(u), int(v))[3] for u, v in zip(x, y) if u < v]
        assert len(negative) > 500 and sum(c >= 2 for c in negative) / len(negative) > 0.85


def test_tie_mix_is_refused_for_tasks_without_carries():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="tie_mix"):
        DataConfig(task="mul", tie_mix=0.2)
    with pytest.raises(ValidationError, match="chain_mix"):
        DataConfig(task="mul", chain_mix=0.2)


def test_carry_mix_is_refused_for_tasks_without_carries():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="carry_mix"):
        DataConfig(task="mul", carry_mix=0.2)


def test_nines_mix_gives_factors_next_to_a_power_of_ten_and_keeps_lengths():
    def operands(nines_mix):
        cfg = DataConfig(task="mul", min_digits=1, max_digits=3, pad_operands=True, nines_mix=nines_mix)
        fmt = DataFormat.from_config(cfg)
        ids, _ = GeneratedBatches(cfg, fmt, TOK, 3000, "cpu", seed=0).next_batch()
        return [fmt.operands_from_prompt(t[: t.index("=") + 1]) for t in _decoded_rows(ids)]

    def starts_with_99(problems):  # a factor of 2 or 3 digits whose top two digits are 9s
        return sum(any(len(str(x)) >= 2 and str(x).startswith("99") for x in pair) for pair in problems)

    plain, mixed = operands(0.0), operands(0.5)
    assert starts_with_99(plain) < 150 < 400 < starts_with_99(mixed)  # ~2% plain against ~0.5 * 1/2 * 2/3 more
    assert sum(a == 999 or b == 999 for a, b in mixed) > 100  # every digit a 9 in one factor
    assert sum(a == b == 99 for a, b in mixed) > 5  # ... or in both
    lengths = {(len(str(a)), len(str(b))) for a, b in mixed}  # no length lost or gained: every pair of 1-3
    assert lengths == {(x, y) for x in range(1, 4) for y in range(1, 4)}
    assert mixed == operands(0.5)  # deterministic for a seed


def test_edge_mix_gives_zeros_nines_and_equal_digits_and_keeps_lengths():
    def operands(edge_mix):
        cfg = DataConfig(task="add", min_digits=1, max_digits=3, pad_operands=True, edge_mix=edge_mix)
        fmt = DataFormat.from_config(cfg)
        ids, _ = GeneratedBatches(cfg, fmt, TOK, 4000, "cpu", seed=0).next_batch()
        rows = [t[: t.index("=") + 1] for t in _decoded_rows(ids)]
        return [fmt.operands_from_prompt(row) for row in rows], rows

    def counts(problems):  # 3x3-digit problems with two zero digits, with a column of two 9s, equal operands
        pairs = [(str(a), str(b)) for a, b in problems if len(str(a)) == len(str(b)) == 3]
        sparse = sum(x.count("0") + y.count("0") >= 2 for x, y in pairs)
        nines = sum(any(p == q == "9" for p, q in zip(x, y)) for x, y in pairs)
        return sparse, nines, sum(x == y for x, y in pairs), len(pairs)

    (plain, _), (mixed, mixed_rows) = operands(0.0), operands(0.5)
    sparse_plain, nines_plain, equal_plain, n_plain = counts(plain)
    sparse_mixed, nines_mixed, equal_mixed, n_mixed = counts(mixed)
    assert sparse_mixed / n_mixed > 1.5 * sparse_plain / n_plain
    assert nines_mixed / n_mixed > 1.5 * nines_plain / n_plain
    assert equal_mixed > 3 * max(equal_plain, 1)  # a == b: 1 in 900 plain
    lengths = {(len(str(a)), len(str(b))) for a, b in mixed}  # no length lost or gained: every pair of 1-3
    assert lengths == {(x, y) for x in range(1, 4) for y in range(1, 4)}
    assert all(len(row) == 8 for row in mixed_rows)  # still padded to 3 digits each
    assert operands(0.5)[0] == mixed  # deterministic for a seed


@pytest.mark.parametrize("task", ["sub", "mul", "mod"])
def test_edge_mix_is_refused_for_tasks_other_than_add(task):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="edge_mix applies to add"):
        DataConfig(task=task, edge_mix=0.2)


@pytest.mark.parametrize("task", ["add", "sub", "mod"])
def test_nines_mix_is_refused_for_tasks_other_than_mul(task):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="nines_mix applies to mul"):
        DataConfig(task=task, nines_mix=0.2)


# ---- answers are checked against the problem -----------------------------------------------------------

@pytest.mark.parametrize("line,data_format,message", [
    ('{"prompt": "12-34=", "answer": "22"}', None, r"w\.jsonl:2: answer 22 is not 12-34 \(-22\)"),
    ('{"prompt": "12*34=", "answer": "99"}', None, r"w\.jsonl:2: answer 99 is not 12\*34 \(408\)"),
    ('{"prompt": "12+34=", "answer": "99", "meta": {"task": "add"}}', None, r"w\.jsonl:2: answer 99 is not 12\+34 \(46\)"),
    ('{"prompt": "100+50=", "answer": "150", "meta": {"task": "mod", "modulus": 113}}', None,
     r"w\.jsonl:2: answer 150 is not 100\+50 mod 113 \(37\)"),
    ('{"prompt": "12+34=", "answer": "99"}', DataFormat(task="add"), r"w\.jsonl:2: answer 99 is not 12\+34 \(46\)"),
    ('{"prompt": "012+034=", "answer": "046 "}', DataFormat(task="mod", modulus=7), r"answer 46 is not 012\+034 mod 7 \(4\)"),
])
def test_an_answer_that_is_not_the_problems_value_is_refused_naming_file_and_line(tmp_path, line, data_format, message):
    path = write_lines(tmp_path / "w.jsonl", ['{"prompt": "1+2=", "answer": "3"}', line])
    with pytest.raises(MctError, match=message):
        read_records(path, TOK, data_format=data_format)


def test_answers_written_differently_are_read_as_their_number(tmp_path):
    lines = ['{"prompt": "12+34=", "answer": "046", "meta": {"task": "add"}}', '{"prompt": "12+34=", "answer": "+46"}',
             '{"prompt": "12+34=", "answer": " 46 "}', '{"prompt": "12-34=", "answer": "-022"}',
             '{"prompt": "5-5=", "answer": "-0"}', '{"prompt": "5*5=", "answer": 25}']
    records = read_records(write_lines(tmp_path / "d.jsonl", lines), TOK)
    assert [r.answer for r in records] == ["46", "46", "46", "-22", "0", "25"]
    assert records[3].source == f"{tmp_path / 'd.jsonl'}:4"


@pytest.mark.parametrize("answer", ['"4x6"', '"4_6"', '""', '"4 6"', '"٤٦"'])
def test_an_answer_that_is_not_a_whole_number_is_refused(tmp_path, answer):
    path = write_lines(tmp_path / "n.jsonl", [f'{{"prompt": "12+34=", "answer": {answer}}}'])
    with pytest.raises(MctError, match=r"n\.jsonl:1: answer .* is not a whole number"):
        read_records(path)


def test_a_plus_problem_without_a_task_is_checked_against_the_models_format(tmp_path):
    # "100+50=" is add (150) or mod (37 for P = 113): without meta.task the model's format decides
    path = write_lines(tmp_path / "m.jsonl", ['{"prompt": "100+50=", "answer": "37"}'])
    assert read_records(path)[0].answer == "37"
    assert read_records(path, data_format=DataFormat(task="mod", modulus=113))[0].answer == "37"
    with pytest.raises(MctError, match=r"m\.jsonl:1: answer 37 is not 100\+50 \(150\)"):
        read_records(path, data_format=DataFormat(task="add"))


@pytest.mark.parametrize("text,message", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"prompt": "1+1=", "answer": ' + "1" * 5000 + "}", "a number too long"),
])
def test_a_json_line_python_cannot_read_is_one_error(tmp_path, text, message):
    path = write_lines(tmp_path / "deep.jsonl", [text])
    with pytest.raises(MctError, match=rf"deep\.jsonl:1: not valid JSON \({message}"):
        read_records(path)


def test_a_byte_order_mark_is_skipped(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"prompt": "12+34=", "answer": "46"}\n\xef\xbb\xbf{"prompt": "1+1=", "answer": "2"}\n')
    assert [r.prompt for r in read_records(path, TOK)] == ["12+34=", "1+1="]
