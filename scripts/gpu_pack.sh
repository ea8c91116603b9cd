#!/usr/bin/env bash
# Prepare, on this machine, what scripts/gpu_recipe.sh needs on the device machine and cannot install
# there (its python3 3.12 has torch, numpy, OpenCV, Pillow, numba and lxml, but no Verovio, skia-python,
# safetensors or tqdm, no MuseScore, no registry, and ../shared does not travel):
#   .whl/               cp312 manylinux wheels of the missing packages (installed there with --target)
#   .gpu/shared/corpora/lieder   the Lieder corpus (CC0) the recipe renders its training data from
# Both are git-ignored; name them in `run`'s carry: ["weights", ".whl", ".gpu"] is not needed for weights
# (tracked). Everything that travels must stay under 64 MiB: this prints the total.
#
#   scripts/gpu_pack.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${ACAI_SHARED:-../shared}
PY=${PY:-python3}
WHEELS=(verovio==6.4.1 skia-python==144.1 pybind11==3.1.0 safetensors==0.8.0 tqdm==4.70.1)  # as poetry.lock pins them
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_34_x86_64
           --platform manylinux_2_31_x86_64 --platform manylinux_2_24_x86_64 --platform any)
rm -rf .whl && mkdir -p .whl
for wheel in "${WHEELS[@]}"; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      "${PLATFORMS[@]}" -d .whl "$wheel"
done
rm -rf .gpu && mkdir -p .gpu/shared/corpora
cp -r "$SHARED/corpora/lieder" .gpu/shared/corpora/lieder
tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
carried=$(du -cb .whl .gpu | tail -1 | cut -f1)
echo "wheels: $(ls .whl | tr '\n' ' ')"
awk -v t="$tracked" -v c="$carried" 'BEGIN { printf "travels: tracked %.1f MiB + carried %.1f MiB = %.1f MiB (limit 64)\n", t/1048576, c/1048576, (t+c)/1048576 }'
