#!/usr/bin/env bash
# Remake the default encoder shipped in S2DCCore/resources/default_encoder (used by embed and propagate
# when no model is given). Allowed sources only, never Colin27 (tools/default_encoder_pool.py):
#   synthetic CT and MR phantoms (several sizes and spacings), MNI152 2009a T1 (nilearn wheel),
#   the ITK example T1 head (insighttoolkit5-examples), nibabel's anatomical.nii.
# S²DC, tiny preset, 2 mm working spacing, the modality-agnostic 'percentile' intensity preset.
# Usage: tools/train_default_encoder.sh [WORK] [STEPS]    (default WORK=./default-encoder-work, STEPS=1500)
# About 35 min on 2 shared CPU cores (1.3 s/step); writes WORK/run/encoder, then copies it into the package.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/tools/env.sh"
WORK="${1:-default-encoder-work}"
STEPS="${2:-1500}"
CACHE="${S2DC_BRAIN_CACHE:-$HOME/.cache/s2dc/brain}"
mkdir -p "$WORK"
bash "$ROOT/tools/fetch_brain_data.sh" "$CACHE"
[ -d "$WORK/pool" ] || python "$ROOT/tools/default_encoder_pool.py" "$CACHE" "$WORK/pool"
s2dc pretrain --method s2dc --data "$WORK/pool" --out "$WORK/run" --preset tiny --steps "$STEPS" --device cpu \
  --progress none preprocess.preset=percentile "preprocess.spacing=[2.0,2.0,2.0]" save_every=100 log_every=10 \
  runtime.threads=1 runtime.seed=0 $( [ -d "$WORK/run/checkpoints/last" ] && echo --resume )
python "$ROOT/tools/default_encoder_card.py" "$WORK/run/encoder" "$WORK/pool/pool.json" "$ROOT/S2DCCore/resources/default_encoder" \
  --steps "$STEPS" --command "tools/train_default_encoder.sh WORK $STEPS"
echo "default encoder written to $ROOT/S2DCCore/resources/default_encoder"
