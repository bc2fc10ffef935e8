"""`mct eval`, `mct generate`, `mct attn` on a tiny random checkpoint: output structure and error paths."""

import json

import pytest
import torch

from cli_helpers import run_main as run
from tiny_checkpoint import make_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "probs.jsonl"
    problems = [(12, 34), (99, 1), (5, 5), (123, 877), (7, 0), (450, 55)]
    path.write_text("".join(json.dumps({"prompt": f"{a}+{b}=", "answer": str(a + b)}) + "\n" for a, b in problems))
    return path


def assert_one_line_error(code, err, *needles):
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


# ---- mct eval ---------------------------------------------------------------------------------


def test_eval_json_has_the_promised_keys(ckpt, data_file, capsys):
    code, out, _ = run(["eval", ckpt, data_file, "--json", "--device", "cpu"], capsys)
    assert code == 0
    report = json.loads(out)
    for key in ("n", "exact_match", "per_digit_accuracy", "by_carries", "by_max_carry_chain", "by_digits",
                "malformed", "steps"):
        assert key in report
    assert report["n"] == 6 and 0.0 <= report["exact_match"] <= 1.0
    assert sum(group["n"] for group in report["by_digits"].values()) == 6
    assert sum(group["n"] for group in report["by_carries"].values()) == 6


def test_eval_tables_go_to_stderr_and_errors_file_is_jsonl(ckpt, data_file, tmp_path, capsys):
    errors = tmp_path / "fails.jsonl"
    code, out, err = run(["eval", ckpt, data_file, "--errors", errors, "--limit", "4", "--batch-size", "3",
                          "--no-cache"], capsys)
    assert code == 0 and out == ""
    assert "exact match" in err and "longest carry chain" in err and "answer digit" in err
    lines = [json.loads(line) for line in errors.read_text().splitlines()]
    assert all({"prompt", "expected", "got"} <= set(line) for line in lines)
    assert len(lines) <= 4
    code, _, err = run(["eval", ckpt, data_file, "--errors", errors], capsys)
    assert_one_line_error(code, err, "--force")


def test_eval_reads_a_split_of_a_data_folder(ckpt, data_file, tmp_path, capsys):
    (tmp_path / "val.jsonl").write_text(data_file.read_text())
    code, out, _ = run(["eval", ckpt, tmp_path, "--split", "val", "--json"], capsys)
    assert code == 0 and json.loads(out)["n"] == 6
    code, _, err = run(["eval", ckpt, tmp_path], capsys)
    assert_one_line_error(code, err, "test.jsonl", "val")
    (tmp_path / "hard.jsonl").write_text(data_file.read_text())  # mct gen writes a hard split too
    code, out, _ = run(["eval", ckpt, tmp_path, "--split", "hard", "--json"], capsys)
    assert code == 0 and json.loads(out)["n"] == 6
    code, _, err = run(["eval", ckpt, tmp_path, "--split", "train"], capsys)
    assert_one_line_error(code, err, "test, val, test_ood, hard")


def test_eval_reads_a_folder_written_by_the_data_generator(ckpt, tmp_path, capsys):
    from mct.config import DataConfig
    from mct.data.generate import write_dataset

    write_dataset(DataConfig(n_train=10, n_val=4, n_test=7, max_digits=3, max_seq_len=24), tmp_path / "data")
    code, out, _ = run(["eval", ckpt, tmp_path / "data", "--json"], capsys)
    assert code == 0 and json.loads(out)["n"] == 7


def test_eval_empty_or_missing_data_is_a_one_line_error(ckpt, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert_one_line_error(*run(["eval", ckpt, empty], capsys)[::2])
    assert_one_line_error(*run(["eval", ckpt, tmp_path / "none.jsonl"], capsys)[::2], "does not exist")


def test_eval_record_with_a_character_outside_the_vocabulary(ckpt, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "1a+2=", "answer": "3"}) + "\n")
    assert_one_line_error(*run(["eval", ckpt, bad], capsys)[::2])


