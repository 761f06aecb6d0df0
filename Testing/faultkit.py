"""Helpers of the fault-injection suite (``Testing/faults``): ways to break a real run and check what is left.

A run is broken in one of three ways, all on real ``s2dc`` processes or the real API:

* ``S2DC_FAULT=point[@n][=action]`` (`S2DCCore.utils.faults`): the process SIGKILLs itself, or the write
  call raises ``ENOSPC``/``EROFS``/``EACCES``, at the n-th hit of a named write point;
* `kill_after_step`: the test SIGKILLs the process after it reported a training step (``--progress json``),
  i.e. during the next step;
* a real small or read-only ``tmpfs`` (the ``small_fs`` fixture, skipped where the test cannot mount one).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from S2DCCore.checkpoint import load_model_dir

# Phantoms of 32 voxels over 400 mm kept at their own spacing: 32³ volumes, seconds per run.
SPACING = "preprocess.spacing=[12.5,12.5,12.5]"
TRAIN = [SPACING, "runtime.threads=1", "runtime.device=cpu", "log_every=1", "save_every=1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# Generous: a run takes seconds on 2 idle cores, but minutes on a machine shared with training jobs.
TIMEOUT_S = 1800


def s2dc_command(*args) -> list[str]:
    return [sys.executable, "-m", "S2DCCore.cli.main", *map(str, args)]


def run_s2dc(*args, fault: str | None = None, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    """``s2dc ARGS`` as a subprocess, with ``S2DC_FAULT=fault`` when given."""
    env = dict(ENV, S2DC_FAULT=fault) if fault else ENV
    return subprocess.run(s2dc_command(*args), capture_output=True, text=True, env=env, timeout=timeout)


def run_killed(*args, fault: str) -> subprocess.CompletedProcess:
    """Run ``s2dc ARGS`` and check that the fault point ``fault`` SIGKILLed it."""
    result = run_s2dc(*args, fault=fault)
    assert result.returncode == -signal.SIGKILL, (result.returncode, result.stderr[-2000:])
    return result


def kill_after_step(*args, step: int) -> int:
    """Start ``s2dc ARGS --progress json``, SIGKILL it once it reported ``step`` (so during the next step)."""
    proc = subprocess.Popen(s2dc_command(*args, "--progress", "json"), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=ENV)
    for line in proc.stdout:
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("event") == "progress" and event["step"] >= step:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=TIMEOUT_S)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    return event["step"]


def one_line_error(stderr: str, command: str) -> str:
    """The single ``s2dc COMMAND: error: ...`` line of ``stderr`` (and nothing that looks like a traceback)."""
    lines = [line for line in stderr.splitlines() if line.startswith(f"s2dc {command}: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders and ``.old`` copies under ``folder`` (a finished run has none)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if ".tmp-" in p.name or p.name.endswith(".old") or p.name.endswith(".tmp"))


def assert_same_model(a: Path, b: Path, exact: bool = True) -> None:
    """The model folders ``a`` and ``b`` hold the same tensors (bit for bit, or to 1e-5 relative)."""
    ta, card_a = load_model_dir(a)
    tb, card_b = load_model_dir(b)
    assert sorted(ta) == sorted(tb) and card_a["step"] == card_b["step"]
    for key in ta:
        if exact:
            assert torch.equal(ta[key], tb[key]), f"{key} differs"
        else:
            torch.testing.assert_close(ta[key], tb[key], rtol=1e-5, atol=1e-6)


def metric_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
