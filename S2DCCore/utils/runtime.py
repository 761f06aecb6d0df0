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
            # No index: the training set-up picks LOCAL_RANK % device_count under torchrun (a bare
            # LOCAL_RANK is invalid when each process sees one GPU), the current device otherwise.
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but CUDA is not available (use --device cpu or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) are visible")
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
        # cuBLAS is only deterministic with a fixed workspace; it must be set before its first call.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    return used


def configure_backends(device, *, deterministic: bool = False, tf32: bool = True) -> None:
    """Speed settings for a CUDA run: cuDNN autotuning unless ``deterministic``; TF32 matrix products
    and convolutions when ``tf32`` (and not deterministic). The OT's matrix products stay in full fp32
    (`full_precision_matmul`). A no-op on other devices."""
    import torch

    if getattr(device, "type", str(device)) != "cuda":
        return
    torch.backends.cudnn.benchmark = not deterministic
    fast = bool(tf32) and not deterministic
    torch.backends.cuda.matmul.allow_tf32 = fast
    torch.backends.cudnn.allow_tf32 = fast


@contextlib.contextmanager
def full_precision_matmul():
    """Matrix products in full fp32 inside the block, whatever the TF32 setting (the OT's Sinkhorn
    iterations compound TF32's 10-bit mantissa error); restores the previous setting after."""
    import torch

    previous = torch.backends.cuda.matmul.allow_tf32
    if not previous:
        yield
        return
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def resolve_precision(device, precision: str = "bf16") -> str:
    """The precision a run actually uses on ``device``: ``fp32`` off CUDA; on CUDA ``bf16`` only where the
    GPU has native bf16 (Ampere and newer), else ``fp16`` (V100/T4 report bf16 through slow emulation).

    Raises:
        UsageError: ``precision`` is not fp32, bf16 or fp16.
    """
    if precision not in ("fp32", "bf16", "fp16"):
        raise UsageError(f"precision must be fp32, bf16 or fp16, not {precision!r}")
    if getattr(device, "type", str(device)) != "cuda":
        return "fp32"
    if precision == "bf16":
        import torch

        try:
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # older torch without the keyword
            native = torch.cuda.is_bf16_supported()
        if not native:
            return "fp16"
    return precision


def set_threads(threads: int | None) -> None:
    """Limit torch's intra-op CPU threads (None keeps torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def autocast_context(device, precision: str = "bf16"):
    """Mixed precision on CUDA only (``bf16``/``fp16``, see `resolve_precision`); a no-op elsewhere or for ``fp32``."""
    import torch

    precision = resolve_precision(device, precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type="cuda", dtype=dtype)
