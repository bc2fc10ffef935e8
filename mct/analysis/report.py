"""`mct analyze`: one report on how an arithmetic model computes, for any task.

    report = analyze("runs/demo/best.pt", "runs/demo/analysis")   # also writes report.json, PNGs, index.html

What it measures (docs/interpretability.md walks through it), on problems of the model's own task and
format, teacher-forced (mct.analysis.problems):
- per answer digit: each head's attention from the position that writes the digit to the aligned operand
  digits; what zero and mean ablation of each head does to exact match and to that digit's accuracy; the
  heads named as responsible, checked causally: ablated together they must drop the digit's accuracy far
  more than as many other heads do (both figures shown), else the report says no small set explains it;
- direct logit attribution of each head and MLP to the right digit, per answer position;
- linear probes, per layer and position, for the carry (borrow) into each column, with held-out accuracy;
- for a mod model: key Fourier frequencies of the operand representation and the neurons, and over the
  run's saved checkpoints train/test loss with restricted and excluded loss.
Every sentence of `findings` is written from the numbers beside it.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Callable

import torch

from mct.analysis import circuits, fourier
from mct.analysis.problems import problem_set, sample_operands
from mct.analysis.probes import probe_carries
from mct.errors import MctError
from mct.fileio import atomic_path, atomic_write_text

Progress = Callable[[str], None]
PLACE_NAMES = ("units", "tens", "hundreds", "thousands")
FIGURES = ("attention_share", "ablation", "causal_check", "direct_logit_attribution", "probes", "fourier", "grokking")
# what `mct analyze` writes in --out: none of it is overwritten without --force
REPORT_FILES = ("report.json", "index.html") + tuple(f"{name}.png" for name in FIGURES)


def place_name(place: int) -> str:
    return PLACE_NAMES[place] if place < len(PLACE_NAMES) else f"10^{place}"


def head_label(head) -> str:
    return f"L{head[0]}H{head[1]}"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _points(x: float) -> str:
    return f"{100 * x:.1f} points"


# ---------------------------------------------------------------------------------------------
# checkpoints of a run


def run_checkpoints(checkpoint: Path, extra: list[Path] | None = None) -> list[Path]:
    """The run's saved checkpoints: `extra` if given (files or folders), else every .pt beside `checkpoint`
    and in its `checkpoints/` folder."""
    places = extra if extra else [checkpoint.parent, checkpoint.parent / "checkpoints"]
    found: list[Path] = []
    for place in places:
        place = Path(place)
        found += sorted(place.glob("*.pt")) if place.is_dir() else [place] if place.is_file() else []
    return found


def _progress_curve(checkpoint, paths: list[Path], grid, spectrum, train_rows, device, max_points: int,
                    progress: Progress) -> tuple[list[dict], list[str]]:
    """progress_measures of every readable checkpoint of the same model and format, by step."""
    from mct.checkpoint import load_checkpoint

    by_step: dict[int, Path] = {}
    skipped = []
    for path in paths:
        try:
            other = load_checkpoint(path, device=device)
        except MctError as exc:
            skipped.append(f"{path}: {exc}")
            continue
        if other.step is None or other.config.model != checkpoint.config.model or \
                other.data_format != checkpoint.data_format:
            skipped.append(f"{path}: not a step of this run")
            continue
        by_step.setdefault(other.step, path)
    steps = sorted(by_step)
    if len(steps) > max_points:  # evenly spaced, first and last kept
        steps = sorted({steps[round(i * (len(steps) - 1) / (max_points - 1))] for i in range(max_points)})
    curve = []
    for i, step in enumerate(steps):
        progress(f"checkpoint {i + 1}/{len(steps)} (step {step})")
        model = load_checkpoint(by_step[step], device=device).model
        curve.append({"step": step, "checkpoint": str(by_step[step]),
                      **fourier.progress_measures(model, grid, spectrum.modulus, spectrum.key_frequencies,
                                                  train_rows)})
    return curve, skipped


# ---------------------------------------------------------------------------------------------
# the analysis


def analyze(checkpoint_path: str | Path, out_dir: str | Path | None = None, problems: int = 512, seed: int = 0,
            checkpoints: list[Path] | None = None, max_checkpoints: int = 40, device: str = "cpu",
            progress: Progress | None = None) -> dict:
    """Analyse a checkpoint (see the module docstring); with `out_dir`, write report.json, the figures and
    index.html there. Returns the report (plain data). MctError for a checkpoint that cannot be read, or a
    model trained on the steps only (it never writes the answer studied here)."""
    from mct.checkpoint import load_checkpoint
    from mct.data.format import DataFormat

    progress = progress or (lambda message: None)
    checkpoint_path = Path(checkpoint_path)
    checkpoint = load_checkpoint(checkpoint_path, device=device)
    model, tokenizer, config = checkpoint.model.eval(), checkpoint.tokenizer, checkpoint.config
    fmt = DataFormat.from_dict(checkpoint.data_format)
    if checkpoints:  # a mistyped path or a non-mod run would otherwise be ignored without a word
        if fmt.task != "mod":
            raise MctError(f"--checkpoints draws the mod task's progress curve; {checkpoint_path} was trained on "
                           f"the {fmt.task} task: leave --checkpoints out")
        missing = [str(place) for place in checkpoints if not Path(place).exists()]
        if missing:
            raise MctError(f"--checkpoints {missing[0]}: no such file or folder")
    if config.data.step_masking_mode == "mask_answer":
        raise MctError("this model was trained on the steps only (step_masking_mode 'mask_answer'): it does not "
                       "write the answer that mct analyze studies")
    progress("sampling problems")
    operands = sample_operands(fmt, config.data, problems, seed=seed)
    problem_rows = problem_set(fmt, tokenizer, operands, model.config.max_seq_len)
    # the tokens an answer place chooses among: the ten digits, or every residue
    answer_ids = ([tokenizer.number_id(v) for v in range(fmt.modulus)] if fmt.residue_tokens
                  else [tokenizer.token_to_id[str(d)] for d in range(10)])
    K = problem_rows.num_places
    report: dict = {
        "checkpoint": str(checkpoint_path), "step": checkpoint.step, "task": fmt.task, "format": fmt.to_dict(),
        "model": model.config.model_dump(mode="json"), "step_masking_mode": config.data.step_masking_mode,
        "problems": {"count": len(problem_rows), "seed": seed, "teacher_forced": True,
                     "source": "the test split of the run's pairs" if fmt.task == "mod" else
                     "drawn like mct gen's (balanced over operand lengths and carries)"},
        "places": ["residue"] if fmt.residue_tokens else [place_name(k) for k in range(K)],
        "heads": [head_label(h) for h in circuits.heads_of(model)],
    }

    progress("attention to the aligned operand digits")
    share = circuits.attention_share(model, problem_rows, fmt.task)
    report["attention_share"] = [[round(float(v), 4) for v in head] for head in share.flatten(0, 1)]

    progress("ablating every head (zero and mean)")
    sweep = circuits.ablation_sweep(model, problem_rows)
    report["clean"] = {"exact_match": sweep.clean.exact_match, "digit_accuracy": sweep.clean.digit_accuracy,
                       "loss": sweep.clean.mean_loss}
    report["ablation"] = {mode: {"exact_match_drop": [sweep.drop(mode, h) for h in sweep.heads],
                                 "digit_drop": [[sweep.drop(mode, h, k) for k in range(K)] for h in sweep.heads]}
                          for mode in ("zero", "mean")}

    progress("checking the named heads of each digit")
    checks = [circuits.check_digit(model, problem_rows, sweep, share, k, seed=seed) for k in range(K)]
    report["digits"] = [check.to_dict() for check in checks]

    progress("direct logit attribution")
    dla, labels = circuits.direct_logit_attribution(model, problem_rows, answer_ids)
    report["direct_logit_attribution"] = {"components": labels,
                                          "values": [[round(float(v), 4) for v in row] for row in dla]}

    progress("carry probes")
    probes = probe_carries(model, problem_rows, fmt.task, tokenizer=tokenizer, seed=seed, complement=fmt.sub_complement)
    report["probes"] = probes.to_dict() if probes is not None else None

    report["mod"] = None
    if fmt.task == "mod":
        report["mod"] = _mod_section(checkpoint, checkpoint_path, fmt, tokenizer, checkpoints, max_checkpoints,
                                     device, progress)
    report["findings"] = findings(report)
    if out_dir is not None:
        progress("writing the report")
        write_report(report, Path(out_dir), share, dla)
    return report


def _mod_section(checkpoint, checkpoint_path, fmt, tokenizer, checkpoints, max_checkpoints, device, progress) -> dict:
    model, data = checkpoint.model, checkpoint.config.data
    if not model.config.d_ff:
        return {"skipped": "the Fourier analysis reads the MLP neurons, and this model is attention-only (d_ff = 0)"}
    try:
        grid = fourier.mod_grid(fmt, tokenizer, data.modulus, model.config.max_seq_len)
    except MctError as error:  # a format whose answer tokens move (unpadded digits)
        return {"skipped": str(error)}
    progress("Fourier spectrum of the operands and the neurons")
    spectrum = fourier.frequency_spectrum(model, grid, data.modulus)
    train_pairs = set(sample_operands(fmt, data, data.modulus**2, split="train"))
    train_rows = torch.tensor([pair in train_pairs for pair in grid.operands])
    curve, skipped = _progress_curve(checkpoint, run_checkpoints(checkpoint_path, checkpoints), grid, spectrum,
                                     train_rows, device, max_checkpoints, progress)
    return {"spectrum": spectrum.to_dict(), "progress": curve, "skipped_checkpoints": skipped,
            "train_pairs": int(train_rows.sum()), "test_pairs": int((~train_rows).sum())}


# ---------------------------------------------------------------------------------------------
# findings: sentences from the numbers


def findings(report: dict) -> list[str]:
    lines = []
    clean = report["clean"]
    lines.append(f"On {report['problems']['count']} problems (teacher-forced) the model gets {_pct(clean['exact_match'])} "
                 "exactly right; by digit: " + ", ".join(f"{name} {_pct(a)}" for name, a in
                                                        zip(report["places"], clean["digit_accuracy"])) + ".")
    for check in report["digits"]:
        name = report["places"][check["place"]]
        heads = ", ".join(head_label(h) for h in check["named_heads"])
        count = len(check["named_heads"])
        if check["explained"]:
            lines.append(f"The {name} digit is carried by {heads}: mean-ablating {'it' if count == 1 else 'them together'} "
                         f"drops its accuracy by {_points(check['named_drop'])}, against "
                         f"{_points(check['control_drop_mean'])} on average and {_points(check['control_drop_max'])} "
                         f"at most for {len(check['control_drops'])} sets of {count} other "
                         f"head{'s' if count > 1 else ''}.")
        elif not count:
            lines.append(f"The {name} digit: the model has a single head, so no comparison with other heads is possible.")
        else:
            which = "the head" if count == 1 else f"the {count} heads"
            lines.append(f"No small set of heads explains the {name} digit: {which} with the largest effect "
                         f"({heads}) drop{'s' if count == 1 else ''} its accuracy by {_points(check['named_drop'])}"
                         f"{'' if count == 1 else ' together'}, against {_points(check['control_drop_mean'])} on "
                         f"average and {_points(check['control_drop_max'])} at most for as many other heads.")
    dla = report["direct_logit_attribution"]
    for k, name in enumerate(report["places"]):
        column = [row[k] for row in dla["values"]]
        top = sorted(range(len(column)), key=lambda i: -column[i])[:2]
        lines.append(f"Direct logit attribution to the right {name} digit: "
                     + ", ".join(f"{dla['components'][i]} {column[i]:+.2f}" for i in top) + " (logits, mean).")
    probes = report["probes"]
    if probes:
        for row in probes["columns"]:
            readable = row["best_accuracy"] >= row["baseline"] + 0.05
            lines.append(f"The carry into the {place_name(row['column'])} column is "
                         f"{'linearly readable' if readable else 'not linearly readable beyond the base rate'}: best "
                         f"held-out probe {_pct(row['best_accuracy'])} at {row['best_layer']}, position "
                         f"{row['best_position']} ('{row['best_token']}'), base rate {_pct(row['baseline'])}.")
    mod = report.get("mod")
    if mod and "spectrum" in mod:
        spectrum = mod["spectrum"]
        keys = ", ".join(map(str, spectrum["key_frequencies"]))
        lines.append(f"Key frequencies of the neurons: {keys}, holding {_pct(spectrum['key_share'])} of their variance"
                     + ("" if spectrum["sparse"] else f" (no {fourier.MAX_KEY_FREQUENCIES} frequencies hold "
                        f"{_pct(fourier.KEY_SHARE)}: the neurons are not sparse in the Fourier basis)") + ".")
        curve = mod["progress"]
        if len(curve) >= 2:
            first, last = curve[0], curve[-1]
            lines.append(f"Over {len(curve)} checkpoints (steps {first['step']}-{last['step']}): test loss "
                         f"{first['test_loss']:.3g} -> {last['test_loss']:.3g}, train loss {first['train_loss']:.3g} -> "
                         f"{last['train_loss']:.3g}, restricted loss {first['restricted_loss']:.3g} -> "
                         f"{last['restricted_loss']:.3g}, excluded loss {first['excluded_loss']:.3g} -> "
                         f"{last['excluded_loss']:.3g}.")
            grokked = next((p["step"] for p in curve if p["test_exact_match"] >= 0.99), None)
            if grokked is not None:
                lines.append(f"Test exact match first reaches 99% at step {grokked}.")
        else:
            lines.append(f"Only {len(curve)} saved checkpoint of this run was found: keep checkpoints along the "
                         "way (RUN/checkpoints/*.pt) to draw the grokking curve.")
        skipped = mod["skipped_checkpoints"]
        if skipped:
            lines.append(f"{len(skipped)} checkpoint file{'s' if len(skipped) > 1 else ''} left out of the curve: "
                         + "; ".join(skipped[:3]) + ("; ..." if len(skipped) > 3 else "") + ".")
    return lines


# ---------------------------------------------------------------------------------------------
# figures and the page


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)


def _heatmap(ax, values, rows: list[str], columns: list[str], title: str, cmap="viridis", center=False,
             colorbar_label=""):
    import numpy as np

    array = np.asarray(values, dtype=float)
    limit = float(np.abs(array).max()) or 1.0
    image = ax.imshow(array, aspect="auto", cmap=cmap, vmin=-limit if center else None,
                      vmax=limit if center else None, interpolation="nearest")
    ax.set_xticks(range(len(columns)), labels=columns, fontsize=8, rotation=45 if len(columns) > 6 else 0)
    ax.set_yticks(range(len(rows)), labels=rows, fontsize=7)
    ax.set_title(title, fontsize=10)
    ax.figure.colorbar(image, ax=ax, shrink=0.8, label=colorbar_label)


def write_figures(report: dict, out: Path, share: torch.Tensor, dla: torch.Tensor) -> dict[str, str]:
    """Every figure of the report as PNG in `out`; returns {key: file name}."""
    drawn = {"attention_share": _attention_share_figure(report, share),
             "ablation": _ablation_figure(report),
             "causal_check": _causal_check_figure(report),
             "direct_logit_attribution": _dla_figure(report, dla),
             "probes": _probes_figure(report),
             "fourier": _fourier_figure(report),
             "grokking": _grokking_figure(report)}
    files = {}
    for key in FIGURES:
        figure = drawn[key]
        if figure is not None:  # probes and the mod figures exist for some reports only
            _save(figure, out / f"{key}.png")
            files[key] = f"{key}.png"
    return files


def _tall(rows: list) -> float:
    """A heatmap's height for `rows` labelled rows."""
    return max(3.0, 0.22 * len(rows) + 1.2)


