"""The worker's output protocol: lines in, events out (pure Python).

The worker is the core's CLI. Its stdout and stderr are read as one stream of lines:

* ``{"event": "progress", "phase", "step", "total", "metrics", "eta_s"}`` (``pretrain``/``finetune``
  ``--progress json``, `S2DCCore.training.progress`) → `ProgressEvent`;
* ``{"event": "done", ...}`` → `DoneEvent`;
* ``windows 13/64`` (the sliding-window log of ``segment``/``embed``/``propagate``) → `ProgressEvent`
  with no metrics (the ETA is estimated by the reader);
* anything else → `LogEvent`.

A failed run ends with one line ``s2dc <command>: error: <message>`` (`S2DCCore.cli.main`);
`failureMessage` turns the log and the exit code into that one readable message.
"""

from __future__ import annotations

import json
import math
import re
import signal
from dataclasses import dataclass, field

WINDOWS_RE = re.compile(r"\bwindows (\d+)/(\d+)\b")
ERROR_RE = re.compile(r"^s2dc [\w-]+: error: (.+)$")
EXCEPTION_RE = re.compile(r"^(\w+(?:\.\w+)*(?:Error|Exception)): (.+)$")


@dataclass(frozen=True)
class ProgressEvent:
    """``step`` of ``total`` done in ``phase``; ``metrics`` (loss terms, Dice); ``etaS`` seconds left or None."""

    phase: str
    step: int
    total: int
    metrics: dict = field(default_factory=dict)
    etaS: float | None = None


@dataclass(frozen=True)
class DoneEvent:
    """The worker finished its work normally; ``info`` is the rest of the JSON object."""

    info: dict


@dataclass(frozen=True)
class LogEvent:
    """A line of free text."""

    text: str


def parseLine(line: str, phase: str = "") -> ProgressEvent | DoneEvent | LogEvent:
    """One output line → an event (``phase`` names sliding-window progress, which carries none)."""
    text = line.rstrip("\r\n")
    stripped = text.strip()
    if stripped.startswith("{") and stripped.endswith("}"):
        try:
            payload = json.loads(stripped)
        except json.JSONDecodeError:
            payload = None
        if isinstance(payload, dict) and payload.get("event") == "progress":
            eta = payload.get("eta_s")
            return ProgressEvent(phase=str(payload.get("phase", phase)), step=int(payload.get("step", 0)),
                                 total=int(payload.get("total", 0)), metrics=dict(payload.get("metrics") or {}),
                                 etaS=None if eta is None else float(eta))
        if isinstance(payload, dict) and payload.get("event") == "done":
            return DoneEvent({k: v for k, v in payload.items() if k != "event"})
    match = WINDOWS_RE.search(stripped)
    if match:
        return ProgressEvent(phase=phase, step=int(match.group(1)), total=int(match.group(2)))
    return LogEvent(text)


def estimateEta(elapsedS: float, stepsDone: int, stepsLeft: int) -> float | None:
    """Seconds left at the average pace so far, or None before the first step."""
    if stepsDone <= 0 or elapsedS < 0:
        return None
    return elapsedS / stepsDone * max(0, stepsLeft)


def formatDuration(seconds: float | None) -> str:
    """``75`` → ``"1:15"``, ``3725`` → ``"1:02:05"``, None → ``"?"``."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(max(0.0, seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def formatProgress(event: ProgressEvent) -> tuple[int, str]:
    """(percent 0–100, one-line text) for a progress bar: phase, step/total, metrics, ETA."""
    percent = int(100 * event.step / event.total) if event.total > 0 else 0
    parts = [f"{event.phase} {event.step}/{event.total}".strip()]
    for name, value in event.metrics.items():
        parts.append(f"{name} {value:.4g}" if isinstance(value, (int, float)) else f"{name} {value}")
    parts.append(f"ETA {formatDuration(event.etaS)}")
    return max(0, min(100, percent)), " · ".join(parts)


def failureMessage(lines: list[str], returncode: int | None) -> str:
    """One readable message for a failed run: the CLI's error line, else the last exception, else the code."""
    for line in reversed(lines):
        match = ERROR_RE.match(line.strip())
        if match:
            return match.group(1)
    for line in reversed(lines):
        match = EXCEPTION_RE.match(line.strip())
        if match:
            return f"{match.group(1)}: {match.group(2)}"
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (the system may have run out of memory)" if name == "SIGKILL" else ""
        return f"the worker process was killed by {name}{hint}"
    last = next((line.strip() for line in reversed(lines) if line.strip()), "")
    suffix = f": {last}" if last else ""
    return f"the worker process failed with exit code {returncode}{suffix}"
