"""Estimate the memory an inference needs before running it, and refuse clearly when it will not fit.

Being killed by the kernel's OOM killer half-way through a large CT gives the user nothing to act on;
`check_budget` instead raises one line saying how much is needed, of what, and what the budget is.

The estimate adds the arrays the pipeline holds (input copy, outputs on the input grid, the volume on the
model grid, MONAI's stitched output and count map) and the network's peak for one window. For the Swin
networks that peak is dominated by stage-0 window attention, three float32 copies (scores, softmax,
shifted-window mask) of ``heads × ws³`` per token, or by the decoder's full-resolution maps, whichever is
larger, plus a per-channel term. Calibrated on CPU (torch 2.13, MONAI 1.6.1) against the measured peak
RSS of one forward pass of SwinUNETR-v2 (F = 12, 24, 48; attention windows 4 and 7; 64³ to 128³ inputs):
the estimate is 1.2–1.6 × the measurement (benchmarks/inference.py prints the ratio for
whole runs).

The default budget is 80 % of ``MemAvailable`` (/proc/meminfo) for the host and 90 % of the free CUDA
memory for a GPU; the headroom covers allocator fragmentation and the estimate's own error.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from S2DCCore.utils.memory_info import available_host_memory  # noqa: F401 (re-exported)
from S2DCCore.errors import DataError, UsageError
from S2DCCore.geometry import SLAB

HOST_FRACTION = 0.8
CUDA_FRACTION = 0.9
# Fitted on CPU forward passes (see the module docstring): bytes per stage-0 token and feature channel.
BYTES_PER_TOKEN_CHANNEL = 80
# Float32 copies of each window-attention matrix alive at the peak (scores, mask-added, softmax).
ATTENTION_COPIES = 3
# Full-resolution F-channel float32 maps alive at the decoder's peak (measured 11.4 for F=12, window 4, 64³:
# skip connection, upsampled map, their concatenation, the residual block's convolutions and norms).
DECODER_MAPS = 12
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


class MemoryBudgetError(DataError):
    """The estimated memory of an inference exceeds the budget (exit code 1, like other bad input)."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes an inference is expected to need.

    Attributes:
        host: bytes of system memory.
        device: bytes on the accelerator (0 when running on the CPU, where everything is host memory).
        parts: named contributions (bytes), largest first when described.
        summary: what the estimate was computed for (grid, classes, window), for messages.
        advice: what the user can do when it does not fit (the end of the refusal).
    """

    host: int
    device: int
    parts: dict[str, int] = field(default_factory=dict)
    summary: str = ""
    advice: str = "free memory, use a coarser model spacing or a smaller window, or set --memory-budget"

    def describe(self) -> str:
        top = sorted(self.parts.items(), key=lambda kv: -kv[1])[:3]
        return ", ".join(f"{name} {format_bytes(size)}" for name, size in top)


def format_bytes(n: float) -> str:
    """``1536 → '1.5 KiB'``; binary units, as ``free -h`` prints."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def parse_size(text: str | int | float) -> int:
    """Bytes from ``"6G"``, ``"6GB"``, ``"6GiB"``, ``"512M"``, ``"1.5g"`` or a plain number (binary units).

    Raises:
        UsageError: unparseable or not positive.
    """
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", str(text).lower())
        if not match:
            raise UsageError(f"memory size {text!r} is not a number with an optional K/M/G/T unit (e.g. 6G)")
        value = float(match.group(1)) * _UNITS[match.group(2)]
    if value <= 0:
        raise UsageError(f"memory size must be positive, not {text!r}")
    return int(value)


def available_device_memory(device) -> int | None:
    """Memory a CUDA ``device`` can give this process, in bytes; None for other devices.

    The driver's free memory plus what this process's caching allocator holds reserved but unused:
    after one inference the allocator keeps its blocks, which the driver counts as used, but the next
    inference in the same process reuses them.
    """
    if getattr(device, "type", str(device)) != "cuda":
        return None
    import torch

    free, _total = torch.cuda.mem_get_info(device)
    cached = max(0, int(torch.cuda.memory_reserved(device)) - int(torch.cuda.memory_allocated(device)))
    return int(free) + cached


def window_activation_bytes(roi, *, feature_size: int | None, out_channels: int, patch_size: int = 2,
                            window_size: int = 7, heads: int = 3, decoder: bool = True) -> int:
    """Peak bytes of one forward pass on a ``roi`` window (batch 1), see the module docstring.

    Args:
        roi: window side lengths in voxels.
        feature_size: Swin feature size F, or None for an unknown network (then only its output is counted).
        out_channels: channels of the network's output.
        patch_size / window_size / heads: Swin patch size, attention window and stage-0 heads.
        decoder: whether a full-resolution decoder runs (segmenters) or only the encoder (embeddings).
    """
    voxels = math.prod(int(r) for r in roi)
    if feature_size is None:
        return 4 * voxels * (out_channels + 2)
    # Window attention pads the stage-0 token grid up to whole windows.
    tokens = math.prod(math.ceil(int(r) / patch_size / window_size) * window_size for r in roi)
    attention = tokens * ATTENTION_COPIES * 4 * heads * window_size**3
    maps = DECODER_MAPS * 4 * feature_size * voxels if decoder else 0
    return max(attention, maps) + tokens * BYTES_PER_TOKEN_CHANNEL * feature_size + 4 * out_channels * voxels


