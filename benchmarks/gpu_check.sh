#!/usr/bin/env bash
# The GPU checks of issue 11, in one run on one CUDA machine with mct importable (`pip install -e .`, or a
# PYTHONPATH with its wheels). Two phases:
#   A. alone on the GPU, in order (timings that must not share the card):
#      1. 1,000 default steps: CUDA graph / --compile (which keeps the graph) on a cold inductor cache, then
#         a warm one / the default run to its target (A1 below chooses; eager without the graph on request);
#      1b. a profile of the default run's whole process;
#      2. benchmarks/train_step.py at batch 1024 (text path, device path, graph, compile), and add-coupled's step;
#      3. nanoGPT parity, where MCT_NANOGPT names nanoGPT's model.py;
#   B. sharing the GPU and its CPU cores, in parallel (times are upper bounds):
#      4. the test suite on CUDA (pytest-xdist where there);
#      5. every shipped config trained with `mct train --config configs/NAME.toml --device cuda`.
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]   # DEADLINE=seconds (default 540): no stage starts after it, and
#                                              # phase B's commands are stopped at it
#
# A1 and SKIP (below), TRAIN_ARGS (added to every `mct train`), PYTHON, MCT, DEVICE, STEPS, TESTS (what pytest runs, default tests), JOBS (phase B's parallel trainings, default 4), TEST_WORKERS (pytest-xdist workers, default 12) and CONFIGS (phase B's configs,
# default every configs/*.toml) can be set. Every command's summary JSON and stderr land in OUT_DIR (default
# gpu-check/); the log prints one line each.
set -u
OUT_DIR=${1:-gpu-check}
DEADLINE=${DEADLINE:-540}
PYTHON=${PYTHON:-python3}
MCT=${MCT:-"$PYTHON -m mct"}
STEPS=${STEPS:-1000}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu A1=graph TRAIN_ARGS="--max-steps 5" CONFIGS=default: a smoke run on the CPU
JOBS=${JOBS:-4}
TESTS=${TESTS:-tests}  # what pytest runs
# stage A1's runs in order: graph*, eager*, compile* (the first on an empty inductor cache), seedN (the default run)
A1=${A1:-graph compile-cold compile-warm seed0}  # eager (no graph): 10.3 s on the H200, 2026-11-29
SKIP=${SKIP:-}  # stages to leave out, e.g. "A1b A2 A3"
skip() { case " $SKIP " in *" $1 "*) echo "skipped (SKIP)"; return 0;; esac; return 1; }
# phase B's configs: the ones not yet measured on a GPU first (docs/performance.md, "Still to measure"),
# then every other one
FIRST="add10-tiny add-tiny sub-tiny add10-micro add-coupled sub-coupled add-abacus rope-add5"
CONFIGS=${CONFIGS:-"$FIRST $(cd configs && ls *.toml | sed 's/\.toml$//' | grep -vxF -f <(tr ' ' '\n' <<< "$FIRST") | tr '\n' ' ')"}
mkdir -p "$OUT_DIR/runs"
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( DEADLINE - $(elapsed) )); }
stage() { echo "=== $1 ($(elapsed) s)"; }
time_left() { [ "$(left)" -gt "$1" ] || { echo "skipped: under $1 s left"; return 1; }; }

