import hashlib
import json
import random
from collections import Counter

import pytest

from mct.config import DataConfig
from mct.data import sampling
from mct.data.format import DataFormat
from mct.data.generate import hard_split, generate_splits, make_record, plan_splits, sample_heldout, write_dataset
from mct.data.tasks import carry_stats
from mct.errors import MctError


def small(**kw) -> DataConfig:
    base = dict(n_train=2000, n_val=200, n_test=300)
    base.update(kw)
    return DataConfig(**base)


def operands(records, fmt):
    return {fmt.operands_from_prompt(r.prompt) for r in records}


@pytest.mark.parametrize("task", ["add", "sub", "mul"])
def test_splits_are_disjoint_distinct_and_of_the_asked_size(task):
    cfg = small(task=task, ood_digits=(4, 5))
    fmt = DataFormat.from_config(cfg)
    splits = generate_splits(cfg)
    sets = {name: operands(recs, fmt) for name, recs in splits.items()}
    counts = {n: len(r) for n, r in splits.items()}
    assert counts == {"train": 2000, "val": 200, "test": 300, "test_ood": 300, "hard": len(hard_split(cfg))}
    assert all(len(sets[n]) == len(splits[n]) for n in splits)  # no duplicates inside a split
    names = list(sets)
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            assert not sets[x] & sets[y], (x, y)
    assert all(max(r.meta["digits"]) > 3 for r in splits["test_ood"])
    assert all(1 <= d <= 3 for r in splits["train"] for d in r.meta["digits"])


def test_mod_uses_every_pair_once_with_the_train_fraction():
    cfg = small(task="mod", modulus=23, train_fraction=0.4)
    splits = generate_splits(cfg)
    fmt = DataFormat.from_config(cfg)
    all_pairs = [p for recs in splits.values() for p in operands(recs, fmt)]
    assert len(all_pairs) == len(set(all_pairs)) == 23 * 23
    # the partition is the seed's; the hard pairs (0+0, 22+22, 22+1...) leave it for a split of their own
    assert round(0.4 * 23 * 23) - len(splits["hard"]) <= len(splits["train"]) <= round(0.4 * 23 * 23)
    assert abs(len(splits["val"]) - len(splits["test"])) <= 1
    r = splits["train"][0]
    assert r.meta["modulus"] == 23 and int(r.answer) == sum(fmt.operands_from_prompt(r.prompt)) % 23


def test_same_config_gives_byte_identical_files(tmp_path):
    cfg = small(use_steps=True, ood_digits=(4, 4), seed=7)
    write_dataset(cfg, tmp_path / "a")
    write_dataset(cfg, tmp_path / "b")
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "test_ood.jsonl", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    write_dataset(small(use_steps=True, ood_digits=(4, 4), seed=8), tmp_path / "c")
    assert (tmp_path / "a" / "train.jsonl").read_bytes() != (tmp_path / "c" / "train.jsonl").read_bytes()


@pytest.mark.parametrize("task", ["add", "sub", "mul", "mod"])
@pytest.mark.parametrize("order,steps", [("reversed", True), ("plain", False)])
@pytest.mark.parametrize("pad", [False, True])
def test_written_lines_equal_the_reference_records_and_the_manifest_hashes(tmp_path, task, order, steps, pad):
    cfg = small(task=task, answer_order=order, use_steps=steps, modulus=17, n_train=500, pad_operands=pad,
                ood_digits=None if task == "mod" or pad else (4, 4))
    manifest = write_dataset(cfg, tmp_path)
    fmt = DataFormat.from_config(cfg)
    for name, filename in manifest["files"].items():
        data = (tmp_path / filename).read_bytes()
        assert hashlib.sha256(data).hexdigest() == manifest["sha256"][name]
        lines = data.decode().splitlines()
        assert len(lines) == manifest["counts"][name]
        for line in lines[:300]:
            record = json.loads(line)
            a, b = fmt.operands_from_prompt(record["prompt"])
            assert line == json.dumps(make_record(fmt, a, b).to_dict())
    assert manifest["disjoint"] is True and manifest["task"] == task and manifest["format"] == fmt.to_dict()
    assert manifest["format"]["operand_width"] == (3 if pad else 0)
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest


@pytest.mark.parametrize("task,pad", [("sub", False), ("sub", True), ("add", True)])
def test_vector_path_matches_reference_on_long_operands(task, pad):
    cfg = small(task=task, min_digits=14, max_digits=18, use_steps=True, n_train=300, n_val=10, n_test=10,
                pad_operands=pad)
    fmt = DataFormat.from_config(cfg)
    from mct.data.generate import _line_formatter

    a, b = plan_splits(cfg)["train"]
    text = _line_formatter(fmt)(a, b)
    assert text.splitlines() == [json.dumps(make_record(fmt, x, y).to_dict()) for x, y in zip(a, b)]


def test_length_pairs_are_balanced_and_small_spaces_taken_whole():
    cfg = small(n_train=30000, n_val=100, n_test=100)
    splits = generate_splits(cfg)
    everything = Counter(tuple(r.meta["digits"]) for recs in splits.values() for r in recs)
    assert everything[(1, 1)] == 100 and everything[(1, 2)] == everything[(2, 1)] == 900  # all there is
    counts = Counter(tuple(r.meta["digits"]) for name, recs in splits.items() if name != "hard" for r in recs)
    big = [counts[p] for p in [(2, 3), (3, 2), (3, 3), (2, 2), (1, 3), (3, 1)]]
    assert max(big) - min(big) <= 1


@pytest.mark.parametrize("n, k", [(1681, 300), (100, 99), (100, 1), (5, 5), (7, 2)])
def test_fewer_problems_than_length_pairs_spread_over_the_whole_range(n, k):
    """A split smaller than its number of length pairs takes one problem from pairs spread from the shortest
    to the longest: `--ood-digits 60-100 --test 300` used to stop at 83 digits (the smallest pairs first)."""
    chosen = sampling.spread(n, k)
    assert len(set(chosen)) == k and min(chosen) == 0 and (k == 1 or max(chosen) == n - 1)


def test_a_split_smaller_than_its_length_pairs_reaches_the_longest_operands():
    pairs = sampling.length_pairs(60, 100)  # 1,681 pairs, 300 problems
    a, b = sampling.draw(sampling.make_rng(0, "t"), sampling.space_buckets("add", pairs), 300, "t")
    longest = Counter(max(len(str(x)), len(str(y))) for x, y in zip(a, b))
    first = Counter(len(str(x)) for x in a)  # the first operand's length: one problem per pair, evenly spread
    assert len(a) == 300 and min(longest) == 60 and max(longest) == 100 and len(first) == 41


def _uniform_share_with_same_lengths(task, records, threshold, seed=0):
    """Share of max_carry_chain >= threshold when each record's operands are redrawn uniformly at its lengths."""
    rng, hits = random.Random(seed), 0
    for r in records:
        (lo_a, n_a), (lo_b, n_b) = (sampling.length_range(d) for d in r.meta["digits"])
        hits += carry_stats(task, lo_a + rng.randrange(n_a), lo_b + rng.randrange(n_b))[1] >= threshold
    return hits / len(records)


@pytest.mark.parametrize("task", ["add", "sub"])
def test_carry_balance_puts_long_chains_far_above_uniform_sampling(task):
    train = generate_splits(small(task=task, max_digits=4, n_train=6000))["train"]
    balanced = sum(r.meta["max_carry_chain"] >= 2 for r in train) / len(train)
    assert balanced > 1.5 * _uniform_share_with_same_lengths(task, train, 2)


def test_each_carry_count_is_equally_represented():
    train = generate_splits(small(task="sub", min_digits=4, max_digits=4, n_train=4000))["train"]
    by_borrows = Counter(r.meta["carries"] for r in train)
    assert sorted(by_borrows) == [0, 1, 2, 3]  # the top column of x - y (x >= y) never borrows
    assert max(by_borrows.values()) - min(by_borrows.values()) <= 0.05 * len(train)
    long_chains = sum(r.meta["max_carry_chain"] >= 3 for r in train) / len(train)
    assert long_chains > 1.8 * _uniform_share_with_same_lengths("sub", train, 3)


def test_meta_matches_the_problem():
    for r in generate_splits(small(task="sub", n_train=500))["train"]:
        a, b = DataFormat("sub").operands_from_prompt(r.prompt)
        assert r.meta["digits"] == [len(str(a)), len(str(b))]
        assert (r.meta["carries"], r.meta["max_carry_chain"]) == carry_stats("sub", a, b)
        assert int(r.answer) == a - b


