"""The adversarial battery behind docs/reliability.md: bad inputs by command, and fault injections.

    python tests/adversarial_battery.py [--nobody-python PATH] [--kills N] > battery.md

Every case runs `python -m mct ...` in a subprocess (a fresh scratch folder, OMP_NUM_THREADS=1) and is
judged: exit code 2 with one stderr line and no traceback is "ok"; anything else is printed as found.
Permission cases run as the user `nobody` when this runs as root and `--nobody-python` names an
interpreter nobody may execute (with this checkout and the venv's site-packages on PYTHONPATH).
Not a pytest module (it takes minutes); the regressions it found are pinned in tests/test_cli_config.py,
tests/test_config.py, tests/test_checkpoint.py and tests/test_reliability.py.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
from cli_helpers import tiny_toml  # noqa: E402 (tests/ is on the path of a script run from it)
TINY = tiny_toml(warmup_steps=1)


@dataclass
class Case:
    command: str
    what: str
    argv: list[str]
    env: dict = field(default_factory=dict)
    as_nobody: bool = False
    expect: int = 2
    timeout: float = 120


@dataclass
class Outcome:
    case: Case
    code: int | None
    first_line: str
    traceback: bool
    lines: int

    @property
    def ok(self) -> bool:
        return self.code == self.case.expect and not self.traceback and (self.case.expect != 2 or self.lines == 1)


class Battery:
    def __init__(self, work: Path, nobody_python: str | None):
        self.work = work
        self.nobody_python = nobody_python if os.geteuid() == 0 else None
        self.site = next(Path(sys.prefix).glob("lib/python3*/site-packages"), None)

    def env(self, extra: dict, nobody: bool) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MCT_")}
        path = [str(ROOT)] + ([str(self.site)] if nobody and self.site else [])
        env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(path), COLUMNS="200", **extra)
        if nobody:
            env["LD_LIBRARY_PATH"] = str(Path(self.nobody_python).parent.parent / "lib")
            env["HOME"] = str(self.work)
        return env

    def command(self, argv: list[str], nobody: bool) -> list[str]:
        if nobody:
            return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", self.nobody_python, "-m", "mct", *argv]
        return [sys.executable, "-m", "mct", *argv]

    def run(self, case: Case) -> Outcome | None:
        if case.as_nobody and not self.nobody_python:
            return None
        try:
            proc = subprocess.run(self.command(case.argv, case.as_nobody), cwd=self.work, capture_output=True,
                                  env=self.env(case.env, case.as_nobody), timeout=case.timeout)
            err = proc.stderr.decode("utf-8", "backslashreplace")
            code = proc.returncode
        except subprocess.TimeoutExpired as exc:
            err = (exc.stderr or b"").decode("utf-8", "backslashreplace") + "\n(timed out)"
            code = None
        lines = [line for line in err.splitlines() if line.strip()]
        first = next((line for line in lines if line.startswith("error:")), lines[-1] if lines else "")
        return Outcome(case, code, first.strip(), "Traceback" in err, len(lines))

    # ---- scratch files -----------------------------------------------------------------------------

    def setup(self) -> None:
        w = self.work
        (w / "tiny.toml").write_text(TINY)
        self.must(["train", "--config", "tiny.toml", "--out", "run"])
        self.must(["gen", "add", "--instances", "200", "--val", "20", "--test", "20", "--max-digits", "2",
                   "--out", "data"])
        (w / "notes.txt").write_text("a file, not a folder\n")
        (w / "ro").mkdir()
        os.chmod(w / "ro", 0o555)
        (w / "nonutf8.toml").write_bytes(b"[train]\ndevice = '\xff'\n")
        (w / "nonutf8.jsonl").write_bytes(b"\xff\xfe{}\n")
        (w / "empty.jsonl").write_text("")
        (w / "markup[red].jsonl").write_text(json.dumps({"prompt": "1+1=", "answer": "2"}) + "\n")
        (w / "meta.jsonl").write_text(
            json.dumps({"prompt": "1+2=", "answer": "3", "meta": {"digits": "x", "carries": [1]}}) + "\n"
            + json.dumps({"prompt": "3+4=", "answer": "7", "meta": {"digits": [1, 1], "carries": 0}}) + "\n")
        (w / "long.jsonl").write_text(json.dumps({"prompt": "1" * 5000 + "+2=", "answer": "3"}) + "\n")
        (w / "notjson.jsonl").write_text("{prompt: 1+1=}\n")
        (w / "big.toml").write_text("[train]\nseed = " + "9" * 5000 + "\n")
        (w / "table.toml").write_text("model = 5\n")
        shutil.copytree(w / "run", w / "badrun")
        (w / "badrun" / "config.toml").write_bytes(b"[train]\nlr = '\xff'\n")
        shutil.copytree(w / "run", w / "nostate")
        shutil.copy(w / "nostate" / "best.pt", w / "nostate" / "last.pt")
        shutil.copytree(w / "run", w / "badmetrics")
        with (w / "badmetrics" / "metrics.jsonl").open("a") as handle:
            handle.write("{not json\n")
        shutil.copytree(w / "data", w / "badmanifest")
        (w / "badmanifest" / "manifest.json").write_text("[]")
        shutil.copytree(w / "data", w / "nonutf8data")
        (w / "nonutf8data" / "train.jsonl").write_bytes(b"\xff\xfe\n")
        shutil.copytree(w / "data", w / "editeddata")
        with (w / "editeddata" / "train.jsonl").open("a") as handle:
            handle.write(json.dumps({"prompt": "1+1=", "answer": "3", "target": "#3<eos>"}) + "\n")
        self.crafted_checkpoints()
        os.chmod(w, 0o777)

    def must(self, argv: list[str]) -> None:
        proc = subprocess.run(self.command(argv, False), cwd=self.work, capture_output=True, env=self.env({}, False))
        if proc.returncode:
            raise SystemExit(f"setup failed: mct {' '.join(argv)}\n{proc.stderr.decode()}")

    def crafted_checkpoints(self) -> None:
        import torch

        raw = torch.load(self.work / "run" / "best.pt", weights_only=True)
        variants = {
            "vocab_ints": lambda d: d["tokenizer"].__setitem__("vocab", [1, 2, 3]),
            "task_5": lambda d: d["data_format"].__setitem__("task", 5),
            "state_str": lambda d: d["model_state"].__setitem__("embed.weight", "x"),
            "step_str": lambda d: d.__setitem__("step", "x"),
            "huge_model": lambda d: d["model_config"].update(d_model=65536, num_layers=64),
            "config_list": lambda d: d.__setitem__("config", [1, 2]),
            "bad_config_value": lambda d: d["config"]["train"].__setitem__("lr", -1),
            "version_str": lambda d: d.__setitem__("version", "1"),
        }
        for name, change in variants.items():
            data = torch.load(self.work / "run" / "best.pt", weights_only=True)
            change(data)
            torch.save(data, self.work / f"crafted_{name}.pt")
        del raw

        class Evil:
            def __reduce__(self):
                return (os.system, ("touch PWNED",))

        torch.save({"format": "mct-checkpoint", "version": 1, "config": Evil()}, self.work / "evil.pt")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def cases() -> list[Case]:
    c: list[Case] = []
    g = lambda what, *argv, **kw: c.append(Case("gen", what, ["gen", *argv], **kw))  # noqa: E731
    t = lambda what, *argv, **kw: c.append(Case("train", what, ["train", *argv], **kw))  # noqa: E731
    e = lambda what, *argv, **kw: c.append(Case("eval", what, ["eval", *argv], **kw))  # noqa: E731
    n = lambda what, *argv, **kw: c.append(Case("generate", what, ["generate", *argv], **kw))  # noqa: E731
    a = lambda what, *argv, **kw: c.append(Case("attn", what, ["attn", *argv], **kw))  # noqa: E731
    d = lambda what, *argv, **kw: c.append(Case("doctor", what, ["doctor", *argv], **kw))  # noqa: E731

    g("unknown task", "div")
    g("unknown answer order", "add", "--answer-order", "sideways")
    g("--ood-digits not C-D", "add", "--ood-digits", "x")
    g("--ood-digits 4-5000 (unbounded memory before)", "add", "--ood-digits", "4-5000")
    g("--instances 1e11 at 40 digits (unbounded memory before)", "add", "--max-digits", "40", "--instances", "100000000000")
    g("min > max digits", "add", "--min-digits", "4", "--max-digits", "2")
    g("more problems than exist", "add", "--max-digits", "1", "--instances", "20000")
    g("--instances 0", "add", "--instances", "0")
    g("--instances -5", "add", "--instances", "-5")
    g("--train-fraction 1.5", "mod", "--train-fraction", "1.5")
    g("mod with --val (ignored before)", "mod", "--val", "10")
    g("mod with --instances", "mod", "--instances", "10")
    g("seed of 23 digits", "add", "--seed", "99999999999999999999999", "--out", "g-seed")
    g("--out is a file", "add", "--out", "notes.txt")
    g("--out under a file", "add", "--out", "notes.txt/data")
    g("--out in a read-only folder", "add", "--out", "ro/data", as_nobody=True)
    g("--out already holds a data set", "add", "--out", "data")
    g("--config missing", "add", "--config", "missing.toml")
    g("--config is a folder", "add", "--config", "data")
    g("--config not UTF-8", "add", "--config", "nonutf8.toml")
    g("--set unknown key", "add", "--set", "data.lol=1")
    g("--set wrong type", "add", "--set", "data.max_digits=abc")
    g("env var named like a table", "add", env={"MCT_DATA": "5"})
    g("markup in --out", "add", "--instances", "100", "--val", "10", "--test", "10", "--out", "[red]x", expect=0)

    t("unknown --ffn", "--ffn", "relu")
    t("d_model not divisible by heads", "--d-model", "30", "--heads", "4")
    t("huge --d-model", "--d-model", "99999999999999")
    t("model too big for memory", "--config", "tiny.toml", "--d-model", "65536", "--layers", "64", "--out", "big")
    t("seed of 23 digits", "--seed", "99999999999999999999999")
    t("--lr -1", "--lr", "-1")
    t("--lr nan", "--lr", "nan")
    t("--config is a folder", "--config", "data")
    t("--config not UTF-8", "--config", "nonutf8.toml")
    t("--config with 5,000-digit integer", "--config", "big.toml")
    t("--config with a value where a table belongs", "--config", "table.toml")
    t("--resume missing folder", "--resume", "nowhere")
    t("--resume with a different --out", "--resume", "run", "--out", "other")
    t("--resume run whose config.toml is not UTF-8", "--resume", "badrun")
    t("--resume from a last.pt without training state", "--resume", "nostate", "--max-steps", "8")
    t("--resume with malformed metrics.jsonl", "--resume", "badmetrics", "--max-steps", "8", expect=0)  # skipped line
    t("--data with manifest.json = []", "--data", "badmanifest", "--config", "tiny.toml", "--out", "r-bm")
    t("--data with a non-UTF-8 train.jsonl", "--data", "nonutf8data", "--config", "tiny.toml", "--out", "r-nu")
    t("--data with an edited train.jsonl (sha256 differs)", "--data", "editeddata", "--config", "tiny.toml",
      "--out", "r-ed", expect=2)
    t("--out is a file", "--config", "tiny.toml", "--out", "notes.txt")
    t("--out under a file", "--config", "tiny.toml", "--out", "notes.txt/run")
    t("--out in a read-only folder", "--config", "tiny.toml", "--out", "ro/run", as_nobody=True)
    t("--out holds a run, no --force", "--config", "tiny.toml", "--out", "run")
    t("MCT_TRAIN=5", env={"MCT_TRAIN": "5"})
    t("MCT_TRAIN__LRR=1 (unknown key)", env={"MCT_TRAIN__LRR": "1"})
    t("MCT_OPTIM__LR=1 (unknown table)", env={"MCT_OPTIM__LR": "1"})
    t("MCT_DATA__OOD_DIGITS='[4,' (bad JSON)", env={"MCT_DATA__OOD_DIGITS": "[4,"})
    t("--device cuda:x (was an emoji)", "--device", "cuda:x")
    t("--device cuda without CUDA", "--config", "tiny.toml", "--device", "cuda", "--out", "r-cuda")
    t("--precision fp16 on CPU", "--config", "tiny.toml", "--precision", "fp16", "--out", "r-fp16")
    t("--set without =", "--set", "train.max_steps")
    t("--set key without table", "--set", "lr=3")
    t("--set data.train_path missing file", "--config", "tiny.toml", "--set", "data.train_path=nowhere.jsonl",
      "--out", "r-tp")
    t("--set NUL in a path", "--set", 'data.train_path="a\\u0000b"')
    t("markup and newline in --out", "--config", "tiny.toml", "--out", "[/red]run\nx", "--max-steps", "2", expect=0)

    e("arguments swapped", "data/test.jsonl", "run/best.pt")
    e("data file missing", "run/best.pt", "missing.jsonl")
    e("data not UTF-8", "run/best.pt", "nonutf8.jsonl")
    e("a checkpoint given as data", "run/best.pt", "run/best.pt")
    e("empty data file", "run/best.pt", "empty.jsonl")
    e("a line that is not JSON", "run/best.pt", "notjson.jsonl")
    e("mixed-type meta fields", "run/best.pt", "meta.jsonl", expect=0)
    e("prompt of 5,000 digits", "run/best.pt", "long.jsonl")
    e("--split unknown", "run/best.pt", "data", "--split", "nope")
    e("--batch-size 0", "run/best.pt", "data", "--batch-size", "0")
    e("--errors under a file", "run/best.pt", "data", "--errors", "notes.txt/e.jsonl")
    e("--errors in a read-only folder", "run/best.pt", "data", "--errors", "ro/e.jsonl", as_nobody=True)
    e("--errors exists, no --force", "run/best.pt", "data", "--errors", "notes.txt")
    e("markup in the data path", "run/best.pt", "markup[red].jsonl", expect=0)
    for name in ("vocab_ints", "task_5", "state_str", "step_str", "huge_model", "config_list", "bad_config_value",
                 "version_str"):
        e(f"crafted checkpoint: {name.replace('_', ' ')}", f"crafted_{name}.pt", "data")
    e("pickled code in a checkpoint", "evil.pt", "data")

    n("prompt with rich markup [/red]", "run/best.pt", "[/red]")
    n("prompt with [model]", "run/best.pt", "1[model]")
    n("character outside the vocabulary", "run/best.pt", "12x")
    n("prompt of 5,000 digits", "run/best.pt", "1" * 5000 + "+1=")
    n("checkpoint missing", "missing.pt", "1+1=")
    n("checkpoint is a folder", "run", "1+1=")
    n("--top-k 0", "run/best.pt", "1+1=", "--top-k", "0")
    n("--temperature -1", "run/best.pt", "1+1=", "--temperature", "-1")
    n("--device tpu", "run/best.pt", "1+1=", "--device", "tpu")

    a("--out with a .txt name", "run/best.pt", "1+1=", "--out", "x.txt")
    a("--out under a file", "run/best.pt", "1+1=", "--out", "notes.txt/a.png")
    a("--out in a read-only folder", "run/best.pt", "1+1=", "--out", "ro/a.png", as_nobody=True)
    a("--layer 99", "run/best.pt", "1+1=", "--layer", "99")
    a("prompt with [model]", "run/best.pt", "[model]")
    a("pickled code in a checkpoint", "evil.pt", "1+1=")

    d("--config is a folder", "--config", "data")
    d("--device cuda:x (exit 1 where CUDA is not usable, as documented)", "--device", "cuda:x",
      expect=1 if not _cuda() else 2)
    d("--set model.d_model=3", "--set", "model.d_model=3")
    d("--device tpu", "--device", "tpu")
    d("markup in --config path", "--config", "[red]missing.toml")

    c.append(Case("mct", "unknown command", ["frobnicate"]))
    c.append(Case("mct", "unknown flag", ["train", "--no-such-flag"]))
    return c


# ---- fault injection ---------------------------------------------------------------------------------

def kill_during_training(battery: Battery, kills: int, rng: random.Random) -> list[str]:
    """kill -9 at random moments of a run that rewrites last.pt every step; every time, last.pt and best.pt
    must load, and the run must resume to the end."""
    import torch

    sys.path.insert(0, str(ROOT))
    from mct.checkpoint import load_checkpoint

    run = battery.work / "killed"
    argv = ["train", "--config", "tiny.toml", "--out", str(run), "--set", "train.save_every=1",
            "--set", "train.eval_every=5", "--max-steps", "4000"]
    report, corrupt, mid_write, steps = [], 0, 0, []
    for i in range(kills):
        resume = (run / "last.pt").exists()
        args = ["train", "--resume", str(run), "--max-steps", "4000", "--set", "train.save_every=1"] if resume else argv
        proc = subprocess.Popen(battery.command(args, False), cwd=battery.work, env=battery.env({}, False),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while not resume and not (run / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)  # the first run: start the clock once it has written something
        time.sleep(rng.uniform(0.0, 6.0) if not resume else rng.uniform(3.0, 9.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        temporaries = list(run.glob(".*.tmp"))
        mid_write += bool(temporaries)
        for tmp in temporaries:
            tmp.unlink()
        for name in ("last.pt", "best.pt"):
            path = run / name
            if path.exists():
                try:
                    loaded = load_checkpoint(path, with_train_state=name == "last.pt")
                    if name == "last.pt":
                        steps.append(loaded.step)
                except Exception as exc:  # noqa: BLE001 - the point is to see anything at all
                    corrupt += 1
                    report.append(f"kill {i}: {name} unreadable: {exc}")
    step = torch.load(run / "last.pt", weights_only=True)["step"]
    done = subprocess.run(battery.command(["train", "--resume", str(run), "--max-steps", str(step + 3)], False),
                          cwd=battery.work, env=battery.env({}, False), capture_output=True)
    report.insert(0, f"{kills} kill -9 at random moments of a run that rewrites last.pt every step ({mid_write} of "
                     f"them in the middle of a checkpoint write, a temporary file left beside it): {corrupt} "
                     f"unreadable last.pt/best.pt; last.pt's step after each kill (each run after the first resumed "
                     f"the previous one): {steps}; the final resume from step {step} exit {done.returncode}")
    return report


def two_runs_one_folder(battery: Battery) -> str:
    run = battery.work / "shared-run"
    first = subprocess.Popen(battery.command(["train", "--config", "tiny.toml", "--out", str(run), "--max-steps", "3000"],
                                             False), cwd=battery.work, env=battery.env({}, False),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(5)
    second = subprocess.run(battery.command(["train", "--config", "tiny.toml", "--out", str(run), "--force"], False),
                            cwd=battery.work, env=battery.env({}, False), capture_output=True)
    first.send_signal(signal.SIGKILL)
    first.wait()
    line = second.stderr.decode().strip().splitlines()[-1] if second.stderr else ""
    return f"second `mct train --out` (even with --force) while the first runs: exit {second.returncode}: {line}"


def interrupts(battery: Battery, rng: random.Random, tries: int) -> list[str]:
    """SIGINT during start-up (imports, config, first batch) and a double SIGINT during training."""
    results = []
    startup = []
    for _ in range(tries):
        proc = subprocess.Popen(battery.command(["train", "--config", "tiny.toml", "--out", "ctrlc", "--force"], False),
                                cwd=battery.work, env=battery.env({}, False), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.05, 3.0))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        startup.append((proc.returncode, b"Traceback" in err))
    codes = sorted({code for code, _ in startup})
    results.append(f"{tries} Ctrl-C during start-up (0.05-3 s after launch): exit codes {codes}, "
                   f"{sum(tb for _, tb in startup)} tracebacks")
    import torch

    mismatched = 0
    for i in range(tries):
        run = battery.work / f"double-{i}"
        proc = subprocess.Popen(battery.command(["train", "--config", "tiny.toml", "--out", str(run),
                                                 "--max-steps", "4000", "--set", "train.eval_every=1000"], False),
                                cwd=battery.work, env=battery.env({}, False), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(5.0, 8.0))
        proc.send_signal(signal.SIGINT)
        time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
        if (run / "last.pt").exists():
            state = torch.load(run / "last.pt", weights_only=True)["train_state"]
            optimizer_steps = {int(s["step"]) for s in state["optimizer"]["state"].values()}
            mismatched += optimizer_steps != {state["step"]}
    results.append(f"{tries} double Ctrl-C (0-50 ms apart) during training: {mismatched} last.pt with step and "
                   "optimizer step disagreeing (pending: mct/train.py)")
    return results


def full_disk(battery: Battery) -> list[str]:
    mount = battery.work / "full"
    mount.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if ok.returncode:
        return ["full disk: not run (cannot mount a small tmpfs here)"]
    try:
        out = []
        for state in ("nearly full (4 KB free)", "full"):
            if state == "full":
                fd = os.open(mount / "filler2", os.O_WRONLY | os.O_CREAT)  # fill it to the last byte
                try:
                    while os.write(fd, b"\0" * 512):
                        pass
                except OSError:
                    pass
                finally:
                    os.close(fd)
            else:
                (mount / "filler").write_bytes(b"\0" * 60_000)
            for what, argv in (("gen --out", ["gen", "add", "--out", str(mount / "d")]),
                               ("train --out", ["train", "--config", "tiny.toml", "--out", str(mount / "r")]),
                               ("eval --errors", ["eval", "run/best.pt", "data", "--errors", str(mount / "e.jsonl")])):
                proc = subprocess.run(battery.command(argv, False), cwd=battery.work, env=battery.env({}, False),
                                      capture_output=True)
                err = proc.stderr.decode().replace(str(battery.work) + "/", "").strip().splitlines()
                traceback = "traceback" if "Traceback" in proc.stderr.decode() else "no traceback"
                out.append(f"{state} disk, {what}: exit {proc.returncode}, {traceback}: {err[-1] if err else ''}")
            for leftover in ("d", "r", "e.jsonl"):
                shutil.rmtree(mount / leftover, ignore_errors=True)
                (mount / leftover).unlink(missing_ok=True) if (mount / leftover).is_file() else None
        return out
    finally:
        subprocess.run(["umount", str(mount)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nobody-python", help="an interpreter the user nobody may run (permission cases)")
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--interrupts", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only-cases", action="store_true")
    parser.add_argument("--only-faults", action="store_true")
    parser.add_argument("--faults", default="kill,lock,interrupt,disk", help="which fault injections to run")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="mct-battery-"))
    battery = Battery(work, args.nobody_python)
    battery.setup()
    counts = {"ok": 0, "found": 0, "skipped": 0}
    if not args.only_faults:
        print("| command | input | exit | result |")
        print("|---|---|---|---|")
    for case in [] if args.only_faults else cases():
        outcome = battery.run(case)
        if outcome is None:
            counts["skipped"] += 1
            print(f"| {case.command} | {case.what} | - | not run (needs root and --nobody-python) |")
            continue
        counts["ok" if outcome.ok else "found"] += 1
        mark = "" if outcome.ok else "**FOUND** "
        shown = outcome.first_line.replace("|", "\\|").replace(str(work) + "/", "")
        if outcome.traceback:
            shown = "traceback: " + shown
        print(f"| {case.command} | {case.what}{' (as nobody)' if case.as_nobody else ''} | {outcome.code} | "
              f"{mark}{shown[:220]} |")
    if not args.only_faults:
        print(f"\n{counts['ok']} as expected, {counts['found']} found, {counts['skipped']} not run; "
              f"pickled code ran: {'YES' if (work / 'PWNED').exists() else 'no'}\n")
    faults = set() if args.only_cases else set(args.faults.split(","))
    if "kill" in faults:
        for line in kill_during_training(battery, args.kills, rng):
            print(f"- {line}")
    if "lock" in faults:
        print(f"- {two_runs_one_folder(battery)}")
    if "interrupt" in faults:
        for line in interrupts(battery, rng, args.interrupts):
            print(f"- {line}")
    if "disk" in faults:
        for line in full_disk(battery):
            print(f"- {line}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
