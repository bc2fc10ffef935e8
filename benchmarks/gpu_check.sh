#!/usr/bin/env bash
# The GPU checks of issue 11 that docs/performance.md still marks "not measured", in one run, in order of
# importance, on one CUDA machine with mct importable (`pip install -e .`, or a PYTHONPATH with its wheels):
#   1. 1,000 default steps alone: CUDA graph / eager / --compile (which now keeps the graph) twice, cold
#      inductor cache then warm; 1b. a profile of the default run's whole process;
#   2. benchmarks/train_step.py at batch 1024 (graphs, compile, compile + graphs);
#   3. the step capture of the place-value models (add-coupled, add10-tiny in fp32): "cuda_graphs" in the
#      summary must be true;
#   4. the recipes not yet timed on a GPU: sub-coupled, add-abacus, add10-micro;
#   5. nanoGPT parity on the GPU, where MCT_NANOGPT names nanoGPT's model.py;
#   6. the test suite on CUDA;
#   7. the recipes changed since their GPU rows were measured: rope-add5, gpu-small.
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]       # DEADLINE=seconds (default 540) stops starting new stages
#
# PYTHON, MCT, DEVICE and STEPS can be set. Every command's summary JSON and stderr land in OUT_DIR (default
# gpu-check/); the log prints one line each.
set -u
OUT_DIR=${1:-gpu-check}
DEADLINE=${DEADLINE:-540}
PYTHON=${PYTHON:-python3}
MCT=${MCT:-"$PYTHON -m mct"}
STEPS=${STEPS:-1000}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu STEPS=30: a smoke run of this script on the CPU
mkdir -p "$OUT_DIR/runs"
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }
stage() { echo "=== $1 ($(elapsed) s)"; }
time_left() { [ $(( DEADLINE - $(elapsed) )) -gt "$1" ] || { echo "skipped: under $1 s left"; return 1; }; }

train() {  # train NAME mct-train-args...: one summary line, the JSON and stderr kept
    local name=$1; shift
    local started=$(date +%s.%N)
    $MCT train --out "$OUT_DIR/runs/$name" --force --json "$@" > "$OUT_DIR/$name.json" 2> "$OUT_DIR/$name.err"
    local rc=$?
    local ended=$(date +%s.%N)  # the whole process: Python, torch and CUDA start-up, training, the test
    $PYTHON - "$OUT_DIR/$name.json" "$name" "$rc" "$started" "$ended" <<'EOF'
import json, sys
path, name, rc, started, ended = sys.argv[1:]
process_s = float(ended) - float(started)
try:
    d = json.load(open(path))
except ValueError:
    print(f"{name}: exit {rc}, no summary (see {path[:-5]}.err)")
    raise SystemExit
t = d.get("test") or {}
h = t.get("hard") or {}
print(f"{name}: {d['steps']} steps, train_s {d['train_s']}, wall_s {d['wall_s']}, process_s {process_s:.1f}, cuda_graphs {d.get('cuda_graphs')} "
      f"{d.get('cuda_graphs_fallback') or ''}, test {t.get('exact_match')}, hard {h.get('exact_match')}")
EOF
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
$PYTHON -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

stage "1. 1,000 default steps: graph / eager / compile (cold cache) / compile (warm cache)"
export TORCHINDUCTOR_CACHE_DIR="$OUT_DIR/inductor-cache"  # starts empty: the first compile is a cold one
rm -rf "$TORCHINDUCTOR_CACHE_DIR"
steps=(--device "$DEVICE" --max-steps "$STEPS" --set train.target_accuracy=none)
train k1000-graph "${steps[@]}"
train k1000-eager "${steps[@]}" --set train.cuda_graphs=false
train k1000-compile-cold "${steps[@]}" --compile
train k1000-compile-warm "${steps[@]}" --compile
train k1000-graph-again "${steps[@]}"

stage "1b. where the default run's process time goes (its whole process took 15-18 s on the H200 for 1.4 s of training)"
if time_left 60; then
    $PYTHON -m cProfile -o "$OUT_DIR/default.prof" -m mct train --device "$DEVICE" --out "$OUT_DIR/runs/profiled" --force \
        --json > "$OUT_DIR/profiled.json" 2> "$OUT_DIR/profiled.err"
    $PYTHON -c "import pstats, sys; pstats.Stats(sys.argv[1]).sort_stats('cumulative').print_stats(250)" \
        "$OUT_DIR/default.prof" > "$OUT_DIR/default-profile.txt" 2>&1
    grep -E "cli.py.*\(train\)|loop.py.*\((build|loop|finish)\)|step.py.*\(capture|step.py.*GraphedStep|__init__.py.*\(_lazy_init\)|torch/__init__.py|evaluate_records|plot_curves|load_checkpoint" \
        "$OUT_DIR/default-profile.txt" | head -20
fi

stage "2. the training step at batch 1024"
if time_left 120; then
    $PYTHON benchmarks/train_step.py --device "$DEVICE" --batch 1024 --steps 20 --rounds 3 > "$OUT_DIR/train_step.txt" 2>&1
    tail -8 "$OUT_DIR/train_step.txt"
fi

stage "3. place-value models: the step captured?"
time_left 90 && train add-coupled --config configs/add-coupled.toml --device "$DEVICE"
time_left 90 && train add10-tiny --config configs/add10-tiny.toml --device "$DEVICE"

stage "4. recipes not yet timed on a GPU"
for name in sub-coupled add-abacus add10-micro; do
    time_left 90 && train "$name" --config "configs/$name.toml" --device "$DEVICE"
done

stage "5. nanoGPT parity"
if [ -n "${MCT_NANOGPT:-}" ]; then
    time_left 60 && $PYTHON benchmarks/nanogpt_parity.py --device "$DEVICE" 2>&1 | tee "$OUT_DIR/nanogpt_parity.txt"
else
    echo "skipped: set MCT_NANOGPT to nanoGPT's model.py"
fi

stage "6. the test suite on CUDA"
if time_left 200; then  # about 6 minutes in one process on 2 cores; spread over 8 where pytest-xdist is there
    workers=(); $PYTHON -c "import xdist" 2>/dev/null && workers=(-n 8)
    $PYTHON -m pytest -q -p no:cacheprovider ${workers[@]+"${workers[@]}"} > "$OUT_DIR/tests.txt" 2>&1
    tail -5 "$OUT_DIR/tests.txt"
fi

stage "7. recipes changed since their GPU rows were measured"
for name in rope-add5 gpu-small; do  # a cooldown after the stop (and gpu-small's tie_mix) since 2026-11-29
    time_left 120 && train "$name" --config "configs/$name.toml" --device "$DEVICE"
done
stage "done"
