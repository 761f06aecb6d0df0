"""S²DC pretraining end to end on the CPU: real processes, real files, resume after SIGKILL, torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from S2DCCore.checkpoint import load_model_dir, load_state
from S2DCCore.config import load_config
from S2DCCore.data.phantoms import PhantomConfig, write_phantom_cohort
from S2DCCore.training.config import PretrainConfig
from S2DCCore.training.loop import NonFiniteLossError
from S2DCCore.training.pretrain import pretrain

TINY = ["runtime.device=cpu", "runtime.threads=1", "progress=none", "log_every=1"]


def tiny(*overrides: str) -> PretrainConfig:
    return load_config(PretrainConfig, "tiny", TINY + list(overrides), section="pretrain")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return write_phantom_cohort(tmp_path_factory.mktemp("ph") / "ph", cases=2, seed=3, config=PhantomConfig(size=48))


def _cli(*args, **kwargs) -> list[str]:
    return [sys.executable, "-m", "S2DCCore.cli.main", "pretrain", *map(str, args)]


def _metric_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_cli_run_writes_encoder_checkpoint_and_finite_metrics(cohort, tmp_path):
    run = tmp_path / "run"
    result = subprocess.run(_cli("--data", cohort, "--out", run, "--preset", "tiny", "--steps", 3, "--device", "cpu",
                                 "save_every=2", "runtime.threads=1", "progress=none"),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    tensors, card = load_model_dir(run / "encoder")
    assert card["kind"] == "encoder" and card["method"] == "s2dc" and card["step"] == 3
    assert card["architecture"]["feature_size"] == 12 and card["intensity_preset"] == "ct"
    assert all(k.startswith("swinViT.") for k in tensors)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3]
    for m in lines:
        assert all(torch.isfinite(torch.tensor(m[k])) for k in ("loss", "p2p", "p2s", "global"))
    assert load_state(run / "checkpoints" / "last")["step"] == 3
    assert json.loads((run / "config.json").read_text())["preset"] == "tiny"
    # Refuses to reuse a non-empty run folder without --resume.
    again = subprocess.run(_cli("--data", cohort, "--out", run, "--preset", "tiny", "--steps", 3),
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "use --resume" in again.stderr


def test_resume_is_exact(cohort, tmp_path):
    straight = pretrain(cohort, tmp_path / "a", tiny("steps=4"))
    pretrain(cohort, tmp_path / "b", tiny("steps=2", "save_every=2"))
    resumed = pretrain(cohort, tmp_path / "b", tiny("steps=4"), resume=True)
    a, _ = load_model_dir(straight)
    b, card = load_model_dir(resumed)
    assert card["step"] == 4
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    assert _metric_steps(tmp_path / "b") == [1, 2, 3, 4]


def test_sigkill_then_resume_continues_from_last_saved_step(cohort, tmp_path):
    run = tmp_path / "run"
    args = _cli("--data", cohort, "--out", run, "--preset", "tiny", "--steps", 6, "--device", "cpu",
                "--progress", "json", "save_every=2", "runtime.threads=1")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        event = json.loads(line)
        if event.get("event") == "progress" and event["step"] >= 3:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    saved = load_state(run / "checkpoints" / "last")["step"]
    assert saved in (2, 4)
    result = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    steps = [json.loads(line)["step"] for line in result.stdout.splitlines()
             if line.startswith("{") and json.loads(line)["event"] == "progress"]
    assert steps[0] == saved + 1 and steps[-1] == 6
    assert _metric_steps(run) == list(range(1, 7))
    assert load_model_dir(run / "encoder")[1]["step"] == 6


@pytest.fixture(scope="module")
def roomy_cohort(tmp_path_factory) -> Path:
    """Volumes larger than the tiny region on every axis, so two ranks' random regions almost never coincide."""
    return write_phantom_cohort(tmp_path_factory.mktemp("ph80") / "ph", cases=2, seed=3, config=PhantomConfig(size=80))


def test_torchrun_two_processes_gloo_rank0_writes(roomy_cohort, tmp_path):
    cohort = roomy_cohort
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "S2DCCore.cli.main", "pretrain", "--data", str(cohort), "--out", str(run), "--preset", "tiny",
         "--steps", "2", "--device", "cpu", "--progress", "none", "save_every=2", "runtime.threads=1"],
        capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _metric_steps(run) == [1, 2]  # one writer: each step logged once
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json", "encoder", "metrics.jsonl", "tb"]
    state = load_state(run / "checkpoints" / "last")
    assert state["step"] == 2
    # The queue holds keys from both ranks: 2 ranks × 1 key per step × 2 steps were enqueued.
    assert int(state["model"]["queue.ptr"]) == 4
    queue = state["model"]["queue.queue"]
    assert not torch.allclose(queue[2], queue[3])  # step 2: rank 0's key, rank 1's key

    # Resume for one more step: each rank must continue its own sampler (issue 14, item 1). Restoring rank
    # 0's generator on every rank made both draw the same region and views, hence the same key.
    resumed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "S2DCCore.cli.main", "pretrain", "--data", str(cohort), "--out", str(run), "--preset", "tiny",
         "--steps", "3", "--device", "cpu", "--progress", "none", "--resume", "runtime.threads=1"],
        capture_output=True, text=True, timeout=600, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    state = load_state(run / "checkpoints" / "last")
    assert state["step"] == 3 and int(state["model"]["queue.ptr"]) == 6
    queue = state["model"]["queue.queue"]
    assert not torch.allclose(queue[4], queue[5]), "after the resume both ranks drew the same batch"
    assert len(state["rng_ranks"]) == 2


def test_non_finite_loss_stops_the_run(cohort, tmp_path):
    config = tiny("steps=4", "optim.lr=1e30", "optim.warmup_steps=0", "optim.grad_clip=0")
    with pytest.raises(NonFiniteLossError, match="loss is nan|loss is inf"):
        pretrain(cohort, tmp_path / "nan", config)
