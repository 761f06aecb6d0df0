"""Faults through the Slicer logic with real worker processes: a second Apply on a run folder being
written is refused with the core's one line; a cancelled or crashed worker leaves no lock, no half-written
file and no node."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

from S2DCCore.checkpoint import load_model_dir, load_state
from S2DCCore.utils.run_lock import acquire_run_lock
from S2DCExtensionLib import MRMLBridge
from S2DCExtensionLib.Logic import JobCancelled, S2DCLogic, WorkerError
from S2DCExtensionLib.Protocol import ProgressEvent

TINY = ("preprocess.spacing=[25,25,25]", "runtime.threads=1", "save_every=1")
TIMEOUT_S = 1800  # seconds on idle cores; minutes on a machine shared with training jobs


def _wait_for(predicate, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def test_second_apply_is_refused_and_a_cancelled_run_leaves_no_lock(cohort, tmp_path, worker_env, helpers):
    run = tmp_path / "run"
    logic = S2DCLogic(python=sys.executable, env=worker_env)
    first = logic.startTraining("pretrain", cohort, run, preset="tiny", steps=500, device="cpu",
                                overrides=TINY).start()
    events = []
    assert _wait_for(lambda: events.extend(first.poll()) or any(isinstance(e, ProgressEvent) for e in events)
                     or not first.running, TIMEOUT_S)
    assert first.running, first.process.errorMessage
    second = logic.startTraining("pretrain", cohort, run, preset="tiny", steps=500, device="cpu", resume=True,
                                 overrides=TINY)
    with pytest.raises(WorkerError) as refused:
        second.run(timeout=TIMEOUT_S)
    message = str(refused.value)
    assert str(run) in message and f"PID {first.process.pid}" in message and "is being written by" in message
    assert second.process.returncode == 75 and first.running
    tree = helpers.live_tree(first.process.pid)
    first.cancel()
    assert _wait_for(lambda: not any(helpers.pid_alive(p) for p in tree), 10)
    with pytest.raises(JobCancelled):
        first.result()
    acquire_run_lock(run).release()  # the OS released the killed worker's lock: nothing stale
    assert load_state(run / "checkpoints" / "last")["step"] >= 1  # what is there is whole
    if (run / "encoder").exists():
        load_model_dir(run / "encoder")


@pytest.mark.parametrize("how", ["crash", "cancel"])
def test_a_crashed_or_cancelled_segment_leaves_no_node_and_no_file(scene, model_dirs, worker_env, tmp_path, helpers,
                                                                    how):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    volume = MRMLBridge.addVolume(scene, helpers.cone((20, 18, 16), affine), affine, "input")
    env = {**worker_env, "S2DC_FAULT": "image.write"} if how == "crash" else worker_env  # SIGKILL mid-write
    logic = S2DCLogic(scene=scene, python=sys.executable, env=env, tempRoot=tmp_path)
    nodes = scene.GetNumberOfNodes()
    job = logic.startSegment(volume, model_dirs["segmenter"], device="cpu")
    if how == "crash":
        with pytest.raises(WorkerError, match="killed by SIGKILL"):
            job.run(timeout=TIMEOUT_S)
    else:
        job.start()
        job.cancel()
        with pytest.raises(JobCancelled):
            job.result()
    assert scene.GetNumberOfNodes() == nodes and list(tmp_path.iterdir()) == []
