#!/usr/bin/env bash
# The largest training run the project can do with a task's device time (one H200, 16 cores; 15 minutes
# for the whole task, machine start included), on the device machine as it really is: its python3
# (3.12) has torch, numpy, OpenCV, Pillow, numba and lxml, and nothing else can be installed there.
#
# Here, once:   scripts/gpu_pack.sh        (wheels in .whl/, the Lieder corpus in .gpu/; both ignored)
# Then:         run(command="scripts/gpu_recipe.sh", carry=[".whl", ".gpu"], timeout_s=600)
#
# It installs the carried wheels (Verovio, skia-python, safetensors, tqdm) into /tmp/site, renders
# Lieder training systems with all cores, continues the shipped weights (weights/, tracked) with this
# project's current supervised recipe on the GPU, and leaves in $OUT (at most 8 files of 16 MiB):
#   model.safetensors, config.json   the mean of the run's last checkpoints (fp16; copy into weights/)
#   train-log.jsonl                  loss, LR, samples/s per logged step
#   eval-dev.json                    greedy TEDn on the rendered dev split (lieder-dev is scored back here:
#                                    ../shared does not travel)
#   recipe.log                       what ran, with timings
# Every knob is an environment variable; TOTAL_MIN bounds the whole script.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-recipe}
DATA=${DATA:-/tmp/acai-data}
RUNS=${RUNS:-/tmp/acai-runs}
TOTAL_MIN=${TOTAL_MIN:-9}
RESERVE_MIN=${RESERVE_MIN:-1.5}      # kept for export and evaluation
WORKERS=${WORKERS:-15}               # rendering processes
TRAIN_SYSTEMS=${TRAIN_SYSTEMS:-24000}
DEV_SYSTEMS=${DEV_SYSTEMS:-300}
BATCH=${BATCH:-96}
LR=${LR:-6e-4}
LOADER_WORKERS=${LOADER_WORKERS:-12} # DataLoader processes (degradation runs there)
SEED=${SEED:-101}
# the CPU recipe of the shipped weights (weights/MODEL_CARD.md), scaled to a GPU batch
SUP_FLAGS=${SUP_FLAGS:---crop-measures 1.0 --crop-max-measures 2 --crop-first-share 0.5 --aux-notes 1.0 --aux-header 0.5 --degrade-strength 0.6 --p-clean 0.4 --ss-start 2.0}

mkdir -p "$OUT"
START=$(date +%s)
log() { echo "[$(date -u +%H:%M:%S) +$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/recipe.log"; }
minutes_left() { awk -v t="$TOTAL_MIN" -v s="$(( $(date +%s) - START ))" 'BEGIN { printf "%.2f", t - s / 60 }'; }

# 1. packages: the device's python3 plus the carried wheels (a machine that has them, e.g. this
#    project's .venv, uses its own)
if [[ -x .venv/bin/python ]]; then PY=${PY:-.venv/bin/python}; else PY=${PY:-python3}; fi
if ! "$PY" -c "import verovio, skia, safetensors, tqdm" 2>/dev/null; then
  [[ -d .whl ]] || { log "no .whl/ here: run scripts/gpu_pack.sh and carry .whl and .gpu"; exit 2; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [[ -d .gpu/shared ]]; then export ACAI_SHARED=${ACAI_SHARED:-$PWD/.gpu/shared}; fi
acai() { "$PY" -m acai_omr.cli "$@"; }
log "python: $PY; $("$PY" -c 'import torch, verovio; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "", "verovio", verovio.__version__ if hasattr(verovio, "__version__") else "")')"

# 2. data: Verovio renders of the Lieder corpus (MuseScore is not on the device)
log "building $TRAIN_SYSTEMS training and $DEV_SYSTEMS dev systems with $WORKERS workers"
acai data build --out "$DATA" --split train --systems "$TRAIN_SYSTEMS" --workers "$WORKERS" --corpora lieder \
    2>&1 | tail -n 2 | tee -a "$OUT/recipe.log"
acai data build --out "$DATA" --split dev --systems "$DEV_SYSTEMS" --workers "$WORKERS" --corpora lieder \
    2>&1 | tail -n 2 | tee -a "$OUT/recipe.log"
log "data: $(wc -l < "$DATA/train/manifest.jsonl") train, $(wc -l < "$DATA/dev/manifest.jsonl") dev systems"

# 3. supervised training, continuing the shipped weights (the MAE-pretrained encoder is in them)
SUP_MIN=$(awk -v left="$(minutes_left)" -v reserve="$RESERVE_MIN" 'BEGIN { m = left - reserve; printf "%.2f", (m < 1 ? 1 : m) }')
log "supervised training for $SUP_MIN min"
acai train supervised --init-weights weights --data "$DATA" --out "$RUNS/supervised" $SUP_FLAGS \
    --batch-size "$BATCH" --lr "$LR" --warmup-steps 50 --steps 100000 --time-limit-min "$SUP_MIN" \
    --num-workers "$LOADER_WORKERS" --eval-every 0 --ckpt-every 50 --keep-ckpts 5 --log-every 10 \
    --seed "$SEED" 2>&1 | tail -n 3 | tee -a "$OUT/recipe.log"
cp "$RUNS/supervised/log.jsonl" "$OUT/train-log.jsonl"

# 4. the mean of the last checkpoints as weights, and their rendered-dev score
shopt -s nullglob
checkpoints=("$RUNS"/supervised/step-*.pt)
[[ ${#checkpoints[@]} -gt 0 ]] || checkpoints=("$RUNS/supervised/last.pt")
acai train export "${checkpoints[@]}" --out "$OUT" 2>&1 | tail -n 1 | tee -a "$OUT/recipe.log"
log "weights: $(ls -l "$OUT"/model.safetensors | awk '{printf "%.1f MiB", $5 / 1048576}')"
acai eval model --split dev --data "$DATA" --weights "$OUT" --batch-size 64 --max-len 768 \
    --json "$OUT/eval-dev.json" 2>&1 | tail -n 2 | tee -a "$OUT/recipe.log" || log "dev evaluation failed"
"$PY" - "$OUT/eval-dev.json" <<'PY' || true
import json, sys
report = json.load(open(sys.argv[1]))
for row in report["systems"]:  # keep the returned file small: the per-token log-probs stay on the device
    row.pop("token_logprobs", None)
json.dump(report, open(sys.argv[1], "w"))
PY
log "done in $(( ($(date +%s) - START) / 60 )) min"