def _attention_share_figure(report: dict, share: torch.Tensor):
    heads, places = report["heads"], report["places"]
    figure = _figure(3.2 + 0.5 * len(places), _tall(heads))
    _heatmap(figure.subplots(), share.flatten(0, 1).numpy(), heads, places,
             "attention to the aligned operand digits", colorbar_label="attention share")
    return figure


def _ablation_figure(report: dict):
    import numpy as np

    heads, places, ablation = report["heads"], report["places"], report["ablation"]
    figure = _figure(2 * (3.2 + 0.5 * len(places)) + 1.5, _tall(heads))
    left, middle, right = figure.subplots(1, 3, width_ratios=[3, 3, 1.4])
    _heatmap(left, ablation["zero"]["digit_drop"], heads, places, "zero ablation: digit accuracy drop",
             cmap="RdBu_r", center=True)
    _heatmap(middle, ablation["mean"]["digit_drop"], heads, places, "mean ablation: digit accuracy drop",
             cmap="RdBu_r", center=True)
    y = np.arange(len(heads))
    right.barh(y - 0.2, ablation["zero"]["exact_match_drop"], height=0.4, label="zero")
    right.barh(y + 0.2, ablation["mean"]["exact_match_drop"], height=0.4, label="mean")
    right.set_yticks(y, labels=heads, fontsize=7)
    right.invert_yaxis()
    right.set_title("exact match drop", fontsize=10)
    right.legend(fontsize=7)
    return figure


