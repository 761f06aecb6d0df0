"""Device timing for benchmarks/gpu_check.py: synchronise, reset and read peak memory, free caches, and time
whole training steps on a fixed batch (also used by the checks' batches and configs)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := VmRSS
    except OSError:
        pass


def peaks(device) -> dict:
    """Peak GPU memory (allocated / reserved by the caching allocator) and the process's peak RSS, MiB."""
    import torch

    out = {}
    if device.type == "cuda":
        out["gpu_peak_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
        out["gpu_reserved_mib"] = round(torch.cuda.max_memory_reserved(device) / 2**20)
    try:
        match = re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
        out["host_peak_mib"] = round(int(match.group(1)) / 1024) if match else None
    except OSError:
        out["host_peak_mib"] = None
    return out


def free(device) -> None:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def pretrain_config(method: str, preset: str, device, extra: list[str] = ()):
    from S2DCCore.config import load_config
    from S2DCCore.training.config import PretrainConfig

    return load_config(PretrainConfig, preset, [f"method={method}", f"runtime.device={device.type}", *extra],
                       section="pretrain")


def make_batch(method: str, config, seed: int = 0) -> dict:
    """A fixed random batch of ``config.batch_size`` for ``method``, built on the CPU as the loaders do."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if method == "s2dc":
        from S2DCCore.training.methods import s2dc

        shape = tuple(g * r for g, r in zip(config.views.grid, config.views.roi))
        return s2dc.make_batch([torch.rand(1, *shape) for _ in range(config.batch_size)], rng, config)
    if method == "alice":
        from S2DCCore.data.views.alice import collate_pairs, make_alice_pair
        from S2DCCore.data.views.matching import SelfMatcher

        a = config.alice
        side = [max(96, r + 2 * a.point_margin + 8) for r in a.roi]
        volumes = [torch.rand(1, *side) for _ in range(2)]
        options = dict(roi=a.roi, threshold=a.matcher_threshold, tries=a.matcher_tries, margin=a.point_margin,
                       mask_patch=a.mask_patch, mask_ratio=a.mask_ratio, augment=a.augment,
                       rotate_degrees=a.rotate_degrees, noise_std=a.noise_std)
        return collate_pairs([make_alice_pair(volumes, rng, SelfMatcher(), **options)
                              for _ in range(config.batch_size)])
    if method == "swinssl":
        from S2DCCore.training.methods import swinssl

        side = [max(96, r) for r in config.swinssl.roi]
        return next(swinssl.make_batches([torch.rand(1, *side) for _ in range(config.batch_size)], rng, config))
    raise ValueError(method)


def to_device(batch: dict, device) -> dict:
    import torch

    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def timed_steps(model, batch, device, precision: str, steps: int, warmup: int, grad_clip: float = 1.0) -> dict:
    """Whole training steps (forward, backward, clip, AdamW, hook) on one batch: steps/s and peak memory."""
    import torch

    from S2DCCore.training.loop import make_scaler, read, step_tensors
    from S2DCCore.training.optim import param_groups
    from S2DCCore.utils.runtime import resolve_precision

    resolved = resolve_precision(device, precision)
    optimizer = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-5)
    scaler = make_scaler(device, resolved)
    batch = to_device(batch, device)
    for _ in range(warmup):
        step_tensors(model, batch, optimizer, scaler, device, resolved, grad_clip)
    sync(device)
    reset_peak(device)
    start = time.perf_counter()
    for _ in range(steps):
        tensors = step_tensors(model, batch, optimizer, scaler, device, resolved, grad_clip)
    result = read(tensors)  # one synchronisation at the end, as the loop does between log steps
    sync(device)
    seconds = time.perf_counter() - start
    return {"steps_per_s": round(steps / seconds, 3), "step_s": round(seconds / steps, 4), "loss": result.loss,
            "precision_used": resolved, **peaks(device)}
