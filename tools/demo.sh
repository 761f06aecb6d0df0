#!/usr/bin/env bash
# The main job (the README's first command): builds .venv if needed, then `s2dc demo OUT`.
# Usage: tools/demo.sh [OUT] [extra s2dc demo options]   (OUT defaults to ./s2dc-demo; it must not exist)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/tools/env.sh"
OUT="${1:-s2dc-demo}"
shift || true
exec s2dc demo "$OUT" "$@"
