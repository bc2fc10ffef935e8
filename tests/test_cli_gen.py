import json

import pytest

from mct.cli import main


def run(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def test_gen_add_steps_alone_gives_a_three_digit_set(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["gen", "add", "--steps"], capsys)
    assert code == 0 and out == ""
    manifest = json.loads((tmp_path / "data/add/manifest.json").read_text())
    assert manifest["counts"] == {"train": 100000, "val": 3000, "test": 2000, "hard": 234}  # unpadded: 0+0 trains
    assert (manifest["min_digits"], manifest["max_digits"]) == (1, 3) and manifest["format"]["use_steps"]
    first = json.loads((tmp_path / "data/add/train.jsonl").open().readline())
    assert first["steps"] and max(first["meta"]["digits"]) <= 3
    assert "train.jsonl" in err and "100,000" in err


def test_gen_json_prints_the_manifest_and_flags_reach_the_config(tmp_path, capsys):
    out_dir = tmp_path / "sub"
    code, out, _ = run(["gen", "sub", "--instances", "300", "--val", "20", "--test", "30", "--min-digits", "2",
                        "--max-digits", "3", "--answer-order", "plain", "--ood-digits", "4-5", "--seed", "9",
                        "--output-dir", str(out_dir), "--json"], capsys)
    assert code == 0
    manifest = json.loads(out)
    assert {k: v for k, v in manifest["counts"].items() if k != "hard"} == {"train": 300, "val": 20, "test": 30, "test_ood": 30}
    assert manifest["counts"]["hard"] > 0
    assert manifest["format"]["answer_order"] == "plain" and manifest["seed"] == 9
    assert manifest["ood_digits"] == [4, 5] and (out_dir / "test_ood.jsonl").exists()


def test_gen_reads_a_config_file_and_flags_override_it(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[data]\nn_train = 123\nn_val = 7\nn_test = 8\nmax_digits = 2\nuse_steps = true\n")
    code, out, _ = run(["gen", "mul", "--config", str(cfg), "--val", "9", "--out", str(tmp_path / "m"), "--json"], capsys)
    manifest = json.loads(out)
    assert code == 0 and {k: v for k, v in manifest["counts"].items() if k != "hard"} == {"train": 123, "val": 9, "test": 8}
    assert manifest["max_digits"] == 2 and manifest["format"]["use_steps"] is True


def test_gen_pad_writes_zero_padded_records(tmp_path, capsys):
    argv = ["gen", "add", "--pad", "--instances", "200", "--val", "10", "--test", "10", "--max-digits", "3", "--json"]
    code, out, err = run(argv + ["--out", str(tmp_path / "p")], capsys)
    manifest = json.loads(out)
    assert code == 0 and manifest["format"]["operand_width"] == 3 and "zero-padded" in err
    first = json.loads((tmp_path / "p/train.jsonl").open().readline())
    assert len(first["prompt"]) == 8 and len(first["target"]) == len("#0000<eos>")
    assert run(argv + ["--out", str(tmp_path / "q")], capsys)[0] == 0
    assert (tmp_path / "p/train.jsonl").read_bytes() == (tmp_path / "q/train.jsonl").read_bytes()
    code, out, _ = run(["gen", "add", "--no-pad", "--instances", "20", "--val", "5", "--test", "5", "--json",
                        "--out", str(tmp_path / "n")], capsys)
    assert code == 0 and json.loads(out)["format"]["operand_width"] == 0


def test_gen_pad_to_longer_pads_each_pair_and_the_folder_keeps_the_format(tmp_path, capsys):
    from mct.data.generate import data_config_from_folder

    argv = ["gen", "add", "--pad-to-longer", "--instances", "300", "--val", "10", "--test", "10", "--max-digits", "6",
            "--ood-digits", "7-9", "--json", "--out", str(tmp_path / "p")]
    code, out, err = run(argv, capsys)
    assert code == 0 and json.loads(out)["format"]["pad_to_longer"] is True and "longer operand" in err
    for split in ("train", "test_ood", "hard"):
        for line in (tmp_path / "p" / f"{split}.jsonl").open():
            record = json.loads(line)
            a, b = record["prompt"][:-1].split("+")
            assert len(a) == len(b) and len(record["target"]) == len("#") + len(a) + 1 + len("<eos>")
            assert int(a) + int(b) == int(record["answer"])
    assert data_config_from_folder(tmp_path / "p")["pad_to_longer"] is True
    code, _, err = run(["gen", "mul", "--pad-to-longer", "--out", str(tmp_path / "m")], capsys)
    assert code == 2 and "pad_to_longer applies to add and sub" in err and "Traceback" not in err


def test_gen_complement_writes_the_sign_last(tmp_path, capsys):
    argv = ["gen", "sub", "--pad-to-longer", "--complement", "--instances", "200", "--val", "10", "--test", "10",
            "--max-digits", "5", "--json", "--out", str(tmp_path / "c")]
    code, out, err = run(argv, capsys)
    assert code == 0 and json.loads(out)["format"]["sub_complement"] is True and "complement" in err
    for line in (tmp_path / "c" / "hard.jsonl").open():
        record = json.loads(line)
        a, b = (int(n) for n in record["prompt"][:-1].split("-"))
        digits, sign = record["target"][1:-len("<eos>") - 1][::-1], record["target"][-len("<eos>") - 1]
        assert int(digits) - (10 ** len(digits) if sign == "-" else 0) == a - b == int(record["answer"])
    code, _, err = run(["gen", "sub", "--complement", "--answer-order", "plain", "--out", str(tmp_path / "n")], capsys)
    assert code == 2 and "sub_complement applies to sub" in err and "Traceback" not in err


@pytest.mark.parametrize("pad", [["--pad"], []])
def test_gen_sub_is_in_ten_s_complement_unless_told_otherwise(tmp_path, capsys, pad):
    common = [*pad, "--max-digits", "3", "--instances", "50", "--val", "10", "--test", "10", "--json"]
    code, out, _ = run(["gen", "sub", *common, "--out", str(tmp_path / "auto")], capsys)
    assert code == 0 and json.loads(out)["format"]["sub_complement"] is True
    code, out, _ = run(["gen", "sub", *common, "--no-complement", "--out", str(tmp_path / "sign")], capsys)
    assert code == 0 and json.loads(out)["format"]["sub_complement"] is False
    for name, sign_first in (("auto", False), ("sign", True)):
        targets = [json.loads(line)["target"] for line in (tmp_path / name / "test.jsonl").open()]
        # complement: digits first and the sign last; sign first: a digit last
        assert all((t[1] == "-") <= sign_first and (t[-len("<eos>") - 1] in "+-") != sign_first for t in targets)


def test_gen_mod_splits_all_pairs(tmp_path, capsys):
    code, out, _ = run(["gen", "mod", "--modulus", "11", "--train-fraction", "0.5", "--out", str(tmp_path), "--json"], capsys)
    counts = json.loads(out)["counts"]
    # every pair once; the hard pairs (0+0, 10+10, 10+1...) leave the seed's partition for their own split
    assert code == 0 and sum(counts.values()) == 121 and 60 - counts["hard"] <= counts["train"] <= 60
    code, _, err = run(["gen", "mod", "--instances", "5", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "--train-fraction" in err


def test_gen_refuses_to_overwrite_without_force(tmp_path, capsys):
    argv = ["gen", "add", "--instances", "50", "--val", "5", "--test", "5", "--out", str(tmp_path)]
    assert run(argv, capsys)[0] == 0
    code, _, err = run(argv + ["--seed", "1"], capsys)
    assert code == 2 and "already holds a data set" in err and "--force" in err
    assert len(err.strip().splitlines()) == 1
    assert run(argv + ["--seed", "1", "--force"], capsys)[0] == 0


@pytest.mark.parametrize("argv,message", [
    (["gen", "add", "--max-digits", "1", "--instances", "20000"], "ask for at most 77"),  # 100 one-digit additions, 23 in the hard split (unpadded: 0+0 trains)
    (["gen", "div"], "argument TASK (data.task): Input should be 'add', 'sub', 'mul' or 'mod'"),
    (["gen", "add", "--ood-digits", "x"], "C-D"),
    (["gen", "add", "--answer-order", "sideways"], "flag --answer-order (data.answer_order): Input should be 'reversed' or 'plain'"),
    (["gen", "add", "--min-digits", "4", "--max-digits", "2"], "min_digits"),
])
def test_gen_user_mistakes_exit_2_with_one_line(tmp_path, capsys, argv, message):
    code, _, err = run(argv + ["--out", str(tmp_path / "d")], capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()


def test_ood_digits_take_two_numbers_as_well(tmp_path, capsys):
    code, out, err = run(["gen", "add", "--max-digits", "2", "--instances", "50", "--val", "10", "--test", "10",
                          "--ood-digits", "3", "5", "--out", str(tmp_path / "d"), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["ood_digits"] == [3, 5]
    code, _, err = run(["gen", "add", "7"], capsys)
    assert code == 2 and "--ood-digits C 7" in err


def test_gen_mod_with_residue_tokens_records_the_format_for_training(tmp_path, capsys):
    from mct.data.generate import data_config_from_folder

    out_dir = tmp_path / "mod"
    code, _, err = run(["gen", "mod", "--modulus", "13", "--residue-tokens", "--answer-order", "plain",
                        "--out", str(out_dir)], capsys)
    assert code == 0 and "one token per residue" in err
    assert json.loads((out_dir / "manifest.json").read_text())["format"]["residue_tokens"] is True
    assert data_config_from_folder(out_dir)["residue_tokens"] is True
    first = json.loads((out_dir / "train.jsonl").open().readline())
    assert first["target"] == f"#{first['answer']}<eos>"  # the text is the natural one
    code, _, err = run(["gen", "mod", "--residue-tokens", "--out", str(tmp_path / "bad")], capsys)
    assert code == 2 and "answer_order = \"plain\"" in err and len(err.strip().splitlines()) == 1
