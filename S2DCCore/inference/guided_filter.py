"""Edge-preserving smoothing of class probabilities: the guided filter (He, Sun & Tang, TPAMI 2013).

Within every (2r+1)³ window the output is a linear function of the guide image, ``q = a·I + b``, fitted to
the input ``p`` by ridge regression (``eps``), and the windows' fits are averaged:

    a = (mean(I·p) − mean(I)·mean(p)) / (var(I) + eps),   b = mean(p) − a·mean(I),
    q = mean(a)·I + mean(b)

Where the guide is flat over a window (one tissue) ``q`` is the window mean of ``p``, so isolated wrong voxels
(noise that tipped the per-voxel decision) are outvoted; across an edge of the guide ``a`` follows the edge,
so boundaries that the image shows are kept. It costs four box means per channel (`box_mean`, running sums:
the same time for any radius). `grow` uses it on its class posteriors when held-out seeds say it helps.

Box means replicate the border voxels (``mode="nearest"``). The value at the centre of a (4r+1)³ patch is
exactly the whole-volume value when the centre is at least 2r voxels inside the volume (nearer the border,
a patch clamped to the volume is a close approximation); that is how `grow` scores the filter at seeds.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np


def box_mean(volume: np.ndarray, radius: int) -> np.ndarray:
    """Mean over the (2·radius + 1)³ window of the last three axes (earlier axes: independent), float32."""
    from scipy import ndimage

    size = (1,) * (volume.ndim - 3) + (2 * radius + 1,) * 3
    return ndimage.uniform_filter(np.asarray(volume, dtype=np.float32), size=size, mode="nearest")


def guided_filter(channels: np.ndarray, guide: np.ndarray, radius: int, eps: float, *, threads: int = 2,
                  inplace: bool = False) -> np.ndarray:
    """Every channel of ``channels`` (C, ...spatial) filtered with ``guide`` (...spatial; the last three axes
    are the window's, earlier ones independent: a stack of patches works as well as one volume).

    Args:
        radius: window half-width in voxels. eps: ridge term in squared guide units (the guide's variance
            below which a window counts as flat).
        threads: channels filtered concurrently (SciPy's filters release the GIL).
        inplace: write the result into ``channels`` (float32, C-contiguous) instead of a new array.

    Returns:
        float32 array of ``channels``' shape.
    """
    if inplace and (channels.dtype != np.float32 or not channels.flags.c_contiguous):
        raise ValueError("inplace needs float32, C-contiguous channels")
    channels = np.asarray(channels, dtype=np.float32)
    guide = np.asarray(guide, dtype=np.float32)
    if channels.shape[1:] != guide.shape or guide.ndim < 3:
        raise ValueError(f"channels {channels.shape} must be (C,) + the guide's shape {guide.shape} (≥ 3-D)")
    if radius < 1 or eps <= 0:
        raise ValueError(f"radius must be ≥ 1 and eps > 0, not {radius} and {eps}")
    mean_i = box_mean(guide, radius)
    var_i = box_mean(guide * guide, radius) - mean_i * mean_i
    out = channels if inplace else np.empty_like(channels)

    def one(c: int) -> None:  # reads channel c only, so it may overwrite it
        p = channels[c]
        mean_p = box_mean(p, radius)
        a = (box_mean(guide * p, radius) - mean_i * mean_p) / (var_i + np.float32(eps))
        b = mean_p - a * mean_i
        out[c] = box_mean(a, radius) * guide + box_mean(b, radius)

    if threads > 1 and len(channels) > 1:
        with ThreadPoolExecutor(min(threads, len(channels))) as pool:
            list(pool.map(one, range(len(channels))))
    else:
        for c in range(len(channels)):
            one(c)
    return out
