"""Voxel grids and resampling between them: below `S2DCCore.data` (the brain cohort's crops and atlas
mapping), `S2DCCore.study` (the probe) and `S2DCCore.inference` (the model grid), which all use it.

A *grid* is a shape plus a 4×4 voxel-index → RAS (mm) affine. Inference works on the **model grid**,
built from the input grid the way the training preprocessing (MONAI ``Orientationd`` + ``Spacingd``)
builds it: the input axes are permuted and flipped to the closest model orientation (RAS), then the
grid is rescaled to the model's spacing keeping the direction cosines (an oblique scan stays
oblique), with the first voxel centre fixed and ``round((n − 1)·old / new) + 1`` voxels per axis.

Every mapping between two grids is one affine between voxel indices, ``inv(A_src) @ A_dst``, applied
with trilinear interpolation and edge clamping (torch ``grid_sample``, one pass for all channels, a slab
of destination slices at a time). Outputs are always produced by sampling the source at the
*destination's* voxel centres, so the result has exactly the destination's shape and affine, whatever
the source geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Destination slices processed at once when resampling (bounds the temporaries: coordinates and channels).
SLAB = 8


@dataclass(frozen=True)
class Grid:
    """A voxel grid in physical space.

    Attributes:
        shape: voxels along ``i, j, k``.
        affine: (4, 4) voxel index → RAS (mm).
    """

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


def reoriented_grid(grid: Grid, axcodes: str = "RAS") -> Grid:
    """``grid`` with its axes permuted and flipped to the closest ``axcodes`` (no resampling)."""
    from nibabel import orientations as ornt

    transform = ornt.ornt_transform(ornt.io_orientation(grid.affine), ornt.axcodes2ornt(tuple(axcodes)))
    shape = [0, 0, 0]
    for axis, (new_axis, _) in enumerate(transform):
        shape[int(new_axis)] = grid.shape[axis]
    affine = grid.affine @ ornt.inv_ornt_aff(transform, grid.shape)
    return Grid(shape=tuple(shape), affine=affine)


def model_grid(grid: Grid, spacing: tuple[float, float, float] | None, axcodes: str = "RAS") -> Grid:
    """The grid a model sees for an input on ``grid`` (see the module docstring).

    Args:
        grid: the input's grid.
        spacing: model voxel size in mm along the reoriented axes, or None to keep the input's.
        axcodes: the model's orientation.
    """
    oriented = reoriented_grid(grid, axcodes)
    if spacing is None:
        return oriented
    old = np.asarray(oriented.spacing)
    new = np.asarray(spacing, dtype=np.float64)
    if new.shape != (3,) or np.any(new <= 0):
        raise ValueError(f"spacing must be three positive numbers, got {spacing}")
    shape = tuple(int(n) for n in np.maximum(np.round((np.asarray(oriented.shape) - 1) * old / new) + 1, 1))
    # Same direction cosines and first voxel centre; only the step along each axis changes.
    affine = oriented.affine @ np.diag(list(new / old) + [1.0])
    return Grid(shape=shape, affine=affine)


def strided_grid(grid: Grid, stride: int, shape: tuple[int, int, int]) -> Grid:
    """The grid of features at ``stride`` voxels of ``grid`` (one token per ``stride³`` block).

    Direction columns scale by ``stride``; the origin moves by ``(stride − 1)/2`` voxels because a token
    summarises the block whose first voxel is the token's index × stride (its centre is the block centre).
    """
    scale = np.diag([float(stride)] * 3 + [1.0])
    scale[:3, 3] = (stride - 1) / 2.0
    return Grid(shape=tuple(int(s) for s in shape), affine=grid.affine @ scale)


def index_map(src: Grid | np.ndarray, dst: Grid | np.ndarray) -> np.ndarray:
    """(4, 4) affine taking a voxel index of ``dst`` to the (continuous) voxel index of ``src``."""
    src_affine = src.affine if isinstance(src, Grid) else src
    dst_affine = dst.affine if isinstance(dst, Grid) else dst
    return np.linalg.solve(src_affine, dst_affine)


def resample(array: np.ndarray, src: Grid | np.ndarray, dst: Grid, *, dtype=np.float32) -> np.ndarray:
    """Sample ``array`` (on ``src``) trilinearly at every voxel centre of ``dst``; beyond the edge, clamped.

    Args:
        array: (X, Y, Z) values on ``src``.
        src: the source grid or its affine.
        dst: the destination grid.
        dtype: output dtype.

    Returns:
        (dst.shape) array.
    """
    return resample_channels(np.asarray(array)[None], src, dst)[0].astype(dtype, copy=False)


def resample_channels(values, src: Grid | np.ndarray, dst: Grid, *, slab: int = SLAB) -> np.ndarray:
    """Every channel of ``values`` (C, X, Y, Z) sampled trilinearly at the voxel centres of ``dst``.

    Returns:
        (C, *dst.shape) float32, computed ``slab`` destination slices at a time.
    """
    values = np.ascontiguousarray(np.asarray(values), dtype=np.float32)
    out = np.empty((values.shape[0],) + tuple(dst.shape), dtype=np.float32)
    for k0, k1, points in slab_points(index_map(src, dst), dst.shape, values.shape[1:], slab):
        sampled = sample_points(values, points.reshape(-1, 3))  # (C, X'·Y'·S)
        out[:, :, :, k0:k1] = sampled.reshape((values.shape[0],) + points.shape[:3])
    return out


def argmax_resample(scores, src: Grid | np.ndarray, dst: Grid, *, slab: int = SLAB) -> np.ndarray:
    """Per-voxel argmax over channels of ``scores`` interpolated (trilinear) onto ``dst``.

    Fast and exact: a trilinear mix of score vectors that all have the same argmax keeps that argmax, so a
    destination voxel whose 8 source neighbours agree takes their label directly; only voxels near label
    boundaries interpolate all channels. The destination is processed ``slab`` slices at a time.

    Args:
        scores: (K, X, Y, Z) class scores (logits, probabilities, negative distances) on ``src``; a numpy
            array or a CPU tensor (copied once if not contiguous float32).
        src: the grid of ``scores`` or its affine.
        dst: the grid of the result.
        slab: destination slices along ``k`` per step.

    Returns:
        (dst.shape) channel indices, uint8 (or uint16 above 256 channels); ties go to the lowest index.
    """
    from itertools import product

    scores = np.ascontiguousarray(np.asarray(scores), dtype=np.float32)
    size = np.array(scores.shape[1:])
    # Cell (i, j, k) has corners (i..i+1, j..j+1, k..k+1), clamped at the far edges like the interpolation.
    corners = np.pad(scores.argmax(axis=0).astype(np.int32), [(0, 1)] * 3, mode="edge")
    shifted = [corners[a:a + size[0], b:b + size[1], c:c + size[2]] for a, b, c in product((0, 1), repeat=3)]
    low, high = np.minimum.reduce(shifted), np.maximum.reduce(shifted)
    cell_label = np.where(low == high, low, -1)  # (X, Y, Z); −1: the corners disagree
    labels = np.zeros(dst.shape, dtype=np.uint8 if len(scores) <= 256 else np.uint16)
    for k0, k1, points in slab_points(index_map(src, dst), dst.shape, size, slab):
        cell = np.minimum(points.astype(np.int64), size - 1)  # points ≥ 0: truncation is floor
        slab_labels = cell_label[cell[..., 0], cell[..., 1], cell[..., 2]]
        mixed = slab_labels < 0
        if mixed.any():
            slab_labels[mixed] = sample_points(scores, points[mixed]).argmax(axis=0)
        labels[:, :, k0:k1] = slab_labels
    return labels


def slab_points(mapping: np.ndarray, dst_shape, src_shape, slab: int = SLAB, start: int = 0, stop: int | None = None):
    """Yield ``(k0, k1, points)``: the source indices (X', Y', k1 − k0, 3) of destination voxels
    ``[:, :, k0:k1]``, clamped into the source (float32, as grid_sample uses them), for ``k`` in
    ``[start, stop)`` (default: all of the destination)."""
    ii, jj = np.meshgrid(np.arange(dst_shape[0]), np.arange(dst_shape[1]), indexing="ij")
    rows = (ii[..., None] * mapping[:3, 0] + jj[..., None] * mapping[:3, 1] + mapping[:3, 3]).astype(np.float32)
    step = mapping[:3, 2].astype(np.float32)
    upper = np.asarray(src_shape, dtype=np.float32) - 1.0
    stop = dst_shape[2] if stop is None else min(stop, dst_shape[2])
    for k0 in range(start, stop, slab):
        k1 = min(k0 + slab, stop)
        points = rows[:, :, None, :] + np.arange(k0, k1, dtype=np.float32)[None, None, :, None] * step
        yield k0, k1, np.clip(points, 0.0, upper, out=points)


def sample_points(values: np.ndarray, points: np.ndarray) -> np.ndarray:
    """All channels of ``values`` (C, X, Y, Z) at ``points`` (M, 3) (voxel indices inside the grid), trilinear.

    One ``torch.nn.functional.grid_sample`` pass serves every channel (float32 coordinates: ~1e-5 voxel).

    Returns:
        (C, M) float32.
    """
    import torch
    import torch.nn.functional as F

    size = np.asarray(values.shape[1:], dtype=np.float64)
    # grid_sample's normalised coordinates, last axis first; align_corners=True puts −1/+1 on the end voxels.
    grid = (points * (2.0 / np.maximum(size - 1.0, 1.0)).astype(np.float32) - 1.0)[:, ::-1].astype(np.float32)
    grid = torch.from_numpy(np.ascontiguousarray(grid)).view(1, 1, 1, -1, 3)
    source = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))[None]  # (1, C, X, Y, Z)
    with torch.no_grad():
        out = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[0, :, 0, 0].numpy()  # (C, M)


def world_to_index(grid: Grid | np.ndarray, point_ras) -> np.ndarray:
    """Continuous voxel index of ``point_ras`` (mm) on ``grid``."""
    affine = grid.affine if isinstance(grid, Grid) else grid
    return np.linalg.solve(affine, np.append(np.asarray(point_ras, dtype=np.float64), 1.0))[:3]


def same_grid(a: Grid, b: Grid, atol: float = 1e-4) -> bool:
    """Whether two grids have the same shape and (to ``atol`` mm) the same affine."""
    return tuple(a.shape) == tuple(b.shape) and bool(np.allclose(a.affine, b.affine, atol=atol, rtol=0))
