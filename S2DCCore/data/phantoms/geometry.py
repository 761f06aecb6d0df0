"""Geometry of the synthetic phantoms: the canonical body frame, each case's warp, smooth random fields.

Canonical body coordinates are millimetres in one reference body, oriented like RAS (x → the patient's
right, y → anterior, z → superior), with the origin at the centre of the trunk. A case places that body
in its world (RAS, mm) by a global affine (per-axis scale ``S``, rotation ``R``, translation ``t``)
and a smooth elastic warp ``u``:

    p + u(v) = R · S · c + t,        p = A · v  (A: the voxel → RAS affine, v: voxel index)

so ``c = S⁻¹ Rᵀ (p + u(v) − t)``. The displacement ``u`` (mm) is a cubic B-spline whose control grid
spans the volume's index box; defining it on the voxel grid makes the voxel → canonical direction exact
and cheap for a whole grid (a tensor product of three 1-D basis matrices). The canonical → voxel
direction is the fixed-point iteration ``v ← A⁻¹(R S c + t − u(v))``, a contraction because the warp's
Jacobian is small (≈ 0.1–0.2 at the defaults); it converges to ~1e-6 voxel in about ten steps
(`canonical_to_voxel` reports the residual). Outside the volume's box ``u`` is held at its boundary value.

Everything is numpy (no torch) and vectorised: the generator must make a 96³ case in about a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def cubic_bspline(x: np.ndarray) -> np.ndarray:
    """The cubic B-spline kernel (support ``|x| < 2``, integral 1, C² smooth)."""
    ax = np.abs(x)
    return np.where(ax < 1.0, 2.0 / 3.0 - ax**2 + 0.5 * ax**3, np.where(ax < 2.0, (2.0 - ax) ** 3 / 6.0, 0.0))


def bspline_matrix(u: np.ndarray, intervals: int) -> np.ndarray:
    """Basis weights for positions ``u`` ∈ [0, 1] (clamped) on a grid of ``intervals`` cells.

    The ``intervals + 3`` control points sit at ``(a − 1) / intervals`` (one beyond each end), so the
    weights of every position in [0, 1] sum to one.

    Args:
        u: (N,) positions, 0 and 1 being the first and last voxel centres.
        intervals: number of B-spline cells across [0, 1] (≥ 1).

    Returns:
        (N, intervals + 3) float64 weights.
    """
    t = np.clip(np.asarray(u, dtype=np.float64), 0.0, 1.0) * intervals + 1.0
    return cubic_bspline(t[:, None] - np.arange(intervals + 3)[None, :])


def _unit_positions(n: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)


def spline_grid(ctrl: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Evaluate a tensor-product cubic B-spline on every voxel of ``shape``.

    Args:
        ctrl: (ma, mb, mc) control values; ``ma − 3`` cells span the first axis, and so on.
        shape: (nx, ny, nz) voxel grid spanning [0, 1]³.

    Returns:
        (nx, ny, nz) values, of ``ctrl``'s dtype.
    """
    wx, wy, wz = (bspline_matrix(_unit_positions(n), m - 3).astype(ctrl.dtype) for n, m in zip(shape, ctrl.shape))
    out = np.tensordot(wx, ctrl, axes=(1, 0))  # (nx, mb, mc)
    out = np.tensordot(out, wy, axes=(1, 1))  # (nx, mc, ny)
    out = np.tensordot(out, wz, axes=(1, 1))  # (nx, ny, nz)
    return out


def spline_points(ctrl: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Evaluate a (vector-valued) tensor-product B-spline at points.

    Args:
        ctrl: (C, ma, mb, mc) control values of C channels.
        u: (N, 3) positions in [0, 1]³ (clamped).

    Returns:
        (N, C) values.
    """
    channels, ma, mb, mc = ctrl.shape
    wx, wy, wz = (bspline_matrix(u[:, a], ctrl.shape[1 + a] - 3) for a in range(3))
    out = (wz @ ctrl.reshape(-1, mc).T).reshape(-1, channels, ma, mb)  # contract c: (N, C, ma, mb)
    out = np.einsum("nkab,nb->nka", out, wy)  # contract b: (N, C, ma)
    return np.einsum("nka,na->nk", out, wx)  # contract a: (N, C)


def smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], cells: tuple[int, int, int]) -> np.ndarray:
    """A smooth Gaussian random field with zero mean and unit standard deviation over the grid.

    Its correlation length is about one cell (extent / ``cells``) along each axis.

    Returns:
        float32 array of ``shape``.
    """
    ctrl = rng.standard_normal(tuple(int(c) + 3 for c in cells)).astype(np.float32)
    field = spline_grid(ctrl, shape).astype(np.float32, copy=False)
    # Moments from every 2nd voxel per axis: 8× cheaper, and the field is smooth at that scale.
    sample = field[::2, ::2, ::2]
    field -= sample.mean()
    field /= sample.std() + np.float32(1e-12)
    return field


def rotation_matrix(angles: np.ndarray) -> np.ndarray:
    """Rotation ``Rz · Ry · Rx`` from angles (radians) about x, y and z."""
    ax, ay, az = angles
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True, eq=False)
class PhantomGeometry:
    """Where one case's voxels sit in the canonical body (see the module docstring).

    Attributes:
        shape: (nx, ny, nz) voxels.
        affine: (4, 4) voxel → RAS (mm); axis-aligned (diagonal linear part).
        rotation: (3, 3) R, canonical axes → world axes.
        scale: (3,) S, the subject's size relative to the canonical body per canonical axis.
        translation: (3,) t, the world position (mm) of the canonical origin before the warp.
        warp: (3, m+3, m+3, m+3) B-spline control displacements (mm) of ``u``, spanning the voxel box.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    rotation: np.ndarray
    scale: np.ndarray
    translation: np.ndarray
    warp: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)


