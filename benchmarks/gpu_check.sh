#!/usr/bin/env bash
# One-shot GPU check of S2DC (see benchmarks/gpu_check.py for what it measures):
#   bash benchmarks/gpu_check.sh [--cpu] [--out DIR] [--checks pretrain,loss_equality,...]
# Creates (or reuses) the project's environment with tools/env.sh, then runs the checks with this
# checkout's S2DCCore first on the path. On a CUDA machine set S2DC_TORCH to the CUDA build of torch
# before the first run (tools/env.sh). Writes DIR/gpu_check.json and DIR/gpu_check.md
# (default DIR: benchmarks/results/gpu_check); exits 1 if a check failed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../tools/env.sh
source "$ROOT/tools/env.sh"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec python "$ROOT/benchmarks/gpu_check.py" "$@"