def _causal_check_figure(report: dict):
    import numpy as np

    places, digits = report["places"], report["digits"]
    figure = _figure(max(4.0, 1.3 * len(places) + 1.5), 3.4)
    ax = figure.subplots()
    x = np.arange(len(places))
    named = [d["named_drop"] for d in digits]
    control = [d["control_drop_mean"] for d in digits]
    ax.bar(x - 0.2, named, width=0.4, label="named heads, ablated together", color="tab:red")
    ax.bar(x + 0.2, control, width=0.4, label="as many other heads (mean; dots: each set)", color="tab:gray")
    for i, d in enumerate(digits):
        ax.scatter([i + 0.2] * len(d["control_drops"]), d["control_drops"], color="black", s=8, zorder=3)
        ax.annotate(", ".join(head_label(h) for h in d["named_heads"]) or "-", (i - 0.2, named[i]), fontsize=7,
                    ha="center", va="bottom")
    ax.set_xticks(x, labels=places)
    ax.set_ylabel("digit accuracy drop (mean ablation)")
    ax.set_title("causal check of the named heads", fontsize=10)
    ax.legend(fontsize=7)
    return figure


def _dla_figure(report: dict, dla: torch.Tensor):
    components, places = report["direct_logit_attribution"]["components"], report["places"]
    figure = _figure(3.2 + 0.5 * len(places), _tall(components))
    _heatmap(figure.subplots(), dla.numpy(), components, places, "direct logit attribution to the right digit",
             cmap="RdBu_r", center=True, colorbar_label="logit (right - mean digit)")
    return figure