def sample_geometry(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    *,
    warp_mm: float = 8.0,
    warp_cells: int = 4,
) -> PhantomGeometry:
    """Draw a case's grid placement, global affine and elastic warp.

    Scale is ±15 % at most (a shared log-normal factor plus one per axis), rotation a few degrees
    (mostly about z), the body centre within ±10 mm (x, y) and ±25 mm (z, so cases cover slightly
    different levels) of the volume centre, and the world origin anywhere within ±50 mm.
    """
    shape = tuple(int(n) for n in shape)
    spacing = np.asarray(spacing, dtype=np.float64)
    scale = np.exp(rng.normal(0.0, 0.05) + rng.normal(0.0, 0.05, 3)).clip(0.85, 1.15)
    angles = (rng.normal(0.0, 1.0, 3) * np.radians([2.0, 2.0, 5.0])).clip(*np.radians([[-5, -5, -12], [5, 5, 12]]))
    centre_offset = rng.uniform([-10.0, -10.0, -25.0], [10.0, 10.0, 25.0])
    origin_jitter = rng.uniform(-50.0, 50.0, 3)
    warp = rng.normal(0.0, warp_mm, (3,) + (warp_cells + 3,) * 3)
    affine = np.eye(4)
    affine[:3, :3] = np.diag(spacing)
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2.0 * spacing + origin_jitter
    centre = affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0) + affine[:3, 3]
    return PhantomGeometry(shape=shape, affine=affine, rotation=rotation_matrix(angles), scale=scale,
                           translation=centre + centre_offset, warp=warp)


def _displacement(geometry: PhantomGeometry, voxels: np.ndarray) -> np.ndarray:
    u = voxels / np.maximum(np.asarray(geometry.shape, dtype=np.float64) - 1.0, 1.0)
    return spline_points(geometry.warp, u)


def voxel_to_canonical(geometry: PhantomGeometry, points: np.ndarray) -> np.ndarray:
    """Map voxel index coordinates of a case to canonical body coordinates (exact).

    Args:
        points: (N, 3) continuous voxel indices ``[i, j, k]``.

    Returns:
        (N, 3) canonical coordinates (mm).
    """
    v = np.atleast_2d(np.asarray(points, dtype=np.float64))
    world = v @ geometry.affine[:3, :3].T + geometry.affine[:3, 3] + _displacement(geometry, v)
    # c = S⁻¹ Rᵀ (w − t); for row vectors Rᵀ x is x @ R.
    return ((world - geometry.translation) @ geometry.rotation) / geometry.scale


def canonical_to_voxel(
    geometry: PhantomGeometry, points: np.ndarray, *, iterations: int = 50, tol: float = 1e-6
) -> np.ndarray:
    """Map canonical body coordinates to continuous voxel indices (inverse of `voxel_to_canonical`).

    Solved by fixed-point iteration (see the module docstring); stops when no point moves by more than
    ``tol`` voxels. The round trip ``voxel_to_canonical(canonical_to_voxel(c))`` reproduces ``c`` to
    about 1e-5 mm at the default warp; points may lie outside the volume (negative or ≥ shape).

    Args:
        points: (N, 3) canonical coordinates (mm).

    Returns:
        (N, 3) voxel indices ``[i, j, k]`` (float64).
    """
    c = np.atleast_2d(np.asarray(points, dtype=np.float64))
    target = (c * geometry.scale) @ geometry.rotation.T + geometry.translation  # = p + u(v)
    inverse = np.linalg.inv(geometry.affine)
    v = target @ inverse[:3, :3].T + inverse[:3, 3]
    for _ in range(iterations):
        world = target - _displacement(geometry, v)
        new = world @ inverse[:3, :3].T + inverse[:3, 3]
        done = np.max(np.abs(new - v), initial=0.0) < tol
        v = new
        if done:
            break
    return v


def canonical_grid(geometry: PhantomGeometry, dtype=np.float32) -> np.ndarray:
    """Canonical coordinates of every voxel: the dense form of `voxel_to_canonical`.

    Returns:
        (3, nx, ny, nz) array (mm); ``[:, i, j, k]`` is voxel (i, j, k)'s canonical point.
    """
    linear = geometry.affine[:3, :3]
    if not np.allclose(linear, np.diag(np.diag(linear))):
        raise ValueError("canonical_grid needs an axis-aligned affine (the generator makes only those)")
    shape = geometry.shape
    # world_a = p_a + u_a − t_a, with p_a varying along axis a only.
    world = []
    for a in range(3):
        p = linear[a, a] * np.arange(shape[a]) + geometry.affine[a, 3] - geometry.translation[a]
        p = p.reshape([-1 if b == a else 1 for b in range(3)])
        world.append((spline_grid(geometry.warp[a], shape) + p).astype(dtype))
    matrix = (geometry.rotation.T / geometry.scale[:, None]).astype(dtype)  # c = S⁻¹ Rᵀ w
    out = np.empty((3,) + shape, dtype=dtype)
    for r in range(3):
        out[r] = matrix[r, 0] * world[0] + matrix[r, 1] * world[1] + matrix[r, 2] * world[2]
    return out
