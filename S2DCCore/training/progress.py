"""Progress reporting: a terminal bar with loss terms and ETA, or JSON lines for the Slicer worker.

The JSON-lines protocol (one object per line on stdout) is what the Slicer module reads:
``{"event": "progress", "phase": ..., "step": n, "total": N, "metrics": {...}, "eta_s": s}``, plus
``{"event": "done", ...}`` at the end; everything else the core prints goes to stderr.
"""

from __future__ import annotations

import json
import sys
import time


class Progress:
    """Report training progress in ``mode`` ``bar`` (stderr), ``json`` (stdout lines) or ``none``."""

    def __init__(self, phase: str, total: int, start: int = 0, mode: str = "bar", every: int = 1) -> None:
        if mode not in ("bar", "json", "none"):
            raise ValueError(f"progress mode must be bar, json or none, not {mode!r}")
        self.phase, self.total, self.start, self.mode, self.every = phase, total, start, mode, max(1, every)
        self._t0 = time.perf_counter()
        self._tty = sys.stderr.isatty()

    def eta(self, step: int) -> float:
        done = step - self.start
        if done <= 0:
            return float("nan")
        return (time.perf_counter() - self._t0) / done * (self.total - step)

    def update(self, step: int, metrics: dict[str, float]) -> None:
        """Report that ``step`` of ``total`` steps is done (1-based), with its metrics."""
        if self.mode == "none" or (step % self.every and step != self.total):
            return
        eta = self.eta(step)
        if self.mode == "json":
            print(json.dumps({"event": "progress", "phase": self.phase, "step": step, "total": self.total,
                              "metrics": metrics, "eta_s": None if eta != eta else round(eta, 1)}), flush=True)
            return
        width = 24
        filled = int(width * step / max(1, self.total))
        terms = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        eta_text = "?" if eta != eta else time.strftime("%M:%S", time.gmtime(eta)) if eta < 3600 else f"{eta / 3600:.1f}h"
        line = f"{self.phase} [{'#' * filled}{'.' * (width - filled)}] {step}/{self.total} {terms} eta {eta_text}"
        end = "\n" if (not self._tty or step == self.total) else ""
        print(("\r" if self._tty else "") + line, end=end, file=sys.stderr, flush=True)

    def done(self, **info) -> None:
        """Final event (JSON mode) so a reader knows the run ended normally."""
        if self.mode == "json":
            print(json.dumps({"event": "done", "phase": self.phase, **info}), flush=True)
