"""Resumable cells: a finished cell is a JSON file, written atomically and never recomputed."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from S2DCCore.utils.tempfiles import write_text_atomic

log = logging.getLogger(__name__)


def run_cell(path: Path, compute: Callable[[], dict]) -> dict:
    """Return the stored result at ``path``, or compute it, stamp its wall time and store it.

    The file is written to a temporary name and renamed, so a run stopped at any moment leaves either no
    result or a whole one (never a partial file that would be read as finished).
    """
    if path.exists():
        return json.loads(path.read_text())
    name = "/".join(path.parts[-3:])
    log.info("study: %s ...", name)
    start = time.perf_counter()
    result = compute()
    result["seconds"] = round(time.perf_counter() - start, 2)
    write_json(path, result)
    log.info("study: %s done in %.1f s", name, result["seconds"])
    return result


def write_json(path: Path, value: dict) -> None:
    """Atomic JSON write (temporary sibling + rename; temporaries of killed writers are removed)."""
    write_text_atomic(path, json.dumps(value, indent=2) + "\n", "a study result", fault="cell.write")
