"""Alice and SwinSSL pretraining end to end on the CPU: exported encoders that fine-tuning loads, exact resume
(after SIGKILL for Alice, whose teacher matcher takes over mid-run), torchrun with two gloo processes (Alice:
its centres are all-reduced), DDP flags. Crops are reduced to 32×32×64 to keep the steps short. SwinSSL keeps
no cross-process state of its own (plain DDP), so it is not run under torchrun here, to keep the suite short."""

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
from S2DCCore.config import from_dict, load_config
from S2DCCore.data.phantoms import PhantomConfig, write_phantom_cohort
from S2DCCore.models.encoders import EncoderConfig
from S2DCCore.models.segmenter import SegmenterConfig, build_segmenter, load_pretrained_encoder
from S2DCCore.training import methods
from S2DCCore.training.config import PretrainConfig
from S2DCCore.training.pretrain import pretrain

SMALL = {"alice": ["alice.roi=[32,32,64]", "alice.matcher=oracle"], "swinssl": ["swinssl.roi=[32,32,64]"]}
PARTS = {"alice": ("cls", "patch", "rec"), "swinssl": ("rot", "contrast", "rec")}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return write_phantom_cohort(tmp_path_factory.mktemp("ph") / "ph", cases=2, seed=3, config=PhantomConfig(size=48))


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "S2DCCore.cli.main", "pretrain", *map(str, args)]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_alice_resume_after_sigkill_equals_a_straight_run(cohort, tmp_path):
    # The teacher matcher takes over after step 2, so the resumed run must also restore the teacher exactly.
    overrides = ["alice.roi=[32,32,64]", "alice.matcher=teacher", "alice.matcher_warmup_steps=2",
                 "alice.matcher_roi=[64,64,64]", "save_every=2", "runtime.threads=1"]
    straight = pretrain(cohort, tmp_path / "straight", load_config(
        PretrainConfig, "tiny", ["method=alice", "steps=4", "runtime.device=cpu", "progress=none", *overrides],
        section="pretrain"))
    run = tmp_path / "run"
    args = _cli("--method", "alice", "--data", cohort, "--out", run, "--preset", "tiny", "--steps", 4,
                "--device", "cpu", "--progress", "json", *overrides)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        event = json.loads(line)
        if event.get("event") == "progress" and event["step"] >= 3:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    saved = load_state(run / "checkpoints" / "last")
    assert saved["step"] in (2, 4) and int(saved["model"]["step"]) == saved["step"]
    result = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [m["step"] for m in _metrics(run)] == [1, 2, 3, 4]
    a, _ = load_model_dir(straight)
    b, card = load_model_dir(run / "encoder")
    assert card["step"] == 4
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    centres = load_state(run / "checkpoints" / "last")["model"]["criterion.cls_center.value"]
    assert torch.count_nonzero(centres) > 0  # the centre moved


def _check_encoder(run: Path, method: str, step: int) -> None:
    """Finite metrics of every step, and an encoder card + tensors that fine-tuning loads completely."""
    lines = _metrics(run)
    assert [m["step"] for m in lines] == list(range(1, step + 1))  # one writer
    assert all(torch.isfinite(torch.tensor([m[k] for k in ("loss", *PARTS[method])])).all() for m in lines)
    tensors, card = load_model_dir(run / "encoder")
    assert (card["kind"], card["method"], card["step"], card["token_stage"]) == ("encoder", method, step, 4)
    network = build_segmenter(SegmenterConfig(encoder=from_dict(EncoderConfig, card["architecture"])))
    assert load_pretrained_encoder(network, tensors) == len(tensors)  # every encoder weight, strictly checked
    assert len(tensors) == sum(k.startswith("swinViT.") for k in network.state_dict())


def test_alice_torchrun_two_processes_export_an_encoder_that_finetuning_loads(cohort, tmp_path):
    run = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "S2DCCore.cli.main", "pretrain", "--method", "alice", "--data", str(cohort), "--out", str(run),
         "--preset", "tiny", "--steps", "2", "--device", "cpu", "--progress", "none", "runtime.threads=1",
         *SMALL["alice"]],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    _check_encoder(run, "alice", 2)
    # The centres went through the gloo all-reduce (a collective: a missing rank would have hung or failed).
    centre = load_state(run / "checkpoints" / "last")["model"]["criterion.patch_center.value"]
    assert torch.isfinite(centre).all() and torch.count_nonzero(centre) > 0


def test_swinssl_resume_is_exact_and_exports_an_encoder_that_finetuning_loads(cohort, tmp_path):
    def config(steps: int) -> PretrainConfig:
        return load_config(PretrainConfig, "tiny", ["method=swinssl", f"steps={steps}", "save_every=2",
                                                    "runtime.device=cpu", "runtime.threads=1", "progress=none",
                                                    *SMALL["swinssl"]], section="pretrain")

    straight = pretrain(cohort, tmp_path / "a", config(3))
    pretrain(cohort, tmp_path / "b", config(2))
    resumed = pretrain(cohort, tmp_path / "b", config(3), resume=True)
    a, _ = load_model_dir(straight)
    b, _ = load_model_dir(resumed)
    _check_encoder(tmp_path / "b", "swinssl", 3)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_registry_and_ddp_flags():
    assert {"s2dc", "alice", "swinssl"} <= set(methods.METHODS)
    tiny = load_config(PretrainConfig, "tiny", section="pretrain")
    assert methods.get("alice").has_unused_parameters(tiny)  # the last layers are frozen for 2 steps
    no_freeze = load_config(PretrainConfig, "tiny", ["alice.model.freeze_last_layer_steps=0"], section="pretrain")
    assert not methods.get("alice").has_unused_parameters(no_freeze)
    assert not methods.get("swinssl").has_unused_parameters(tiny)
    assert methods.get("swinssl").has_unused_parameters(
        load_config(PretrainConfig, "tiny", ["swinssl.loss.weight_rot=0"], section="pretrain"))
