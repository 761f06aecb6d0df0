"""Alice's masked image modelling input: random columns of the crop zeroed in image space (methods.md §2.3).

The crop's (x, y) plane is cut into ``patch × patch`` squares; ``ceil(ratio · squares)`` of them are
drawn and masked **through the whole depth** (z), SimMIM-style (``x · (1 − mask)``; no mask token).
Sampling (`sample_column_mask`, numpy generator, on the CPU with the rest of the batch) is separate
from applying (`apply_column_mask`, on the image's device): the sampled grid travels with the batch
and is the record of what was masked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def column_grid_shape(roi: Sequence[int], patch: int) -> tuple[int, int]:
    """Squares per side of the (x, y) plane.

    Raises:
        ValueError: x or y is not a multiple of ``patch``.
    """
    if patch < 1 or roi[0] % patch or roi[1] % patch:
        raise ValueError(f"crop {tuple(roi)} (x, y) must be multiples of the mask patch {patch}")
    return roi[0] // patch, roi[1] // patch


def sample_column_mask(rng: np.random.Generator, roi: Sequence[int], patch: int = 16,
                       ratio: float = 0.75) -> np.ndarray:
    """Draw one mask grid: (roi_x / patch, roi_y / patch) bool with ``ceil(ratio · n)`` True squares.

    Args:
        rng: numpy generator.
        roi: crop size (x, y, z).
        patch: square side in voxels (official 16).
        ratio: fraction of squares masked (official 0.75), in [0, 1].
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio must lie in [0, 1], not {ratio}")
    gx, gy = column_grid_shape(roi, patch)
    count = gx * gy
    chosen = rng.permutation(count)[: math.ceil(count * ratio)]
    grid = np.zeros(count, dtype=bool)
    grid[chosen] = True
    return grid.reshape(gx, gy)


def apply_column_mask(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Zero the masked columns of ``x``.

    Args:
        x: (B, C, X, Y, Z) crops.
        grid: (B, X / p, Y / p) bool mask grids (any device; moved to ``x``'s).

    Returns:
        ``x · (1 − mask)`` with the mask repeated p × p in-plane and through all of z.
    """
    b, _, sx, sy, _ = x.shape
    if grid.ndim != 3 or grid.shape[0] != b or sx % grid.shape[1] or sy % grid.shape[2]:
        raise ValueError(f"mask grid {tuple(grid.shape)} does not fit crops {tuple(x.shape)}")
    px, py = sx // grid.shape[1], sy // grid.shape[2]
    mask = grid.to(device=x.device, dtype=torch.bool)
    mask = mask.repeat_interleave(px, dim=1).repeat_interleave(py, dim=2)  # (B, X, Y)
    return x.masked_fill(mask[:, None, :, :, None], 0.0)