def _probes_figure(report: dict):
    import numpy as np

    probes = report["probes"]
    if not probes:
        return None
    count = len(probes["columns"])
    figure = _figure(min(4.5 * count, 18), 0.35 * len(probes["layers"]) + 2.4)
    axes = np.atleast_1d(figure.subplots(1, count, squeeze=False)[0])
    accuracy = np.asarray(probes["accuracy"], dtype=float)  # [layers, T, columns], NaN where not probed
    for i, (ax, row) in enumerate(zip(axes, probes["columns"])):
        image = ax.imshow(accuracy[:, :, i], aspect="auto", vmin=0.5, vmax=1.0, cmap="viridis")
        ax.set_xticks(range(len(probes["tokens"])), labels=probes["tokens"], fontsize=7)
        ax.set_yticks(range(len(probes["layers"])), labels=probes["layers"], fontsize=7)
        ax.set_title(f"carry into {place_name(row['column'])} (base {_pct(row['baseline'])})", fontsize=9)
    figure.colorbar(image, ax=list(axes), shrink=0.8, label="held-out accuracy")
    return figure


def _fourier_figure(report: dict):
    import numpy as np

    mod = report.get("mod")
    if not (mod and "spectrum" in mod):
        return None
    spectrum = mod["spectrum"]
    figure = _figure(9, 3.4)
    ax = figure.subplots()
    w = np.arange(1, len(spectrum["neuron_share"]) + 1)
    ax.bar(w, spectrum["neuron_share"], color="tab:blue", label="neurons")
    ax.plot(w, spectrum["operand_a_share"], "o-", ms=2, lw=1, color="tab:orange", label="operand a")
    ax.plot(w, spectrum["operand_b_share"], "o-", ms=2, lw=1, color="tab:green", label="operand b")
    for key in spectrum["key_frequencies"]:
        ax.axvline(key, color="tab:red", lw=0.6, ls=":")
    ax.set_xlabel("frequency w (period P / w)")
    ax.set_ylabel("share of variance")
    ax.set_title(f"Fourier spectrum (key frequencies dotted: {spectrum['key_frequencies']})", fontsize=10)
    ax.legend(fontsize=8)
    return figure


