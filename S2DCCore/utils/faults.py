"""Fault points: named places where a test can SIGKILL the process or inject an I/O error.

A test sets ``S2DC_FAULT`` in the environment of the run it wants to break, e.g.::

    S2DC_FAULT=checkpoint.swap@2          SIGKILL this process at the 2nd checkpoint swap
    S2DC_FAULT=export.write=ENOSPC        raise OSError(ENOSPC) at the first encoder/model export
    S2DC_FAULT=image.write=EROFS,cell.write@3

``name[@n][=action]``: ``n`` counts the hits of that point in this process (default 1); ``action`` is
``kill`` (default), or an errno name (``ENOSPC``, ``EROFS``, ``EACCES``, ...) raised as the `OSError`
the write call would raise. Without the variable a fault point costs one dictionary look-up. The points
and the suite that uses them are listed in ``docs/reliability.md``.
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter
from pathlib import Path

ENV = "S2DC_FAULT"
_hits: Counter = Counter()


def fault_point(name: str, path: str | Path | None = None) -> None:
    """Kill this process, or raise the requested `OSError` about ``path``, if ``S2DC_FAULT`` asks for it here."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    _hits[name] += 1
    for point, nth, action in parse_faults(spec):
        if point == name and nth == _hits[name]:
            if action == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            code = getattr(errno, action)
            raise OSError(code, os.strerror(code), None if path is None else str(path))


def parse_faults(spec: str) -> list[tuple[str, int, str]]:
    """``"a@2=ENOSPC,b"`` → ``[("a", 2, "ENOSPC"), ("b", 1, "kill")]``."""
    faults = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        where, _, action = item.partition("=")
        point, _, nth = where.partition("@")
        action = action or "kill"
        if action != "kill" and not isinstance(getattr(errno, action, None), int):
            raise ValueError(f"{ENV}: unknown action {action!r} in {item!r} (kill or an errno name)")
        faults.append((point, int(nth or 1), action))
    return faults


def reset_fault_counts() -> None:
    """Forget the hits counted so far (for tests that inject faults in their own process)."""
    _hits.clear()
