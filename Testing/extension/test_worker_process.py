"""The worker process runner with real processes: events, failures, ETA, and cancel killing the tree
(a synthetic three-level tree, and a real ``pretrain`` worker)."""

from __future__ import annotations

import itertools
import sys
import time

import pytest

from S2DCExtensionLib.Logic import JobCancelled, S2DCLogic
from S2DCExtensionLib.Protocol import DoneEvent, LogEvent, ProgressEvent
from S2DCExtensionLib.WorkerProcess import CANCELLED, FAILED, SUCCEEDED, WorkerProcess

# A worker that starts a child which starts a grandchild (ignoring SIGTERM), reports progress, then sleeps.
TREE = """
import json, signal, subprocess, sys, time
depth = int(sys.argv[1])
if depth == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    subprocess.Popen([sys.executable, "-c", sys.argv[2], str(depth - 1), sys.argv[2]])
if depth == 2:
    print(json.dumps({"event": "progress", "phase": "fake", "step": 1, "total": 10, "metrics": {"loss": 1.5},
                      "eta_s": 9.0}), flush=True)
time.sleep(120)
"""
# The tiny phantoms are 16 voxels over 400 mm: keep them at their own spacing (the presets resample to 1.5 mm).
TINY = ("preprocess.spacing=[25,25,25]", "runtime.threads=1", "save_every=1")


def _wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def test_cancel_kills_the_whole_process_tree(helpers):
    worker = WorkerProcess([sys.executable, "-c", TREE, "2", TREE], phase="fake").start()
    events = []
    assert _wait_for(lambda: events.extend(worker.poll()) or any(isinstance(e, ProgressEvent) for e in events), 30)
    assert _wait_for(lambda: len(helpers.live_tree(worker.pid)) == 3, 30)
    tree = helpers.live_tree(worker.pid)
    worker.cancel(grace=0.5)
    assert worker.state == CANCELLED and worker.errorMessage == "cancelled" and not worker.running
    assert _wait_for(lambda: not any(helpers.pid_alive(p) for p in tree), 5), "processes of the tree survived"
    assert worker.poll() == []  # nothing is reported after a cancel


def test_failure_becomes_one_readable_message():
    code = ("import sys; print('segmenting x'); print('s2dc segment: error: /m is an encoder; use embed', "
            "file=sys.stderr); sys.exit(2)")
    worker = WorkerProcess([sys.executable, "-c", code]).start()
    seen = []
    assert worker.wait(timeout=60, onEvent=seen.append) == FAILED
    assert worker.returncode == 2 and worker.errorMessage == "/m is an encoder; use embed"
    assert seen[0] == LogEvent("segmenting x") and list(worker.lines)[-1].startswith("s2dc segment: error")


def test_sliding_window_progress_gets_an_eta_from_the_pace_so_far():
    code = "print('windows 1/4'); print('windows 2/4'); print(); print('windows 4/4')"
    clock = itertools.count(0.0, 10.0).__next__  # each progress line arrives 10 s after the previous one
    worker = WorkerProcess([sys.executable, "-c", code], phase="segment", clock=clock).start()
    events = []
    assert worker.wait(onEvent=events.append) == SUCCEEDED and worker.errorMessage is None
    assert [(e.step, e.total, e.etaS) for e in events] == [(1, 4, None), (2, 4, 20.0), (4, 4, 0.0)]
    assert all(e.phase == "segment" for e in events)  # the blank line is not an event


def test_pretrain_worker_reports_json_progress_and_returns_the_encoder(cohort, tmp_path, worker_env):
    logic = S2DCLogic(python=sys.executable, env=worker_env)
    job = logic.startTraining("pretrain", cohort, tmp_path / "run", preset="tiny", steps=2, device="cpu",
                              overrides=TINY)
    assert job.process.args[-len(TINY):] == list(TINY) and "--progress" in job.process.args
    events = []
    encoder = job.run(onEvent=events.append, timeout=300)
    progress = [e for e in events if isinstance(e, ProgressEvent)]
    assert [(e.phase, e.step, e.total) for e in progress] == [("pretrain s2dc", 1, 2), ("pretrain s2dc", 2, 2)]
    assert {"loss", "p2p", "p2s", "global"} <= set(progress[-1].metrics) and progress[0].etaS is not None
    assert isinstance(events[-2] if isinstance(events[-1], LogEvent) else events[-1], DoneEvent)
    assert encoder == tmp_path / "run" / "encoder" and (encoder / "model.json").is_file()


def test_cancelling_a_running_pretrain_kills_its_tree(cohort, tmp_path, worker_env, helpers):
    logic = S2DCLogic(python=sys.executable, env=worker_env)
    job = logic.startTraining("pretrain", cohort, tmp_path / "run", preset="tiny", steps=500, device="cpu",
                              overrides=TINY).start()
    first = []
    assert _wait_for(lambda: any(isinstance(e, ProgressEvent) for e in first) or first.extend(job.poll()) or
                     not job.running, 240, interval=0.2)
    assert job.running, job.process.errorMessage
    tree = helpers.live_tree(job.process.pid)
    job.cancel()
    assert _wait_for(lambda: not any(helpers.pid_alive(p) for p in tree), 5), "the pretrain worker survived"
    with pytest.raises(JobCancelled):
        job.result()
