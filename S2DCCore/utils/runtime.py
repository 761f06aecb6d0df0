"""Runtime resolved once at the entry point: device, seed, threads, autocast.

Library code receives a ``torch.device``; it never picks one. Autocast is only enabled on CUDA (the
CPU path runs fp32, the reference every test checks).
"""

from __future__ import annotations

import contextlib
import os
import random

from S2DCCore.errors import UsageError


def resolve_device(name: str = "auto"):
    """``auto`` → cuda, then mps, then cpu; an explicit device that is absent is an error."""
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but CUDA is not available (use --device cpu or auto)")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("device 'mps' requested but MPS is not available")
    return device


def seed_everything(seed: int, rank: int = 0, deterministic: bool = False) -> int:
    """Seed python, numpy and torch with ``seed + rank``; return the seed used.

    Limits, as MONAI's `set_determinism` states too: CUDA kernels (atomics in scatter/index ops,
    cuDNN autotuning) may still differ between runs unless ``deterministic`` is set, and data-loader
    workers need their own seeds (the project's loaders run in the main process).
    """
    import numpy as np
    import torch

    used = int(seed) + int(rank)
    random.seed(used)
    np.random.seed(used % 2**32)
    torch.manual_seed(used)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    return used


def set_threads(threads: int | None) -> None:
    """Limit torch's intra-op CPU threads (None keeps torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def autocast_context(device, precision: str = "bf16"):
    """Mixed precision on CUDA only (``bf16``/``fp16``); a no-op elsewhere or for ``fp32``."""
    import torch

    if getattr(device, "type", str(device)) != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        raise UsageError(f"precision must be fp32, bf16 or fp16, not {precision!r}")
    return torch.autocast(device_type="cuda", dtype=dtype)