def _grokking_figure(report: dict):
    mod = report.get("mod")
    curve = mod.get("progress") if mod and "spectrum" in mod else None
    if not curve:
        return None
    figure = _figure(9, 3.6)
    loss_ax, acc_ax = figure.subplots(1, 2)
    steps = [p["step"] for p in curve]
    for key, style in (("train_loss", "-"), ("test_loss", "-"), ("restricted_loss", "--"), ("excluded_loss", "--")):
        loss_ax.plot(steps, [max(p[key], 1e-8) for p in curve], style, marker="o", ms=3, label=key.replace("_", " "))
    loss_ax.set_yscale("log")
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("cross-entropy per answer token")
    loss_ax.legend(fontsize=7)
    for key in ("train_exact_match", "test_exact_match"):
        acc_ax.plot(steps, [p[key] for p in curve], marker="o", ms=3, label=key.replace("_", " "))
    acc_ax.set_ylim(-0.02, 1.02)
    acc_ax.set_xlabel("step")
    acc_ax.legend(fontsize=7)
    figure.suptitle("progress over the run's checkpoints (Nanda et al.)", fontsize=10)
    return figure


FIGURE_TITLES = {
    "attention_share": "Attention to the aligned operand digits",
    "ablation": "Ablating each head",
    "causal_check": "Causal check of the named heads",
    "direct_logit_attribution": "Direct logit attribution",
    "probes": "Linear probes for the carry",
    "fourier": "Fourier spectrum (mod)",
    "grokking": "Grokking: train, test, restricted and excluded loss",
}

