#!/usr/bin/env bash
# The whole test suite (the README's test command): builds .venv if needed, then runs pytest on Testing/.
# Extra arguments go to pytest (e.g. tools/test.sh -k geometry -x; -n 0 runs in one process).
# Two pytest-xdist workers, one thread each (Testing/conftest.py), files kept whole on one worker so module
# fixtures are built once: much of the suite waits on subprocesses (torch imports, torchrun, workers).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/tools/env.sh"
source "$ROOT/tools/egl.sh"   # Mesa EGL for the offscreen slice-view tests (installed when root + apt)
cd "$ROOT"
set +e
python -m pytest Testing -n 2 --dist loadfile "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "tools/test.sh: no tests ran" >&2
  exit 1
fi
exit "$status"
