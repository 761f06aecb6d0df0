#!/usr/bin/env bash
# What the S2DC module shows in Slicer's slice views, as PNGs, headless: tools/screenshots.sh OUT [options]
# Builds .venv if needed (tools/env.sh), makes a phantom, trains a tiny encoder and segmenter for a few steps,
# runs the module's logic (segment, embed, propagate) into an MRML scene and renders the red/yellow/green
# slice views through slicer-core's slice logic and displayable managers, offscreen (EGL; no X server).
# Options go to tools/screenshots.py (--size, --phantom-size, --pretrain-steps, --finetune-steps, --keep-work).
# Needs Mesa's EGL and GL libraries (Debian/Ubuntu: libegl1 libgl1 libgles2; tools/egl.sh installs them with
# apt-get when run as root). S2DC_VTK_WINDOW=vtkOSOpenGLRenderWindow renders through OSMesa instead.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
  echo "usage: tools/screenshots.sh OUT [--size N] [--phantom-size N] [--pretrain-steps N] [--finetune-steps N]" >&2
  exit 2
fi
source "$ROOT/tools/egl.sh"
if [ -z "${S2DC_VTK_WINDOW:-}" ] && ! s2dc_have_egl; then
  exit 2
fi
source "$ROOT/tools/env.sh"
cd "$ROOT"
exec python tools/screenshots.py "$@"
