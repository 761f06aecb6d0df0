"""Metrics of a run: JSON lines in ``RUN/metrics.jsonl`` and, when installed, TensorBoard in ``RUN/tb``.

A run killed mid-line leaves a torn last line; on resume it is dropped with every line past the restored
step, and the file is rewritten atomically, so each step appears once.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from S2DCCore.utils.disk import storage_errors
from S2DCCore.utils.faults import fault_point
from S2DCCore.utils.tempfiles import sweep_stale

log = logging.getLogger(__name__)


def kept_lines(text: str, resume_step: int) -> list[str]:
    """The complete JSON lines of ``text`` with ``step ≤ resume_step`` (torn or corrupt lines dropped)."""
    kept = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("step", 0) <= resume_step:
            kept.append(line)
    return kept


class MetricsWriter:
    """Append one JSON object per logged step; on resume, drop lines past the restored step."""

    def __init__(self, run_dir: Path, resume_step: int = 0, tensorboard: bool = True) -> None:
        self.path = run_dir / "metrics.jsonl"
        sweep_stale(self.path)
        if self.path.exists():
            kept = kept_lines(self.path.read_text(errors="replace"), resume_step)
            tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
            with storage_errors(self.path, "the metrics log"):
                tmp.write_text("".join(line + "\n" for line in kept))
                os.replace(tmp, self.path)
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=resume_step + 1)
            except ImportError:
                log.info("tensorboard is not installed; metrics go to %s only", self.path)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        line = json.dumps({"step": step, **metrics}) + "\n"
        with storage_errors(self.path, "the metrics log", len(line)), self.path.open("a") as handle:
            fault_point("metrics.write", self.path)
            handle.write(line)
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