# Counts the figures that loaded and says so on the page (a report copied without its PNGs shows it).
_CHECK_SCRIPT = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.querySelectorAll("img.figure"));
  var broken = images.filter(function (img) { return !(img.complete && img.naturalWidth > 0); });
  document.body.setAttribute("data-figures-loaded", String(images.length - broken.length));
  document.body.setAttribute("data-figures-total", String(images.length));
  var note = document.getElementById("figure-check");
  note.textContent = broken.length ? broken.length + " of " + images.length + " figures failed to load: " +
    broken.map(function (img) { return img.getAttribute("src"); }).join(", ") : "";
});
</script>"""


def render_html(report: dict) -> str:
    """A page that shows the findings, the figures (relative links: the folder works offline, anywhere)
    and the causal check table."""
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(report['places'][d['place']])}</td><td>{_pct(d['clean_accuracy'])}</td>"
        f"<td>{e(', '.join(head_label(h) for h in d['named_heads']) or '-')}</td><td>{_points(d['named_drop'])}</td>"
        f"<td>{_points(d['control_drop_mean'])}</td><td>{_points(d['control_drop_max'])}</td>"
        f"<td>{'yes' if d['explained'] else 'no small set'}</td></tr>"
        for d in report["digits"])
    figures = "".join(
        f"<figure><img class=\"figure\" src=\"{e(name)}\" alt=\"{e(FIGURE_TITLES[key])}\">"
        f"<figcaption>{e(FIGURE_TITLES[key])}</figcaption></figure>" for key, name in report["figures"].items())
    items = "".join(f"<li>{e(line)}</li>" for line in report["findings"])
    title = f"mct analyze: {report['task']} model, {Path(report['checkpoint']).name} (step {report['step']})"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }}
figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; }} figcaption {{ color: #555; font-size: 0.9em; }}
#figure-check {{ color: #b00; font-weight: bold; }}
</style></head>
<body>
<h1>{e(title)}</h1>
<p id="figure-check"></p>
<p>Format: {e(json.dumps(report['format']))}. {report['problems']['count']} problems, {e(report['problems']['source'])};
scores are teacher-forced (exact match equals greedy decoding's). Numbers in <code>report.json</code>.</p>
<h2>Findings</h2><ul>{items}</ul>
<h2>Causal check</h2>
<table><tr><th>digit</th><th>accuracy</th><th>named heads</th><th>drop, named heads ablated together</th>
<th>drop, as many other heads (mean)</th><th>(largest)</th><th>explained</th></tr>{rows}</table>
{figures}
{_CHECK_SCRIPT}
</body></html>
"""


def write_report(report: dict, out: Path, share: torch.Tensor, dla: torch.Tensor) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        report["figures"] = write_figures(report, out, share, dla)
        atomic_write_text(out / "report.json", json.dumps(report, indent=1) + "\n")
        atomic_write_text(out / "index.html", render_html(report))
    except OSError as exc:
        raise MctError(f"cannot write the report to {out}: {exc.strerror or exc}") from None


def existing_report(out: Path) -> list[str]:
    return [name for name in REPORT_FILES if (out / name).exists()]

