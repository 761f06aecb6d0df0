#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install S2DCCore into it.
# Sourced by tools/demo.sh and tools/test.sh; safe to run again (it only reinstalls when pyproject.toml
# or the torch spec changed).
#   S2DC_PYTHON   interpreter to build the venv from (default: python3, must be 3.10–3.12)
#   S2DC_TORCH    torch requirement (default: torch==2.13.0, the CPU wheel on CPU-only machines;
#                 on a CUDA machine set it to the CUDA build you want, e.g. torch==2.13.0 from your index)
#   S2DC_VENV     where the venv lives (default: <repo>/.venv)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${S2DC_VENV:-$ROOT/.venv}"
PY="${S2DC_PYTHON:-python3}"
TORCH_SPEC="${S2DC_TORCH:-torch==2.13.0}"

if ! "$PY" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)'; then
  echo "tools/env.sh: $PY is $("$PY" --version 2>&1); S2DC needs Python 3.10-3.12 (set S2DC_PYTHON)" >&2
  exit 2
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating virtual environment in $VENV" >&2
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.s2dc-installed"
WANT="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16) $TORCH_SPEC"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "installing $TORCH_SPEC and S2DCCore (editable, with test extras) into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  # torch first and alone, so its pinned build is the one the rest resolves against.
  "$VENV/bin/python" -m pip install --quiet "$TORCH_SPEC"
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[test]"
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
