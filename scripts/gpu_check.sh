#!/usr/bin/env bash
# The GPU checks of issue 22 in one command, within a fixed time: install autoprune and its missing
# dependencies from wheels, then the gpu/tensorrt tests, torch CUDA fp16 profiles of resnet20 and
# mobilenet_v2 (batch 1 and 32, with and without CUDA graphs on one), `autoprune fit` on each, one
# `autoprune search` against a GPU budget, and a second measurement of 30 profiled networks.
#
#   bash scripts/gpu_check.sh [--dry-run] [OUTDIR]        # OUTDIR defaults to $OUT
#
# Everything goes to OUTDIR: logs/<step>.log and logs/<step>.rc per step, profiles/, predictors/,
# flags.txt (CUDA graph and enqueue-bound flags per profile), search/ (the run directory, search.json),
# remeasure.json, and summary.tsv (step, exit code, seconds; one row per step as it ends, then a
# "# total" line). Each step runs under `timeout` with its own budget, capped by what is left of
# GPU_CHECK_SECONDS (default 480) counted after the install; a failed or timed-out step (exit 124/137)
# does not stop the next, and a profile cut short keeps the networks it measured (later steps use
# them). A step with under 5 s left is not started (exit "skipped"). The script exits 1 if any step
# did not exit 0.
#
# The GPU machine has torch, torchvision, onnx, onnxruntime, pandas, pyarrow, scikit-learn, rich and
# matplotlib but no package registry: fill the ignored folder wheels/gpu here first (Python 3.12,
# x86_64; --no-deps so that torch is never downloaded; the list is WHEEL_PACKAGES below):
#
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d wheels/gpu \
#       optuna alembic colorlog sqlalchemy greenlet mako tqdm pyyaml torch-pruning skops prettytable \
#       wcwidth onnxscript onnx-ir ml-dtypes
#   pip wheel --no-deps -w wheels/gpu .       # autoprune itself: only used if `pip install -e .` fails
#
# and carry wheels/ to the GPU machine. The install step runs
# `pip install --no-index --find-links wheels/gpu --no-deps NAME...`: a package already installed there
# is left alone (torch is never reinstalled); autoprune is installed from this working tree (editable),
# so the checks run the current code. `--wheels DIR` (or $WHEELS) picks another folder.
#
# --dry-run runs the same steps on the CPU with tiny sizes (torch CPU backend, fp32, a dozen networks,
# two trials), skipping the install (autoprune must be installed): tests/test_gpu_check.py runs it so
# that this script cannot rot.
set -uo pipefail

DRY=0
OUTDIR=""
WHEELS="${WHEELS:-wheels/gpu}"
while (($#)); do
    case "$1" in
        --dry-run) DRY=1 ;;
        --wheels) WHEELS="$2"; shift ;;
        -h | --help) sed -n '2,35p' "$0"; exit 0 ;;
        -*) echo "gpu_check.sh: unknown option $1" >&2; exit 2 ;;
        *) OUTDIR="$1" ;;
    esac
    shift
done
OUTDIR="${OUTDIR:-${OUT:-}}"
if [[ -z "$OUTDIR" ]]; then
    echo "gpu_check.sh: give the output folder as an argument or in \$OUT" >&2
    exit 2
fi
mkdir -p "$OUTDIR/logs" "$OUTDIR/profiles" "$OUTDIR/predictors" || exit 2
OUTDIR="$(cd "$OUTDIR" && pwd)"
cd "$(dirname "$0")/.." || exit 2
PY="${PYTHON:-python}"
WHEEL_PACKAGES=(optuna alembic colorlog sqlalchemy greenlet mako tqdm pyyaml torch-pruning skops
    prettytable wcwidth onnxscript onnx-ir ml-dtypes)

SUMMARY="$OUTDIR/summary.tsv"
printf 'step\texit\tseconds\n' >"$SUMMARY"
FAILED=0
DEADLINE=0 # set after the install
SCALE=1    # the dry run's budgets are this many times the GPU run's: a busy CPU must not fail it