train() {  # train NAME mct-train-args...: one summary line, the JSON and stderr kept; stopped at the deadline
    local name=$1; shift
    local started=$(date +%s.%N)
    timeout "$(left)" $MCT train --out "$OUT_DIR/runs/$name" --force --json "$@" ${TRAIN_ARGS:-} > "$OUT_DIR/$name.json" \
        2> "$OUT_DIR/$name.err"
    local rc=$?
    local ended=$(date +%s.%N)  # the whole process: Python, torch and CUDA start-up, training, the test
    $PYTHON - "$OUT_DIR/$name.json" "$name" "$rc" "$started" "$ended" <<'PY'
import json, sys
path, name, rc, started, ended = sys.argv[1:]
process_s = float(ended) - float(started)
try:
    d = json.load(open(path))
except ValueError:
    print(f"{name}: exit {rc} after {process_s:.0f} s, no summary (see {path[:-5]}.err)")
    raise SystemExit
t = d.get("test") or {}
h = t.get("hard") or {}
print(f"{name}: {d['steps']} steps, train_s {d['train_s']}, wall_s {d['wall_s']}, process_s {process_s:.1f}, "
      f"cuda_graphs {d.get('cuda_graphs')} {d.get('cuda_graphs_fallback') or ''}, test {t.get('exact_match')}, "
      f"hard {h.get('exact_match')}", flush=True)
PY
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
$PYTHON -c "import torch, pydantic, typer; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'pydantic', pydantic.__version__, 'typer', typer.__version__)"

stage "A1. $STEPS default steps: $A1"
export TORCHINDUCTOR_CACHE_DIR="$OUT_DIR/inductor-cache"  # starts empty: the first compile is a cold one
rm -rf "$TORCHINDUCTOR_CACHE_DIR"
steps=(--device "$DEVICE" --max-steps "$STEPS" --set train.target_accuracy=none)
for variant in $A1; do
    case $variant in
        graph*) train "k1000-$variant" "${steps[@]}" ;;
        eager*) train "k1000-$variant" "${steps[@]}" --set train.cuda_graphs=false ;;
        compile*) train "k1000-$variant" "${steps[@]}" --compile ;;
        seed*) train "default-$variant" --device "$DEVICE" --seed "${variant#seed}" ;;
    esac
done

stage "A1b. where the default run's process time goes"
if ! skip A1b && time_left 330; then
    $PYTHON -m cProfile -o "$OUT_DIR/default.prof" -m mct train --device "$DEVICE" --out "$OUT_DIR/runs/profiled" --force \
        --json > "$OUT_DIR/profiled.json" 2> "$OUT_DIR/profiled.err"
    $PYTHON -c "import pstats, sys; pstats.Stats(sys.argv[1]).sort_stats('cumulative').print_stats(250)" \
        "$OUT_DIR/default.prof" > "$OUT_DIR/default-profile.txt" 2>&1
    grep -E "function calls|cli.py.*\(train\)|loop.py.*\((build|loop|finish)\)|step.py.*\(capture|__init__.py.*\(_lazy_init\)|evaluate_records|plot_curves|load_checkpoint" \
        "$OUT_DIR/default-profile.txt" | head -14
fi

stage "A2. the training step at batch 1024"
if ! skip A2 && time_left 300; then
    timeout 90 $PYTHON benchmarks/train_step.py --device "$DEVICE" --batch 1024 --steps 20 --rounds 3 > "$OUT_DIR/train_step.txt" 2>&1
    tail -9 "$OUT_DIR/train_step.txt"
    # the place-value models took 35-52 ms a step on the H200 (2026-11-29) where add10 took 5: step or data?
    timeout 60 $PYTHON benchmarks/train_step.py --config configs/add-coupled.toml --device "$DEVICE" --steps 20 \
        --rounds 3 > "$OUT_DIR/train_step-add-coupled.txt" 2>&1
    tail -9 "$OUT_DIR/train_step-add-coupled.txt"
fi

stage "A3. nanoGPT parity"
if ! skip A3 && time_left 260; then
    if [ -n "${MCT_NANOGPT:-}" ]; then
        timeout 45 $PYTHON benchmarks/nanogpt_parity.py --device "$DEVICE" --budget 3 > "$OUT_DIR/nanogpt_parity.txt" 2>&1
        tail -6 "$OUT_DIR/nanogpt_parity.txt"
    else
        echo "skipped: MCT_NANOGPT unset"
    fi
fi

stage "B. in parallel: the test suite on CUDA, and every config: $CONFIGS"
if time_left 60; then
    workers=(); $PYTHON -c "import xdist" 2>/dev/null && workers=(-n "${TEST_WORKERS:-12}")
    timeout "$(( $(left) - 5 ))" $PYTHON -m pytest -q -p no:cacheprovider ${workers[@]+"${workers[@]}"} $TESTS > "$OUT_DIR/tests.txt" 2>&1 &
    tests=$!
    export -f train left elapsed; export OUT_DIR MCT PYTHON DEADLINE T0 DEVICE TRAIN_ARGS
    printf '%s\n' $CONFIGS | xargs -P "$JOBS" -I{} bash -c 'train "cfg-{}" --config "configs/{}.toml" --device "$DEVICE"'
    wait $tests; echo "tests exit $?"
    tail -4 "$OUT_DIR/tests.txt"
    grep -E "^(FAILED|ERROR)" "$OUT_DIR/tests.txt" | head -20
fi
stage "done"
