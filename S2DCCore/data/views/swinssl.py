"""Views of the SwinUNETR self-supervised pretraining (Tang et al., CVPR 2022; MONAI research-contributions).

Each crop gives two views. A view is the crop rotated by a random multiple of 90° (the rotation is
the label of the rotation head), then corrupted by `drop_patches`: random boxes filled with noise
("inner cutout"), and, when another crop of the batch is drawn, boxes pasted from that crop ("outer
cutout"), as the official ``aug_rand``. The reconstruction target is the rotated, uncorrupted view.

Rotation plane: the paper rotates about the z axis; the official code rotates the last two spatial
axes of a RAS ``(C, H, W, D)`` crop (the y–z plane). ``rotation_axes`` picks the plane; the default
(0, 1) is the axial x–y plane of the paper, which also keeps crops with a thinner z valid.
Every random draw comes from one numpy generator, on the CPU with the rest of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def rotate90(crop: torch.Tensor, k: int, axes: Sequence[int] = (0, 1)) -> torch.Tensor:
    """Rotate (C, X, Y, Z) by ``k`` · 90° in the plane of spatial ``axes``."""
    return torch.rot90(crop, int(k), dims=(axes[0] + 1, axes[1] + 1))


def drop_patches(x: torch.Tensor, rng: np.random.Generator, source: torch.Tensor | None = None,
                 max_drop: float = 0.3, max_block: float = 0.25, min_block: float = 0.05) -> torch.Tensor:
    """Fill random boxes of ``x`` until ``U(0, max_drop)`` of its voxels are covered (official ``patch_rand_drop``).

    Box corners are uniform, box sides between ``min_block`` and ``max_block`` of the crop side. Boxes
    get min–max-normalised Gaussian noise, or ``source``'s voxels when it is given.

    Args:
        x: (C, X, Y, Z), not modified.
        rng: numpy generator. source: (C, X, Y, Z) or None.

    Returns:
        The corrupted copy.
    """
    out = x.clone()
    shape = np.asarray(x.shape[1:])
    target = rng.uniform(0.0, max_drop) * float(np.prod(shape))
    low = np.maximum((min_block * shape).astype(int), 1)
    high = np.maximum((max_block * shape).astype(int), low + 1)
    covered = 0
    while covered < target:
        start = rng.integers(0, np.maximum(shape - low, 1))
        end = np.minimum(start + rng.integers(low, high), shape)
        box = (slice(None), *(slice(int(a), int(b)) for a, b in zip(start, end)))
        if source is None:
            noise = rng.standard_normal((x.shape[0], *(end - start))).astype(np.float32)
            noise = (noise - noise.min()) / max(float(noise.max() - noise.min()), 1e-12)
            out[box] = torch.from_numpy(noise)
        else:
            out[box] = source[box]
        covered += int(np.prod(end - start))
    return out


def corrupt_batch(views: torch.Tensor, rng: np.random.Generator, **drop) -> torch.Tensor:
    """The official ``aug_rand`` on a batch (N, C, X, Y, Z): noise boxes, then boxes from a random other view.

    Views are corrupted in order, so a view pasted from an earlier index is already corrupted (as officially).
    """
    out = views.clone()
    n = out.shape[0]
    for i in range(n):
        out[i] = drop_patches(out[i], rng, **drop)
        other = int(rng.integers(n))
        if other != i:
            out[i] = drop_patches(out[i], rng, source=out[other], **drop)
    return out


def make_swinssl_views(crops: torch.Tensor, rng: np.random.Generator, *, rotation_axes: Sequence[int] = (0, 1),
                       max_drop: float = 0.3, max_block: float = 0.25, min_block: float = 0.05) -> dict:
    """Two rotated, corrupted views of each crop.

    Args:
        crops: (N, 1, X, Y, Z); the sides of the rotation plane must be equal.

    Returns:
        ``view1``/``view2`` (N, 1, X, Y, Z) network inputs, ``target1``/``target2`` the rotated crops,
        ``rot1``/``rot2`` (N,) int64 rotation labels in 0..3.
    """
    a, b = rotation_axes
    if crops.shape[2 + a] != crops.shape[2 + b]:
        raise ValueError(f"crop {tuple(crops.shape[2:])} is not square in the rotation plane {tuple(rotation_axes)}")
    drop = {"max_drop": max_drop, "max_block": max_block, "min_block": min_block}
    out = {}
    for v in ("1", "2"):
        rotations = rng.integers(0, 4, crops.shape[0])
        target = torch.stack([rotate90(c, k, rotation_axes) for c, k in zip(crops, rotations)])
        out[f"view{v}"] = corrupt_batch(target, rng, **drop)
        out[f"target{v}"] = target
        out[f"rot{v}"] = torch.from_numpy(rotations.astype(np.int64))
    return out