# step NAME BUDGET_S CMD...: run CMD under timeout, its output in logs/NAME.log, a row in summary.tsv.
step() {
    local name="$1" budget=$(($2 * SCALE))
    shift 2
    if ((DEADLINE > 0)); then
        local left=$((DEADLINE - SECONDS))
        ((left < budget)) && budget=$left
    fi
    if ((budget < 5)); then
        printf '%s\tskipped\t0\n' "$name" >>"$SUMMARY"
        echo "skipped: no time left" >"$OUTDIR/logs/$name.log"
        echo "[gpu_check] $name: skipped (no time left)"
        FAILED=1
        return
    fi
    echo "[gpu_check] $name (at most ${budget} s)"
    local t0=$SECONDS rc
    if declare -F "$1" >/dev/null; then # a function of this script: in a child bash, with its variables
        timeout -k 5 "$budget" bash -c "$(declare -p PY DRY OUTDIR WHEELS WHEEL_PACKAGES REMEASURE)
$(declare -f "$1")
\"\$@\"" _ "$@" >"$OUTDIR/logs/$name.log" 2>&1
    else
        timeout -k 5 "$budget" "$@" >"$OUTDIR/logs/$name.log" 2>&1
    fi
    rc=$?
    echo "$rc" >"$OUTDIR/logs/$name.rc"
    printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >>"$SUMMARY"
    echo "[gpu_check] $name: exit $rc after $((SECONDS - t0)) s"
    ((rc == 0)) || FAILED=1
}

