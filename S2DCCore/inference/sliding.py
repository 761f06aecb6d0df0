"""Sliding-window inference over a whole volume on the model grid (MONAI `sliding_window_inference`).

Windows run on the inference device; the stitched result is accumulated in host memory, so GPU memory
depends on the window only, not on the volume (MONAI's ``sw_device`` / ``device`` split). Autocast is
used on CUDA only; the CPU path runs in float32.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]


def count_windows(image_size: Sequence[int], roi: Sequence[int], overlap: float | Sequence[float]) -> int:
    """Number of windows MONAI visits (its scan interval: ``int(roi·(1 − overlap))``, the full roi if equal)."""
    overlaps = [float(overlap)] * len(roi) if isinstance(overlap, (int, float)) else list(overlap)
    total = 1
    for size, side, overlap in zip(image_size, roi, overlaps):
        size = max(int(size), int(side))
        interval = int(side) if size == side else max(int(side * (1 - overlap)), 1)
        total *= math.ceil((size - side) / interval) + 1 if size > side else 1
    return total


def run_sliding_window(volume: np.ndarray, predictor: Callable, *, roi: Sequence[int], device=None,
                       overlap: float | Sequence[float] = 0.25, sw_batch_size: int = 1, mode: str = "gaussian",
                       progress: ProgressCallback | None = None, pad_value: float = 0.0, precision: str = "bf16"):
    """Run ``predictor`` over ``volume`` in overlapping windows and blend the results.

    Args:
        volume: (X, Y, Z) float32 network input on the model grid.
        predictor: (B, 1, x, y, z) window → (B, C, x', y', z') tensor, or a tuple of such tensors at
            other strides (each is stitched on its own grid).
        roi: window size.
        device: where windows run (default CPU).
        overlap: fraction of the window shared by neighbours (one value, or one per axis).
        sw_batch_size: windows per forward pass.
        mode: ``gaussian`` (centre-weighted) or ``constant`` blending.
        progress: called with (windows done, windows in total).
        pad_value: value used where the volume is smaller than the window.
        precision: autocast on CUDA: ``bf16`` (fp16 on GPUs without native bf16), ``fp16`` or ``fp32``.

    Returns:
        (C, X', Y', Z') float32 CPU tensor, or a tuple of them.
    """
    import torch
    from monai.inferers import sliding_window_inference

    from S2DCCore.utils.runtime import autocast_context

    device = torch.device("cpu") if device is None else torch.device(device)
    inputs = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None]  # (1, 1, X, Y, Z)
    total = count_windows(volume.shape, roi, overlap)
    done = [0]

    def predict(window):
        with autocast_context(device, precision):
            out = predictor(window)
        out = tuple(o.float() for o in out) if isinstance(out, (tuple, list)) else out.float()
        done[0] += window.shape[0]
        if progress is not None:
            progress(min(done[0], total), total)
        return out

    log.debug("sliding window: volume %s, window %s, %d windows on %s", volume.shape, tuple(roi), total, device)
    with torch.inference_mode():
        out = sliding_window_inference(inputs, list(roi), sw_batch_size, predict, overlap=overlap, mode=mode,
                                       cval=pad_value, sw_device=device, device=torch.device("cpu"))
    if isinstance(out, (tuple, list)):
        return tuple(o[0] for o in out)
    return out[0]


def as_device(device=None):
    """``device`` as a ``torch.device``: None → CPU; a string is resolved (``auto`` → cuda/mps/cpu)."""
    import torch

    from S2DCCore.utils.runtime import resolve_device

    if device is None:
        return torch.device("cpu")
    if isinstance(device, str):
        return resolve_device(device)
    return torch.device(device)