def test_eval_of_another_tasks_data_is_a_one_line_error(ckpt, tmp_path, capsys):
    sub = tmp_path / "sub.jsonl"
    sub.write_text(json.dumps({"prompt": "12+34=", "answer": "46"}) + "\n"
                   + json.dumps({"prompt": "34-12=", "answer": "22", "meta": {"task": "sub"}}) + "\n")
    assert_one_line_error(*run(["eval", ckpt, sub], capsys)[::2], "sub problem", "trained on add")
    assert_one_line_error(*run(["eval", ckpt, sub], capsys)[::2], f"{sub}:2: '34-12=' is a sub problem")


@pytest.mark.parametrize("prompt,padded,message", [("1+1", False, "prompt '1+1' is not an add problem"),
                                                   ("1234+5=", True, "prompt '1234+5=' has an operand of 4 digits")])
def test_a_prompt_the_model_cannot_read_is_named_by_file_and_line(tmp_path, capsys, prompt, padded, message):
    """These were refused without saying where; blank lines count, as in an editor."""
    ckpt = make_checkpoint(tmp_path / "model.pt", pad_operands=padded)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "12+34=", "answer": "46"}) + "\n\n"
                   + json.dumps({"prompt": prompt, "answer": str(eval(prompt.rstrip("=")))}) + "\n")
    assert_one_line_error(*run(["eval", ckpt, bad], capsys)[::2], f"{bad}:3: {message}")


@pytest.fixture(scope="module")
def steps_ckpts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("steps")
    return {mode: make_checkpoint(folder / f"{mode}.pt", use_steps=True, max_seq_len=64, step_masking_mode=mode)
            for mode in ("none", "mask_steps", "mask_answer")}


@pytest.mark.parametrize("mode, scored, supplied", [("none", "answer", False), ("mask_steps", "answer", True),
                                                    ("mask_answer", "steps", False)])
def test_eval_says_which_step_masking_mode_and_what_is_scored(steps_ckpts, data_file, mode, scored, supplied,
                                                              capsys):
    code, out, _ = run(["eval", steps_ckpts[mode], data_file, "--json", "--device", "cpu"], capsys)
    assert code == 0
    report = json.loads(out)
    assert (report["step_masking_mode"], report["scored"], report["steps_supplied"]) == (mode, scored, supplied)
    assert (report["steps"] is None) == supplied
    code, _, err = run(["eval", steps_ckpts[mode], data_file, "--device", "cpu"], capsys)
    assert code == 0 and f"exact match ({scored})" in err
    assert any("step masking" in line and f" {mode}:" in line for line in err.splitlines())


def test_generate_of_a_mask_steps_model_shows_the_supplied_steps(steps_ckpts, capsys):
    code, out, _ = run(["generate", steps_ckpts["mask_steps"], "12+34=", "--json", "--device", "cpu"], capsys)
    assert code == 0
    result = json.loads(out)["results"][0]
    assert result["supplied"] == "2+4+0=06|1+3+0=04|" and result["scored"] == "answer"
    assert result["steps"][:2] == ["2+4+0=06", "1+3+0=04"] and result["expected"] == "46"
    code, _, err = run(["generate", steps_ckpts["mask_steps"], "12+34=", "--explain", "--max-new-tokens", "2"],
                       capsys)
    assert code == 0 and "reference steps supplied" in err
    code, out, _ = run(["generate", steps_ckpts["mask_answer"], "12+34=", "--json"], capsys)
    result = json.loads(out)["results"][0]
    assert result["scored"] == "steps" and result["expected"] == "2+4+0=06|1+3+0=04|" and result["answer"] is None


# ---- mct generate -----------------------------------------------------------------------------


def test_generate_json_gives_completion_and_natural_answer(ckpt, capsys):
    code, out, _ = run(["generate", ckpt, "12+34=", "99+1", "--json", "--max-new-tokens", "6"], capsys)
    assert code == 0
    data = json.loads(out)
    assert [r["prompt"] for r in data["results"]] == ["12+34=", "99+1="]
    for result in data["results"]:
        assert {"completion", "answer", "malformed", "expected", "correct"} <= set(result)
    assert data["results"][1]["expected"] == "100"