install() {
    if ((DRY)); then
        echo "dry run: nothing installed; checking that autoprune imports"
        "$PY" -c "import autoprune; print('autoprune', autoprune.__version__)"
        return
    fi
    "$PY" -m pip install --no-index --no-deps --no-build-isolation -e . ||
        "$PY" -m pip install --no-index --find-links "$WHEELS" --no-deps autoprune || return
    "$PY" -m pip install --no-index --find-links "$WHEELS" --no-deps "${WHEEL_PACKAGES[@]}" || {
        echo "one pip call failed: installing one package at a time"
        local p
        for p in "${WHEEL_PACKAGES[@]}"; do
            "$PY" -m pip install --no-index --find-links "$WHEELS" --no-deps "$p" || echo "MISSING: $p"
        done
    }
    "$PY" -m pip check || echo "(pip check complains: see above; not fatal)"
    "$PY" -c "import autoprune, optuna, torch_pruning, skops, onnxscript, torch
print('autoprune', autoprune.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
}

# Sizes: the GPU run, or the dry run's tiny ones. pytest runs in one process (-o addopts=-ra): the
# project's addopts start pytest-xdist workers, which the GPU machine's wheels leave out.
if ((DRY)); then
    DEVICE=(--backend torch --device cpu)
    PROTOCOL=(--warmup-ms 1 --iterations 2 --min-round-ms 0.5 --rounds 2 --reference-every 4)
    SAMPLES=8 SAMPLES_NOGRAPH=6 REMEASURE=3 TRAIN_EPOCHS=0.05 BATCH=4
    FIT=(--epochs 20 --members 2 --folds 0 --include-noisy --compare lpnet ridge)
    SEARCH=(--trials 2 --finetune-epochs 0.02 --final-epochs 0.02 --finalists 1 --measure-seconds 1
        --calibration-batches 1)
    # Every network fits: the dry run checks the steps, and a tiny profile taken on a CPU that other work
    # shares (another test worker, any other process) can put even the narrowest network over 60 % of the dense.
    BUDGET=(--budget-ms 1000)
    PYTEST=(-o addopts=-ra -m "gpu or tensorrt" -q -p no:cacheprovider tests/latency/test_backends.py)
    SCALE=20
    TOTAL="${GPU_CHECK_SECONDS:-6000}"
else
    DEVICE=(--backend torch --device cuda --precision fp16)
    PROTOCOL=(--warmup-ms 20 --iterations 20 --min-round-ms 10 --rounds 3)
    SAMPLES=150 SAMPLES_NOGRAPH=60 REMEASURE=30 TRAIN_EPOCHS=3 BATCH=32
    FIT=()
    SEARCH=(--trials 8 --finetune-epochs 0.3 --final-epochs 2 --finalists 2 --measure-seconds 5)
    BUDGET=(--budget-ratio 0.6)
    PYTEST=(-o addopts=-ra -m "gpu or tensorrt" -q -p no:cacheprovider -rs)
    TOTAL="${GPU_CHECK_SECONDS:-480}"
fi

step install 90 install
DEADLINE=$((SECONDS + TOTAL))
T0=$SECONDS

step pytest_gpu 45 "$PY" -m pytest "${PYTEST[@]}"
step train 25 autoprune train resnet20 --data digits --epochs "$TRAIN_EPOCHS" --out "$OUTDIR/dense.pt"

# name model batch samples extra-args: one profile into profiles/NAME.parquet
profile() {
    local name="$1" model="$2" batch="$3" samples="$4" budget="$5"
    shift 5
    step "profile_$name" "$budget" autoprune profile "$model" "${DEVICE[@]}" "${PROTOCOL[@]}" \
        --input-shape "${batch}x3x32x32" --samples "$samples" --out "$OUTDIR/profiles/$name.parquet" "$@"
}
profile resnet20_bs1 resnet20 1 "$SAMPLES" 50
profile resnet20_bs1_nograph resnet20 1 "$SAMPLES_NOGRAPH" 25 --no-cuda-graph
profile resnet20_bs32 resnet20 "$BATCH" "$SAMPLES" 45 # the dry run's "bs32" is batch 4
profile mobilenet_v2_bs1 mobilenet_v2 1 "$SAMPLES" 45
profile mobilenet_v2_bs32 mobilenet_v2 "$BATCH" "$SAMPLES" 45

# The CUDA graph and enqueue-bound flags of every profile (None: not measured, e.g. on the CPU).
flags() {
    "$PY" - "$OUTDIR/profiles" <<'EOF'
import sys
from pathlib import Path

import pandas as pd

for path in sorted(Path(sys.argv[1]).glob("*.parquet")):
    df = pd.read_parquet(path)
    if df.empty:
        print(f"{path.stem}: no rows")
        continue
    graph = df["cuda_graph"].value_counts(dropna=False).to_dict() if "cuda_graph" in df else "-"
    enq = df["enqueue_bound"].astype("object").value_counts(dropna=False).to_dict() if "enqueue_bound" in df else "-"
    noisy = int(df["noisy"].sum()) if "noisy" in df else "-"
    print(
        f"{path.stem}: {len(df)} networks, latency_ms median {df['latency_ms'].median():.4f} "
        f"[{df['latency_ms'].min():.4f}, {df['latency_ms'].max():.4f}], noisy {noisy}, "
        f"cuda_graph {graph}, enqueue_bound {enq}"
    )
EOF
}
step flags 10 flags
cp "$OUTDIR/logs/flags.log" "$OUTDIR/flags.txt" 2>/dev/null

for name in resnet20_bs1 resnet20_bs32 mobilenet_v2_bs1 mobilenet_v2_bs32; do
    step "fit_$name" 25 autoprune fit "$OUTDIR/profiles/$name.parquet" "${FIT[@]}" \
        --out "$OUTDIR/predictors/$name.pt"
done

step search 60 autoprune search resnet20 --checkpoint "$OUTDIR/dense.pt" --data digits \
    --predictor "$OUTDIR/predictors/resnet20_bs1.pt" "${BUDGET[@]}" "${SEARCH[@]}" \
    --out "$OUTDIR/search"

# The first N networks of the resnet20 batch-1 profile measured once more, as the profile measured
# them (its backend, protocol and reference): the re-measure MAPE is the noise floor of any predictor.
remeasure() {
    "$PY" - "$OUTDIR/profiles/resnet20_bs1.parquet" "$REMEASURE" "$OUTDIR/remeasure.json" <<'EOF'
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, "scripts")
from bench_predictor import remeasure  # the benchmark's re-measure: same backend, protocol, reference

from autoprune.latency import read_profile

prof = read_profile(sys.argv[1])
rows = min(int(sys.argv[2]), len(prof.rows))
again = remeasure(prof, np.arange(rows))
if again is None:
    sys.exit("the profile was measured on another device")
first, first_raw = prof.latency_ms()[:rows], prof.latency_ms(raw=True)[:rows]
corrected, raw = np.asarray(again["corrected"]), np.asarray(again["raw_ms"])
result = {
    "networks": rows,
    "mape_corrected_pct": float(np.mean(np.abs(corrected - first) / first) * 100),
    "mape_raw_pct": float(np.mean(np.abs(raw - first_raw) / first_raw) * 100),
    "first_ms": first.tolist(),
    "again_ms": corrected.tolist(),
}
Path(sys.argv[3]).write_text(json.dumps(result, indent=1))
print({k: result[k] for k in ("networks", "mape_corrected_pct", "mape_raw_pct")})
EOF
}
step remeasure 30 remeasure

printf '# total\t%s\t%s\n' "$FAILED" "$((SECONDS - T0))" >>"$SUMMARY"
echo "[gpu_check] done in $((SECONDS - T0)) s after the install; summary:"
cat "$SUMMARY"
exit "$FAILED"