def test_every_problem_of_a_bucket_is_reachable_exactly_once():
    for task in ("add", "sub"):
        for group in sampling.space_buckets(task, sampling.length_pairs(1, 2)):
            seen = set()
            for bucket in group:
                for i in range(bucket.index_space):
                    p = bucket.unrank(i)
                    if p is not None:
                        assert carry_stats(task, *p)[0] == bucket.carries
                        seen.add(p)
            la, lb = group[0].digits
            assert len(seen) == sampling.length_range(la)[1] * sampling.length_range(lb)[1]


def test_too_many_problems_is_an_error_with_the_maximum(tmp_path):
    config = DataConfig(min_digits=1, max_digits=1, n_train=20000)
    left = 100 - len(hard_split(config))  # one-digit additions, less those of the hard split
    with pytest.raises(MctError, match=f"only {left} exist; ask for at most {left}"):
        write_dataset(config, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_refuses_to_overwrite_without_force(tmp_path):
    write_dataset(small(ood_digits=(4, 4)), tmp_path)
    before = (tmp_path / "train.jsonl").read_bytes()
    with pytest.raises(MctError, match="already holds a data set.*force=True"):
        write_dataset(small(seed=3), tmp_path)
    assert (tmp_path / "train.jsonl").read_bytes() == before
    manifest = write_dataset(small(seed=3), tmp_path, force=True)
    assert (tmp_path / "train.jsonl").read_bytes() != before
    assert not (tmp_path / "test_ood.jsonl").exists() and "test_ood" not in manifest["files"]


def test_progress_callback_counts_every_record(tmp_path):
    seen = []
    write_dataset(small(), tmp_path, progress=lambda done, total: seen.append((done, total)))
    total = 2500 + len(hard_split(small()))  # train, val, test and the hard split
    assert seen[0] == (0, total) and seen[-1] == (total, total)


def test_ood_digits_must_reach_past_training():
    with pytest.raises(MctError, match="must reach past"):
        plan_splits(small(ood_digits=(2, 3)))


def test_sample_heldout_is_disjoint_and_balanced():
    val, test = sample_heldout(small(), 300, 400, seed=1)
    fmt = DataFormat("add")
    assert len(val) == 300 and len(test) == 400
    assert not operands(val, fmt) & operands(test, fmt)
    assert len(operands(val, fmt) | operands(test, fmt)) == 700
    mod_val, mod_test = sample_heldout(small(task="mod", modulus=11), 10, 10, seed=0)
    fmt = DataFormat("mod", modulus=11)
    assert len(mod_val) == 10 and not operands(mod_val, fmt) & operands(mod_test, fmt)


def test_padded_records_have_fixed_width_prompts_and_natural_answers_and_meta(tmp_path):
    cfg = small(task="add", max_digits=3, pad_operands=True, n_train=300, n_val=20, n_test=20)
    manifest = write_dataset(cfg, tmp_path)
    fmt = DataFormat.from_dict(manifest["format"])
    assert fmt.operand_width == 3
    for line in (tmp_path / "train.jsonl").read_text().splitlines():
        r = json.loads(line)
        a, b = fmt.operands_from_prompt(r["prompt"])
        assert len(r["prompt"]) == len("000+000=") and r["answer"] == str(a + b)
        assert r["meta"]["digits"] == [len(str(a)), len(str(b))]
        assert len(r["target"]) == len("#0000<eos>") and fmt.parse_completion(r["target"]).answer == r["answer"]
    # longer operands: no model trained on this set could read them (its test_ood was unreadable)
    with pytest.raises(MctError, match="--pad.*test_ood split could not be evaluated.*--pad-to-longer"):
        write_dataset(small(task="add", max_digits=3, pad_operands=True, ood_digits=(4, 5)), tmp_path / "ood")
    assert not (tmp_path / "ood").exists()


def test_padded_gen_is_deterministic_and_differs_from_unpadded(tmp_path):
    cfg = small(task="sub", use_steps=True, pad_operands=True, seed=4)
    write_dataset(cfg, tmp_path / "a")
    write_dataset(cfg, tmp_path / "b")
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    write_dataset(small(task="sub", use_steps=True, seed=4), tmp_path / "c")
    padded = [json.loads(x) for x in (tmp_path / "a" / "train.jsonl").read_text().splitlines()]
    natural = [json.loads(x) for x in (tmp_path / "c" / "train.jsonl").read_text().splitlines()]
    assert [r["answer"] for r in padded] == [r["answer"] for r in natural]  # same problems, same order
    assert any(p["prompt"] != n["prompt"] for p, n in zip(padded, natural))


def test_sample_heldout_uses_the_padded_format():
    val, test = sample_heldout(small(task="mul", max_digits=2, pad_operands=True), 30, 30, seed=0)
    fmt = DataFormat("mul", operand_width=2)
    for r in val + test:
        assert r.prompt == fmt.prompt(fmt.operands_from_prompt(r.prompt)) and len(r.prompt) == 6
        assert r.target == fmt.target(fmt.operands_from_prompt(r.prompt))


def test_ten_digit_operands_sample_without_overflow():
    """Carry-count tables of 10-digit columns exceed int64; sampling must still work (regression)."""
    from mct.config import DataConfig
    from mct.data.generate import sample_heldout

    config = DataConfig(task="add", min_digits=1, max_digits=10, pad_operands=True)
    val, test = sample_heldout(config, 50, 60, seed=3)
    prompts = [r.prompt for r in val + test]
    assert len(set(prompts)) == 110
    for record in val + test:
        a, b = record.prompt[:-1].split("+")
        assert len(a) == len(b) == 10 and int(record.answer) == int(a) + int(b)


# ---- a data folder is checked against its manifest ----------------------------------------------------

@pytest.fixture
def folder(tmp_path):
    write_dataset(small(max_digits=2, n_train=100, n_val=10, n_test=10), tmp_path / "d")
    return tmp_path / "d"


def edit_manifest(folder, change):
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("change,message", [
    (lambda m: m.pop("sha256"), "has no sha256 of the train split"),
    (lambda m: m["sha256"].update(val=None), "has no sha256 of the val split"),
    (lambda m: m.pop("counts"), "has no record count of the train split"),
    (lambda m: m["counts"].update(train=5), "train.jsonl holds 100 records but .*manifest.json says 5"),
    (lambda m: m["files"].update(test="nothere.jsonl"), "nothere.jsonl is listed in .* but does not exist"),
])
def test_a_split_the_manifest_cannot_vouch_for_is_refused(folder, change, message):
    from mct.data.generate import data_config_from_folder

    edit_manifest(folder, change)
    with pytest.raises(MctError, match=message):
        data_config_from_folder(folder)
    data_config_from_folder(folder.parent / "d", verify=False)  # a hand-written folder: skip the check


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.jsonl", "sub/../../outside.jsonl", "link.jsonl", ".", 7])
def test_a_split_outside_the_data_folder_is_refused_also_without_verify(folder, name):
    from mct.data.generate import data_config_from_folder

    (folder.parent / "outside.jsonl").write_text((folder / "train.jsonl").read_text())
    (folder / "link.jsonl").symlink_to(folder.parent / "outside.jsonl")
    edit_manifest(folder, lambda m: (m["files"].update(train=name), m["sha256"].update(train=None)))
    for verify in (True, False):
        with pytest.raises(MctError, match="as the train split, which is not a file in"):
            data_config_from_folder(folder, verify=verify)


def test_a_manifest_with_a_byte_order_mark_reads(folder):
    from mct.data.generate import data_config_from_folder

    path = folder / "manifest.json"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert data_config_from_folder(folder)["train_path"] == str(folder / "train.jsonl")


@pytest.mark.parametrize("modulus,empty", [(2, "the train, val and test splits empty"), (3, "the train split empty")])
def test_a_modulus_too_small_for_every_split_is_refused_before_writing(tmp_path, modulus, empty):
    with pytest.raises(MctError, match=f"mod {modulus} leaves {empty} .*use a larger data.modulus"):
        write_dataset(small(task="mod", modulus=modulus), tmp_path / "m")
    assert not (tmp_path / "m" / "manifest.json").exists()
    counts = write_dataset(small(task="mod", modulus=4), tmp_path / "m4")["counts"]
    assert min(counts[name] for name in ("train", "val", "test")) > 0
