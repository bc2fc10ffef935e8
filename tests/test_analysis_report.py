"""`mct analyze` and its parts: attention share, ablation and the causal check of named heads, direct logit
attribution, carry probes, the Fourier analysis of mod models, the report files and page, and the CLI."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mct.analysis import circuits, fourier
from mct.analysis.problems import problem_set, sample_operands, score_problems
from mct.analysis.probes import train_probes
from mct.analysis.report import analyze, render_html
from mct.checkpoint import load_checkpoint
from mct.cli import main
from mct.data.format import DataFormat
from mct.errors import MctError

sys.path.insert(0, str(Path(__file__).parent))
from analysis_runs import train_mod_run  # noqa: E402


@pytest.fixture(scope="module")
def loaded(tiny_trained_checkpoint):
    checkpoint = load_checkpoint(tiny_trained_checkpoint)
    fmt = DataFormat.from_dict(checkpoint.data_format)
    problems = problem_set(fmt, checkpoint.tokenizer, sample_operands(fmt, checkpoint.config.data, 160))
    return checkpoint, problems


@pytest.fixture(scope="module")
def add_report(tiny_trained_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "analysis"
    return analyze(tiny_trained_checkpoint, out, problems=160), out


@pytest.fixture(scope="module")
def mod_run(tmp_path_factory):
    return train_mod_run(tmp_path_factory.mktemp("mod") / "run")


# ---- heads ------------------------------------------------------------------------------------------

def test_attention_share_is_the_attention_on_the_aligned_operand_digits(loaded):
    checkpoint, problems = loaded
    model = checkpoint.model
    share = circuits.attention_share(model, problems, "add")  # [L, H, K]
    assert share.shape == (2, 4, 4) and bool(((share >= 0) & (share <= 1 + 1e-5)).all())
    _, cache = model.run_with_cache(problems.input_ids, problems.attention_mask, no_grad=True)
    query = int(problems.answer_positions[0, 1])  # the tens digit; padded layout: the same in every row
    keys = [int(problems.operand_positions[0, side, p]) for side in (0, 1) for p in (0, 1)]
    expected = cache["pattern", 1][:, 2, query, keys].sum(-1).mean()
    assert share[1, 2, 1] == pytest.approx(float(expected), abs=1e-5)


def test_ablation_sweep_and_named_heads_are_measured_causally(loaded):
    checkpoint, problems = loaded
    model = checkpoint.model
    sweep = circuits.ablation_sweep(model, problems)
    share = circuits.attention_share(model, problems, "add")
    check = circuits.check_digit(model, problems, sweep, share, place=0)
    again = circuits.ablate(model, problems, check.named, sweep.means)
    assert check.named_drop == pytest.approx(sweep.clean.digit_accuracy[0] - again.digit_accuracy[0])
    assert all(len(c) == len(check.named) and not set(c) & set(check.named) for c in check.control_sets)
    assert len(check.control_drops) == len(check.control_sets) > 0
    assert check.explained == circuits.explains(check.named_drop, check.control_drops)


def test_a_head_that_writes_nothing_changes_nothing_and_is_never_credited(loaded):
    checkpoint, problems = loaded
    model = load_checkpoint(checkpoint.path).model
    with torch.no_grad():
        model.blocks[1].attn.out_proj.weight.view(-1, 4, 8)[:, 3] = 0.0  # L1H3 writes nothing
    sweep = circuits.ablation_sweep(model, problems)
    assert sweep.drop("zero", (1, 3)) == 0 and sweep.drop("mean", (1, 3), 0) == 0


def test_without_attention_no_set_of_heads_explains_a_digit(loaded):
    checkpoint, problems = loaded
    model = load_checkpoint(checkpoint.path).model
    with torch.no_grad():
        for block in model.blocks:
            block.attn.out_proj.weight.zero_()
    sweep = circuits.ablation_sweep(model, problems)
    share = circuits.attention_share(model, problems, "add")
    checks = [circuits.check_digit(model, problems, sweep, share, k) for k in range(problems.num_places)]
    assert all(not c.explained and c.named_drop == 0 for c in checks)


def test_direct_logit_attributions_sum_to_the_logit_difference(loaded):
    checkpoint, problems = loaded
    model, tokenizer = checkpoint.model, checkpoint.tokenizer
    digits = [tokenizer.token_to_id[str(d)] for d in range(10)]
    dla, labels = circuits.direct_logit_attribution(model, problems, digits, batch_size=64)
    assert labels[:2] == ["L0H0", "L0H1"] and labels[-4:] == ["L0 MLP", "L1 MLP", "embeddings", "biases"]
    with torch.no_grad():
        logits, _, _ = model(problems.input_ids, problems.attention_mask)
    for place in range(problems.num_places):
        position = problems.answer_positions[:, place]
        rows = logits[torch.arange(len(position)), position]  # [N, V]
        difference = rows.gather(1, problems.answer_tokens[:, place:place + 1])[:, 0] - rows[:, digits].mean(-1)
        assert dla[:, place].sum() == pytest.approx(float(difference.mean()), abs=1e-3)


# ---- probes and Fourier -------------------------------------------------------------------------------

def test_probes_read_a_linear_label_and_not_noise():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(400, 3, 16, generator=generator)
    y = torch.stack([(x[:, 1, 0] > 0).long(), torch.randint(0, 2, (400,), generator=generator)], 1)  # [N, 2]
    accuracy = train_probes(x[:200], y[:200], x[200:], y[200:], classes=2)  # [T, C]
    assert accuracy[1, 0] > 0.95  # the label is written at position 1
    assert accuracy[0, 0] < 0.7 and accuracy[:, 1].max() < 0.7  # nowhere else, and noise is not readable


def test_fourier_basis_is_orthonormal_and_finds_the_frequency_of_a_wave():
    basis, freqs = fourier.fourier_basis(13)
    assert torch.allclose(basis @ basis.T, torch.eye(13, dtype=basis.dtype), atol=1e-10)
    assert freqs[:3] == [0, 1, 1] and max(freqs) == 6
    a = torch.arange(13, dtype=torch.float32)
    wave = torch.cos(2 * torch.pi * 4 * (a[:, None] + a[None, :]) / 13)  # a neuron of Nanda's kind
    shares, total = fourier.neuron_spectrum(wave[:, :, None], 13)
    assert int(shares[:, 0].argmax()) + 1 == 4 and shares[3, 0] == pytest.approx(1.0, abs=1e-5)


def test_restricted_loss_with_every_frequency_is_the_plain_loss(mod_run):
    checkpoint = load_checkpoint(mod_run)
    fmt, data = DataFormat.from_dict(checkpoint.data_format), checkpoint.config.data
    grid = fourier.mod_grid(fmt, checkpoint.tokenizer, 13)
    train_rows = torch.tensor([pair in set(sample_operands(fmt, data, 999, split="train")) for pair in grid.operands])
    everything = fourier.progress_measures(checkpoint.model, grid, 13, list(range(1, 7)), train_rows)
    clean = score_problems(checkpoint.model, grid)
    assert everything["restricted_loss"] == pytest.approx(clean.mean_loss, abs=1e-4)
    nothing = fourier.progress_measures(checkpoint.model, grid, 13, [], train_rows)
    assert nothing["excluded_loss"] == pytest.approx(float(clean.loss[train_rows].mean()), abs=1e-4)


# ---- the report -------------------------------------------------------------------------------------

def test_report_holds_every_measurement_and_its_figures(add_report):
    report, out = add_report
    saved = json.loads((out / "report.json").read_text())
    assert saved["task"] == "add" and saved["places"] == ["units", "tens", "hundreds", "thousands"]
    assert len(saved["heads"]) == 8 and len(saved["attention_share"]) == 8
    assert set(saved["ablation"]) == {"zero", "mean"} and len(saved["ablation"]["mean"]["digit_drop"][0]) == 4
    for digit in saved["digits"]:
        assert {"named_heads", "named_drop", "control_drops", "explained"} <= set(digit)
    assert len(saved["direct_logit_attribution"]["components"]) == 8 + 2 + 2
    assert [c["column"] for c in saved["probes"]["columns"]] == [1, 2, 3]
    assert saved["mod"] is None
    assert set(saved["figures"]) == {"attention_share", "ablation", "causal_check", "direct_logit_attribution",
                                     "probes"}
    for name in saved["figures"].values():
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every digit has a sentence, and the sentence says what the numbers say
    for digit in saved["digits"]:
        place = saved["places"][digit["place"]]
        line = next(f for f in saved["findings"] if f"{place} digit" in f and "heads" in f or f"{place} digit is" in f)
        assert ("No small set" in line) != digit["explained"]


def test_mod_report_draws_the_progress_over_the_runs_checkpoints(mod_run, tmp_path):
    report = analyze(mod_run, tmp_path / "mod", problems=100)
    mod = report["mod"]
    assert [p["step"] for p in mod["progress"]] == [10, 20, 30]
    assert {"train_loss", "test_loss", "restricted_loss", "excluded_loss"} <= set(mod["progress"][0])
    assert mod["progress"][-1]["train_loss"] < mod["progress"][0]["train_loss"]  # it trained
    assert 1 <= len(mod["spectrum"]["key_frequencies"]) <= fourier.MAX_KEY_FREQUENCIES
    assert {"fourier", "grokking"} <= set(report["figures"])
    assert any("Key frequencies" in line for line in report["findings"])
    only_best = analyze(mod_run, tmp_path / "one", problems=100, checkpoints=[mod_run])
    assert len(only_best["mod"]["progress"]) == 1
    assert any("keep checkpoints" in line for line in only_best["findings"])


def test_checkpoints_of_another_run_are_named_and_a_wrong_path_refused(mod_run, tiny_trained_checkpoint, tmp_path):
    report = analyze(mod_run, None, problems=50, checkpoints=[mod_run, tiny_trained_checkpoint])
    assert report["mod"]["skipped_checkpoints"] == [f"{tiny_trained_checkpoint}: not a step of this run"]
    assert any("1 checkpoint file left out of the curve" in line and str(tiny_trained_checkpoint) in line
               for line in report["findings"])
    with pytest.raises(MctError, match="no such file or folder"):
        analyze(mod_run, None, problems=50, checkpoints=[tmp_path / "typo"])
    with pytest.raises(MctError, match="trained on the add task: leave --checkpoints out"):
        analyze(tiny_trained_checkpoint, None, problems=50, checkpoints=[mod_run])


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _loaded_figures(page: Path) -> tuple[int, int]:
    dom = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                          "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    loaded = int(dom.split('data-figures-loaded="')[1].split('"')[0])
    total = int(dom.split('data-figures-total="')[1].split('"')[0])
    return loaded, total


@pytest.mark.skipif(_chromium() is None and os.environ.get("REQUIRE_CHROMIUM") != "1",
                    reason="headless Chromium is not installed (.ci/run installs it)")
def test_index_html_shows_every_figure_in_headless_chromium(add_report, tmp_path):
    report, out = add_report
    assert _chromium() is not None, "REQUIRE_CHROMIUM=1 but no chromium on PATH"
    assert _loaded_figures(out / "index.html") == (5, 5)
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "probes.png").unlink()
    assert _loaded_figures(broken / "index.html") == (4, 5)  # the check notices a missing figure


def test_page_escapes_text_and_links_figures_relatively(add_report):
    report, _ = add_report
    page = render_html({**report, "findings": ["<b>1 & 2</b>"]})
    assert "&lt;b&gt;1 &amp; 2&lt;/b&gt;" in page
    assert 'src="ablation.png"' in page and "file://" not in page


def test_mask_answer_models_are_refused(tmp_path):
    from tiny_checkpoint import make_checkpoint

    from mct.errors import MctError

    path = make_checkpoint(tmp_path / "steps.pt", use_steps=True, step_masking_mode="mask_answer", max_seq_len=48)
    with pytest.raises(MctError, match="steps only"):
        analyze(path, None)


# ---- the CLI -------------------------------------------------------------------------------------------

def run_cli(*argv) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    return exit_info.value.code


def test_mct_analyze_writes_the_report_and_keeps_an_existing_one(tiny_trained_checkpoint, tmp_path, capsys):
    out = tmp_path / "analysis"
    assert run_cli("analyze", str(tiny_trained_checkpoint), "--out", str(out), "--problems", "60", "--json") == 0
    assert json.loads(capsys.readouterr().out)["task"] == "add"
    assert (out / "index.html").is_file() and (out / "report.json").is_file()
    assert run_cli("analyze", str(tiny_trained_checkpoint), "--out", str(out), "--problems", "60") == 2
    assert "--force" in capsys.readouterr().err
    assert run_cli("analyze", str(tiny_trained_checkpoint), "--out", str(out), "--problems", "60", "--force") == 0


def test_mct_export_refuses_other_targets_and_existing_files(tiny_trained_checkpoint, tmp_path, capsys):
    out = tmp_path / "model_tl.pt"
    out.write_bytes(b"keep me")
    assert run_cli("export", str(tiny_trained_checkpoint), str(out)) == 2
    assert out.read_bytes() == b"keep me"
    assert run_cli("export", str(tiny_trained_checkpoint), str(tmp_path / "x.pt"), "--to", "onnx") == 2
    assert "transformer-lens" in capsys.readouterr().err


@pytest.mark.parametrize("fields", [
    dict(task="sub"), dict(task="mul", max_seq_len=32), dict(task="add", answer_order="plain"),
    dict(task="add", use_steps=True, max_seq_len=64), dict(task="add", d_ff=0),
])
def test_every_task_and_format_gets_a_report(fields, tmp_path):
    from tiny_checkpoint import make_checkpoint

    report = analyze(make_checkpoint(tmp_path / "model.pt", **fields), tmp_path / "out", problems=60)
    places = len(report["places"])
    assert len(report["digits"]) == places and len(report["attention_share"][0]) == places
    assert report["probes"] is None or [c["column"] for c in report["probes"]["columns"]] == list(range(1, places))
    assert (tmp_path / "out" / "index.html").is_file()


def test_an_attention_only_mod_model_gets_a_report_without_the_neuron_spectrum(tmp_path):
    from tiny_checkpoint import make_checkpoint

    report = analyze(make_checkpoint(tmp_path / "model.pt", task="mod", d_ff=0, pad_operands=True), tmp_path / "out",
                     problems=60)
    assert "attention-only" in report["mod"]["skipped"] and (tmp_path / "out" / "index.html").is_file()


@pytest.fixture(scope="module")
def residue_run(tmp_path_factory):
    return train_mod_run(tmp_path_factory.mktemp("residue") / "run", residue_tokens=True)


def test_a_residue_model_evaluates_a_zero_padded_data_set(residue_run, tmp_path, capsys):
    from mct.cli import main

    with pytest.raises(SystemExit) as info:
        main(["gen", "mod", "--modulus", "13", "--pad", "--max-digits", "2", "--out", str(tmp_path / "padded")])
    assert info.value.code == 0
    prompts = [json.loads(line)["prompt"] for line in (tmp_path / "padded" / "test.jsonl").open()]
    assert any(p.startswith("0") for p in prompts)  # "03+07=": the residue model reads "3+7="
    with pytest.raises(SystemExit) as info:
        main(["eval", str(residue_run), str(tmp_path / "padded"), "--json"])
    captured = capsys.readouterr()
    assert info.value.code == 0, captured.err
    report = json.loads(captured.out)
    assert report["n"] == len(prompts) and 0 <= report["exact_match"] <= 1


def test_residue_token_models_are_analysed_with_the_answer_as_one_place(residue_run, tmp_path, capsys):
    from mct.cli import main
    from mct.predictor import Predictor

    best = residue_run
    checkpoint = load_checkpoint(best)
    assert checkpoint.tokenizer.numbers == 13 and checkpoint.model.config.vocab_size == checkpoint.tokenizer.vocab_size
    report = analyze(best, tmp_path / "analysis", problems=60)
    assert report["places"] == ["residue"] and "spectrum" in report["mod"]
    grid = fourier.mod_grid(DataFormat.from_dict(checkpoint.data_format), checkpoint.tokenizer, 13)
    assert grid.input_ids.shape == (169, 7) and (grid.answer_positions == 4).all()  # "a+b=#c<eos>"
    predictor = Predictor.from_checkpoint(best, device="cpu")
    assert predictor.to_str_tokens("12+5=") == ["12", "+", "5", "="]
    assert predictor.normalize_prompt("012+05") == "12+5="  # a residue is one token, written without zeros
    assert predictor.grade("12+5=", "#4<eos>")["correct"]  # (12 + 5) mod 13 = 4, written as one token
    with pytest.raises(SystemExit) as info:
        main(["generate", str(best), "13+1="])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "number '13'" in err and "0-12" in err and len(err.strip().splitlines()) == 1
