#!/usr/bin/env bash
# Input heights at equal wall minutes, each continuing the shipped weights with the same seed and flags,
# then scored on the first 120 rendered dev systems (session 11; results in docs/experiments/).
#   HEIGHTS="128 192 160" MINUTES=20 scripts/compare_heights.sh
set -x
cd "$(dirname "$0")/.."
M=${MINUTES:-20}
# find and cache the split's barlines first, so no run's time limit pays for it
poetry run python -c "
from acai_omr.data.dataset import SystemDataset
ds = SystemDataset('data', 'train', height=128, augment=False, seed=0, max_tokens=512, crop_measures=1.0)
print('croppable', len(ds), ds.skipped)"
poetry run acai-omr eval model --split dev --data data --limit 120 --weights weights --batch-size 16 --max-len 768 --json runs/base-dev.json > runs/base-dev.txt 2>&1
poetry run acai-omr diagnose pitch-errors runs/base-dev.json --split dev --data data > runs/base-dev-pitch.txt 2>&1
for H in ${HEIGHTS:-128 192 160}; do
  out=runs/geo-$H
  poetry run acai-omr train supervised --init-weights weights --data data --out $out --image-height $H \
    --crop-measures 1.0 --crop-max-measures 2 --crop-first-share 0.5 --degrade-strength 0.6 --p-clean 0.4 \
    --batch-size 32 --lr 5e-4 --warmup-steps 30 --steps 20000 --time-limit-min $M --ss-start 2.0 --eval-every 0 \
    --num-workers 1 --threads 2 --seed 23 --aux-notes 1.0 --log-every 25 --ckpt-every 100 > $out.log 2>&1
  poetry run acai-omr train export $out/last.pt --out $out/last_weights >> $out.log 2>&1
  poetry run acai-omr eval model --split dev --data data --limit 120 --weights $out/last_weights --batch-size 16 --max-len 768 --json $out/dev.json > $out/dev.txt 2>&1
  poetry run acai-omr diagnose pitch-errors $out/dev.json --split dev --data data > $out/dev-pitch.txt 2>&1
done