def test_generate_explain_shows_candidates(ckpt, capsys):
    code, out, _ = run(["generate", ckpt, "12+34=", "--explain", "--json", "--top", "3",
                        "--max-new-tokens", "3"], capsys)
    assert code == 0
    steps = json.loads(out)["results"][0]["explain"]
    assert 1 <= len(steps) <= 3 and all(len(s["candidates"]) == 3 for s in steps)
    code, out, err = run(["generate", ckpt, "12+34=", "--explain", "--max-new-tokens", "3"], capsys)
    assert code == 0 and "top candidates" in err and "mct generate" in err


def test_generate_sampling_with_a_seed_repeats(ckpt, capsys):
    argv = ["generate", ckpt, "12+34=", "--temperature", "1.5", "--seed", "3", "--json"]
    first = json.loads(run(argv, capsys)[1])["results"]
    second = json.loads(run(argv, capsys)[1])["results"]
    assert first == second


@pytest.mark.parametrize("flags,message", [
    (["--top", "3"], "--top sets how many candidates --explain shows"),
    (["--top-k", "3"], "--top-k applies to sampling"),
    (["--seed", "3"], "--seed applies to sampling"),
    (["--seed", "3", "--temperature", "0"], "pass --temperature T (T > 0)"),
])
def test_generate_refuses_a_flag_that_would_change_nothing(ckpt, capsys, flags, message):
    """Greedy decoding has nothing to sample, and --top only shapes --explain: these were ignored."""
    assert_one_line_error(*run(["generate", ckpt, "12+34=", *flags], capsys)[::2], message)


def test_generate_reads_its_settings_from_the_environment_under_the_flags(ckpt, capsys, monkeypatch):
    monkeypatch.setenv("MCT_GENERATE__TEMPERATURE", "1.5")
    monkeypatch.setenv("MCT_GENERATE__TOP_K", "2")
    data = json.loads(run(["generate", ckpt, "12+34=", "--json"], capsys)[1])
    assert (data["temperature"], data["top_k"]) == (1.5, 2)
    data = json.loads(run(["generate", ckpt, "12+34=", "--json", "--temperature", "0"], capsys)[1])
    assert (data["temperature"], data["top_k"]) == (0.0, 2)
    monkeypatch.setenv("MCT_GENERATE__TOP_K", "0")
    code, out, err = run(["generate", ckpt, "12+34="], capsys)
    assert code == 2 and out == "" and "MCT_GENERATE__TOP_K (generate.top_k)" in err


# ---- mct attn ---------------------------------------------------------------------------------


def test_attn_shows_every_head_and_json_weights(ckpt, capsys):
    code, out, err = run(["attn", ckpt, "12+34="], capsys)
    assert code == 0 and out == ""
    assert all(f"layer {l} head {h}" in err for l in range(2) for h in range(2))
    code, out, _ = run(["attn", ckpt, "12+34=", "--json", "--layer", "1", "--head", "0"], capsys)
    data = json.loads(out)
    T = len(data["tokens"])
    assert data["layers"] == [1] and data["heads"] == [0]
    assert len(data["weights"][0][0]) == T and len(data["weights"][0][0][0]) == T


def test_attn_out_writes_a_png(ckpt, tmp_path, capsys):
    out = tmp_path / "attn.png"
    code, _, err = run(["attn", ckpt, "12+34=", "--out", out, "--layer", "0"], capsys)
    assert code == 0 and out.read_bytes().startswith(b"\x89PNG") and "wrote" in err
    assert_one_line_error(*run(["attn", ckpt, "12+34=", "--out", out], capsys)[::2], "--force")
    assert_one_line_error(*run(["attn", ckpt, "12+34=", "--out", tmp_path / "a.jpg"], capsys)[::2], ".png")
    assert_one_line_error(*run(["attn", ckpt, "12+34=", "--layer", "7"], capsys)[::2], "out of range")


# ---- bad input to every command ---------------------------------------------------------------


