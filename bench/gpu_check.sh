#!/usr/bin/env bash
# One prepared GPU check (issues 8 and 10): run from the repository root on a GPU machine.
#   bash bench/gpu_check.sh            # writes $OUT/gpu_check.json (the device tool's output folder)
# Needs torch with CUDA, transformers and peft; faiss-gpu is used when importable. Under 8 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/out}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/nvidia-smi.csv" || true
PYTHONPATH=. timeout 470 python bench/gpu_check.py --out "$out/gpu_check.json" "$@"
