#!/usr/bin/env bash
# GPU check (one GPU, < 5 min on an H100): the paper profile on NB201 in bf16 for a fixed number of updates;
# prints step time, peak memory and the projected wall time of 200 epochs x 156 archs. Then a 2-update smoke
# run of the real trainer on the GPU (bf16) so device placement of the whole loop + evaluation is exercised.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
mkdir -p results/gpu_check
timeout 240 "$PY" scripts/gpu_check.py --config configs/nb201.yaml --device cuda --precision bf16 \
    --steps "${STEPS:-30}" --warmup 5 --out results/gpu_check/steps.json "$@"
timeout 120 "$PY" pipeline/train.py --config configs/nb201_tiny.yaml train.device=cuda train.precision=bf16 \
    train.epochs=1 run.root=results/gpu_check/runs run.resume=false run.progress=false
