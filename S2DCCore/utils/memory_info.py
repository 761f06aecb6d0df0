"""How much host memory is available (Linux ``MemAvailable``), for checks made before a large allocation."""

from __future__ import annotations

import os
import re
from pathlib import Path


def available_host_memory() -> int | None:
    """``MemAvailable`` from /proc/meminfo in bytes (Linux), else free physical pages, else None."""
    try:
        text = Path("/proc/meminfo").read_text()
        match = re.search(r"^MemAvailable:\s+(\d+)\s*kB", text, re.MULTILINE)
        if match:
            return int(match.group(1)) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None