def estimate_inference(*, input_shape, model_shape, roi, out_channels: int, out_stride: int = 1,
                       output_bytes_per_voxel: int = 2, feature_size: int | None = None, n_parameters: int = 0,
                       sw_batch_size: int = 1, decoder: bool = True, on_device: bool = False,
                       architecture: dict | None = None, mapped_channels: int | None = None,
                       summary: str = "") -> MemoryEstimate:
    """Memory for a sliding-window inference on the model grid mapped back to the input grid.

    Args:
        input_shape: the input grid's shape.
        model_shape: the model grid's shape (before padding to the window).
        roi: sliding-window size.
        out_channels: channels stitched over the model grid (classes, or feature channels).
        out_stride: the stitched output's stride (1 for logits, 2^(s+1) for stage-s features).
        output_bytes_per_voxel: bytes of results kept on the input grid per voxel (labels, overlays).
        feature_size / architecture: the Swin network (None for a network-free callable).
        n_parameters: weights of the network.
        sw_batch_size: windows per forward pass.
        decoder: segmenter (True) or encoder only (False).
        on_device: the network runs on a CUDA device (weights and window activations go there).
        mapped_channels: channels interpolated onto the input grid together (default ``out_channels``).
        summary: a description used in messages.
    """
    arch = architecture or {}
    input_voxels = math.prod(int(n) for n in input_shape)
    padded = math.prod(max(int(n), int(r)) for n, r in zip(model_shape, roi))
    # Mapping back runs a slab of input slices at a time: coordinates, sampling grid, every channel, labels.
    slab = min(SLAB, int(input_shape[2])) * int(input_shape[0]) * int(input_shape[1])
    host = {
        "input grid arrays": input_voxels * (4 + output_bytes_per_voxel),
        "mapping back": slab * 4 * ((out_channels if mapped_channels is None else mapped_channels) + 8),
        "model-grid volume": 2 * 4 * padded,
        "stitched output": 4 * (out_channels + 1) * math.ceil(padded / out_stride**3),
    }
    heads = arch.get("num_heads", [3])
    network = {
        "weights": 4 * n_parameters,
        "window activations": sw_batch_size * window_activation_bytes(
            roi, feature_size=feature_size, out_channels=out_channels, patch_size=int(arch.get("patch_size", 2)),
            window_size=int(arch.get("window_size", 7)), heads=int(heads[0] if heads else 3), decoder=decoder),
    }
    parts = {**host, **network}
    if on_device:
        return MemoryEstimate(host=sum(host.values()), device=sum(network.values()), parts=parts, summary=summary)
    return MemoryEstimate(host=sum(parts.values()), device=0, parts=parts, summary=summary)


def check_budget(estimate: MemoryEstimate, *, device=None, budget: int | None = None,
                 path: str | Path | None = None) -> None:
    """Raise `MemoryBudgetError` if ``estimate`` does not fit.

    Args:
        estimate: from `estimate_inference`.
        device: the inference device (a CUDA device checks ``estimate.device`` against its free memory).
        budget: bytes allowed on the inference device (host memory on a CPU, GPU memory on CUDA), or None
            for the default (see the module docstring).
        path: the input, named in the message.
    """
    on_cuda = getattr(device, "type", str(device)) == "cuda"
    host_budget, host_origin = _default_budget(available_host_memory(), HOST_FRACTION, "MemAvailable")
    if on_cuda:
        device_budget, device_origin = _default_budget(available_device_memory(device), CUDA_FRACTION,
                                                       "free CUDA memory")
        if budget is not None:
            device_budget, device_origin = budget, "--memory-budget"
        checks = [(estimate.device, device_budget, device_origin, "GPU memory"), (estimate.host, host_budget,
                                                                                   host_origin, "memory")]
    else:
        if budget is not None:
            host_budget, host_origin = budget, "--memory-budget"
        checks = [(estimate.host + estimate.device, host_budget, host_origin, "memory")]
    for needed, allowed, origin, what in checks:
        if allowed is not None and needed > allowed:
            raise MemoryBudgetError(
                f"needs about {format_bytes(needed)} of {what} ({estimate.summary}; largest: {estimate.describe()}) "
                f"but the budget is {format_bytes(allowed)} ({origin}); {estimate.advice}", path)


def _default_budget(available: int | None, fraction: float, name: str) -> tuple[int | None, str]:
    if available is None:
        return None, "unknown"
    return int(available * fraction), f"{fraction:.0%} of {name}"