def commands(ckpt, prompt, data):
    return [["generate", ckpt, prompt], ["attn", ckpt, prompt]] + ([["eval", ckpt, data]] if data else [])


@pytest.mark.parametrize("prompt, needle", [("12a+3=", "not in the vocabulary"), ("1" * 30 + "+1=", "max_seq_len")])
def test_bad_prompts_exit_2_with_one_line(ckpt, prompt, needle, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": prompt, "answer": "0"}) + "\n")
    for argv in commands(ckpt, prompt, data):
        assert_one_line_error(*run(argv, capsys)[::2], needle if argv[0] != "eval" else "")


def test_a_longer_operand_than_a_padded_model_reads_names_the_length_generalising_configs(tmp_path, capsys):
    padded = make_checkpoint(tmp_path / "padded.pt", pad_operands=True, max_seq_len=32)  # operands of 3 digits
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "1234+5=", "answer": "1239"}) + "\n")
    for argv in commands(padded, "1234+5=", data):
        assert_one_line_error(*run(argv, capsys)[::2], "4 digits", "zero-padded to 3", "configs/add-coupled.toml")
    assert run(["generate", padded, "123+5="], capsys)[0] == 0  # the trained width itself is fine


@pytest.mark.parametrize("task, symbol, fix", [("sub", "-", "configs/sub-coupled.toml"),
                                               ("mul", "*", "train with a larger data.max_digits")])
def test_a_longer_operand_names_the_fix_for_the_models_own_task(task, symbol, fix, tmp_path, capsys):
    """A padded sub model points to the subtraction recipe that generalises; mul has none to point to."""
    padded = make_checkpoint(tmp_path / "padded.pt", task=task, pad_operands=True, max_seq_len=48)
    code, _, err = run(["generate", padded, f"1234{symbol}5="], capsys)
    assert_one_line_error(code, err, "4 digits", "zero-padded to 3", fix)
    assert "add-coupled" not in err


def test_missing_truncated_and_foreign_checkpoints_exit_2(ckpt, data_file, tmp_path, capsys):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(ckpt.read_bytes()[:300])
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    for bad in (tmp_path / "missing.pt", truncated, foreign, text):
        for argv in commands(bad, "12+34=", data_file):
            assert_one_line_error(*run(argv, capsys)[::2])


def test_eval_plot_draws_exact_match_by_operand_length(ckpt, data_file, tmp_path, capsys):
    plot = tmp_path / "length.png"
    code, out, err = run(["eval", str(ckpt), str(data_file), "--plot", str(plot), "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert sum(group["n"] for group in report["by_length"].values()) == report["n"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = run(["eval", str(ckpt), str(data_file), "--plot", str(plot)], capsys)
    assert_one_line_error(code, err, "already exists", "--force")
    code, _, err = run(["eval", str(ckpt), str(data_file), "--plot", str(plot), "--force"], capsys)
    assert code == 0 and f"wrote exact match by operand length to {plot}" in err.replace("\n", "")


@pytest.mark.parametrize("text,needle", [
    ('{"prompt": "12+34=", "answer": "99"}', "w.jsonl:1: answer 99 is not 12+34 (46)"),
    ("[" * 100_000 + "]" * 100_000, "w.jsonl:1: not valid JSON (nested too deeply"),
])
def test_eval_refuses_a_bad_record_in_one_line_naming_file_and_line(ckpt, tmp_path, capsys, text, needle):
    bad = tmp_path / "w.jsonl"
    bad.write_text(text + "\n")
    assert_one_line_error(*run(["eval", ckpt, bad], capsys)[::2], needle)


def test_eval_reads_a_file_with_a_byte_order_mark_and_answers_with_leading_zeros(ckpt, tmp_path, capsys):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf' + json.dumps({"prompt": "12+34=", "answer": "046"}).encode() + b"\n")
    code, out, err = run(["eval", ckpt, path, "--json", "--errors", tmp_path / "e.jsonl"], capsys)
    assert code == 0, err
    assert json.loads(out)["n"] == 1
    assert all(json.loads(line)["expected"] == "46" for line in (tmp_path / "e.jsonl").read_text().splitlines())
