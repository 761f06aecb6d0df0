"""CUDA code paths checked on the CPU with a monkeypatched ``torch.cuda`` (issue 14, items 2, 6 and 8)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch.overrides import TorchFunctionMode

from S2DCCore.config import RuntimeConfig, load_config
from S2DCCore.inference.memory import available_device_memory
from S2DCCore.training import ddp
from S2DCCore.training.config import PretrainConfig
from S2DCCore.training.state import restore_training_state, save_training_state
from S2DCCore.utils.runtime import autocast_context, seed_everything

GiB = 2**30


@pytest.fixture
def fake_cuda(monkeypatch):
    """A machine with 4 GPUs as far as the set-up code can tell; records ``set_device``."""
    calls = {"set_device": []}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls["set_device"].append(torch.device(d)))
    for var in ("WORLD_SIZE", "LOCAL_RANK", "RANK"):
        monkeypatch.delenv(var, raising=False)
    # setup_run turns on cuDNN autotuning / TF32 for CUDA runs: keep this process's flags as they were.
    flags = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    yield calls
    torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def test_explicit_cuda_index_is_the_training_device(fake_cuda):
    device, info = ddp.setup_run(RuntimeConfig(device="cuda:2"))
    assert device == torch.device("cuda", 2) and info.world_size == 1
    assert fake_cuda["set_device"] == [torch.device("cuda", 2)]


def test_torchrun_device_wraps_local_rank_and_binds_nccl(fake_cuda, monkeypatch):
    # Each process sees one GPU (CUDA_VISIBLE_DEVICES per rank): LOCAL_RANK 3 must map to cuda:0.
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    init = {}
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: init.update(kw))
    monkeypatch.setattr(dist, "get_rank", lambda: 3)
    monkeypatch.setattr(dist, "get_world_size", lambda: 4)
    device, info = ddp.setup_run(RuntimeConfig(device="auto"))
    assert device == torch.device("cuda", 0) and info.rank == 3 and info.local_rank == 3
    assert init["backend"] == "nccl" and init["device_id"] == torch.device("cuda", 0)
    assert init["timeout"].total_seconds() >= 30 * 60


def test_deterministic_sets_the_cublas_workspace(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", torch.backends.cudnn.deterministic)
    try:
        seed_everything(0, 0, deterministic=True)
        import os

        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", ":16:8")
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.parametrize("native, expected", [(False, torch.float16), (True, torch.bfloat16)])
def test_bf16_only_where_native_else_fp16_with_loss_scaling(fake_cuda, monkeypatch, native, expected):
    from S2DCCore.training.loop import make_scaler

    # V100/T4: bf16 is "supported" only through emulation.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation or native)
    context = autocast_context(torch.device("cuda", 0), "bf16")
    assert context.fast_dtype == expected
    assert make_scaler(torch.device("cuda", 0), "bf16").is_enabled() == (expected == torch.float16)
    assert not make_scaler(torch.device("cpu"), "fp16").is_enabled()


def test_device_memory_includes_the_allocators_cached_blocks(fake_cuda, monkeypatch):
    # After one inference the caching allocator keeps its blocks; the driver counts them as used.
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1 * GiB, 10 * GiB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 5 * GiB)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 1 * GiB)
    assert available_device_memory(torch.device("cuda", 0)) == 5 * GiB


def test_resume_with_fp16_from_a_run_saved_without_loss_scaling(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    rng = np.random.default_rng(0)
    save_training_state(tmp_path / "s", 5, model, optimizer, scheduler, torch.amp.GradScaler("cpu", enabled=False),
                        rng, {})
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    step, _ = restore_training_state(tmp_path / "s", model, optimizer, scheduler, scaler, rng)
    assert step == 5 and scaler.get_scale() == 2.0**16


class _RecordArange(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.arange:
            self.calls.append((sys._getframe(1).f_code.co_filename, kwargs.get("device")))
        return func(*args, **kwargs)


def test_s2dc_step_makes_no_host_index_tensor():
    """Every index the S²DC step builds is created on the batch's device (no CPU → GPU copy per step)."""
    from S2DCCore.training.methods import s2dc

    config = load_config(PretrainConfig, "tiny", ["runtime.device=cpu"], section="pretrain")
    torch.manual_seed(0)
    method = s2dc.build_method(config)
    region = torch.rand(1, *(g * r for g, r in zip(config.views.grid, config.views.roi)))
    batch = s2dc.make_batch([region], np.random.default_rng(0), config)
    with _RecordArange() as mode:
        method(batch)
    ours = [device for file, device in mode.calls if file.replace("\\", "/").endswith("training/methods/s2dc.py")]
    assert ours and all(device is not None for device in ours)


def test_inference_passes_its_precision_to_autocast(monkeypatch):
    import contextlib

    from S2DCCore.inference.sliding import run_sliding_window
    from S2DCCore.utils import runtime

    seen = []
    monkeypatch.setattr(runtime, "autocast_context",
                        lambda device, precision="bf16": seen.append(precision) or contextlib.nullcontext())
    out = run_sliding_window(np.zeros((8, 8, 8), np.float32), lambda x: x + 1, roi=(8, 8, 8), precision="fp16")
    assert seen == ["fp16"] and float(out.mean()) == 1.0
