"""Token geometry and ground-truth token correspondences for S²DC views.

S²DC (Pan et al., ICCV 2025, arXiv 2507.02581) tiles a region into a grid of crops, encodes every crop
into a small grid of tokens, and supervises its patch losses with a boolean matrix that says which
token of the source view sees the same anatomy as which token of the affinely warped (teacher)
view. See ``methods.md`` §1.3–1.4. Everything here is pure geometry (numpy), except the two
reshape helpers, which rearrange torch tensors of token features.

Coordinate convention (voxel index coordinates): voxel ``(i, j, k)`` of a region sits at the point
``(i, j, k)`` and covers the cube ``[i-½, i+½) × [j-½, j+½) × [k-½, k+½)``. A region of shape
``(n_x, n_y, n_z)`` is therefore the box ``[-½, n-½)`` per axis, and its centre is ``(n-1)/2``.
A token of ``t`` voxels along an axis starting at voxel ``a`` has its centre at ``a + (t-1)/2``.

Token order: a region token index is the C-order flattening of ``(x, y, z)`` over the region token
grid of shape ``(X, Y, Z) = (gx*tx, gy*ty, gz*tz)``, so ``index = (x*Y + y)*Z + z`` and
``x = crop_x*tx + token_x`` (likewise for y and z). One depth slice (fixed ``z``) is indexed by
``x*Y + y``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

Triple = tuple[int, int, int]
MatchMode = Literal["slice", "volume"]


def as_triple(value: int | Sequence[int], name: str = "value") -> Triple:
    """Returns ``value`` as a 3-tuple of positive ints (an int is repeated on the three axes).

    Raises:
        ValueError: if ``value`` does not have three entries or one of them is not positive.
    """
    triple = (int(value),) * 3 if isinstance(value, (int, np.integer)) else tuple(int(v) for v in value)
    if len(triple) != 3 or min(triple) < 1:
        raise ValueError(f"{name} must be a positive int or 3 positive ints, got {value!r}")
    return triple  # type: ignore[return-value]


def region_token_shape(grid: int | Sequence[int], tokens_per_crop: int | Sequence[int]) -> Triple:
    """Returns the region token grid ``(X, Y, Z) = (gx*tx, gy*ty, gz*tz)``."""
    g, t = as_triple(grid, "grid"), as_triple(tokens_per_crop, "tokens_per_crop")
    return (g[0] * t[0], g[1] * t[1], g[2] * t[2])


def token_size(roi: int | Sequence[int], tokens_per_crop: int | Sequence[int]) -> Triple:
    """Returns the voxels covered by one token along each axis, ``roi / tokens_per_crop``.

    Raises:
        ValueError: if ``roi`` is not a multiple of ``tokens_per_crop`` on some axis.
    """
    r, t = as_triple(roi, "roi"), as_triple(tokens_per_crop, "tokens_per_crop")
    if any(ri % ti for ri, ti in zip(r, t)):
        raise ValueError(f"roi {r} must be a multiple of tokens_per_crop {t} on every axis")
    return (r[0] // t[0], r[1] // t[1], r[2] // t[2])


def region_centre(region_shape: Sequence[int]) -> tuple[float, float, float]:
    """Returns the centre of a region of shape ``(n_x, n_y, n_z)`` in voxel coordinates, ``(n-1)/2``."""
    n = as_triple(region_shape, "region_shape")
    return ((n[0] - 1) / 2, (n[1] - 1) / 2, (n[2] - 1) / 2)


def token_centres(
    grid: int | Sequence[int], roi: int | Sequence[int], tokens_per_crop: int | Sequence[int]
) -> np.ndarray:
    """Voxel-coordinate centres of every token of a region tiled into a grid of crops.

    Args:
        grid: crops per axis ``(gx, gy, gz)``.
        roi: crop size in voxels ``(rx, ry, rz)``.
        tokens_per_crop: tokens per crop and axis ``(tx, ty, tz)``; must divide ``roi``.

    Returns:
        float64 array of shape ``(X*Y*Z, 3)`` in region token order (C-order over ``(x, y, z)``).
    """
    size = np.asarray(token_size(roi, tokens_per_crop), dtype=np.float64)
    shape = region_token_shape(grid, tokens_per_crop)
    index = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1).reshape(-1, 3)
    return index * size + (size - 1) / 2


def nearest_token_index(points: np.ndarray, size: Sequence[int], token_grid: Sequence[int]) -> np.ndarray:
    """Index of the token whose centre is nearest to each point, or -1 for points outside the region.

    On a regular grid the nearest centre is the token whose cell contains the point, so this is a
    floor; "outside" means outside the region box ``[-½, n-½)`` (``n`` = token grid × token size).

    Args:
        points: ``(N, d)`` voxel coordinates, ``d`` = 2 (x, y) or 3 (x, y, z).
        size: token size in voxels per axis (``d`` entries).
        token_grid: tokens per axis (``d`` entries).

    Returns:
        int64 array ``(N,)`` of C-order token indices over ``token_grid``; -1 where outside.
    """
    cell = np.floor((points + 0.5) / np.asarray(size, dtype=np.float64)).astype(np.int64)  # (N, d)
    inside = np.all((cell >= 0) & (cell < np.asarray(token_grid)), axis=1)
    index = np.full(len(points), -1, dtype=np.int64)
    if inside.any():
        index[inside] = np.ravel_multi_index(tuple(cell[inside].T), tuple(token_grid))
    return index


@dataclass(frozen=True)
class RegionAffine:
    """Rotation about z, isotropic scale and translation of a whole region (the S²DC teacher warp).

    ``matrix()`` maps a SOURCE voxel coordinate ``p`` to where that content lands in the AUGMENTED
    (teacher) view: ``q = centre + translation + s * R_z(angle) (p - centre)``. A positive angle turns
    the +x axis towards +y. ``scale > 1`` enlarges the content.

    Attributes:
        angle_deg: rotation about the z axis in degrees.
        translation: shift in voxels ``(tx, ty, tz)`` applied after rotation and scaling.
        scale: isotropic content magnification (> 0).
        centre: fixed point of rotation and scaling, in voxel coordinates (usually the region centre).

    Examples:
        >>> affine = RegionAffine(angle_deg=90.0, translation=(0, 0, 0), scale=1.0, centre=(1, 1, 0))
        >>> np.round(affine.matrix() @ [2.0, 1.0, 0.0, 1.0], 6).tolist()
        [1.0, 2.0, 0.0, 1.0]
    """

    angle_deg: float
    translation: tuple[float, float, float]
    scale: float
    centre: tuple[float, float, float]

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"scale must be positive, got {self.scale}")

    @classmethod
    def identity(cls, region_shape: Sequence[int]) -> RegionAffine:
        """Returns the identity warp centred on a region of shape ``(n_x, n_y, n_z)``."""
        return cls(angle_deg=0.0, translation=(0.0, 0.0, 0.0), scale=1.0, centre=region_centre(region_shape))

    def linear(self) -> np.ndarray:
        """Returns the 3×3 linear part ``s * R_z(angle)``."""
        return self.scale * _rotation_z(self.angle_deg)

    def matrix(self) -> np.ndarray:
        """Returns the 4×4 homogeneous source-voxel → augmented-voxel matrix (float64)."""
        linear = self.linear()
        centre = np.asarray(self.centre, dtype=np.float64)
        out = np.eye(4)
        out[:3, :3] = linear
        out[:3, 3] = centre + np.asarray(self.translation, dtype=np.float64) - linear @ centre
        return out

    def inverse(self) -> RegionAffine:
        """Returns the inverse warp (augmented → source), itself a ``RegionAffine`` on the same centre.

        ``p = centre + (1/s) R(-angle) (q - centre - t)``, i.e. angle ``-angle``, scale ``1/s`` and
        translation ``-(1/s) R(-angle) t``.
        """
        back_linear = _rotation_z(-self.angle_deg) / self.scale
        shift = -back_linear @ np.asarray(self.translation, dtype=np.float64)
        return RegionAffine(angle_deg=-self.angle_deg, translation=(float(shift[0]), float(shift[1]), float(shift[2])),
                            scale=1.0 / self.scale, centre=self.centre)


def _rotation_z(angle_deg: float) -> np.ndarray:
    """Returns the 3×3 rotation about z that turns +x towards +y by ``angle_deg``."""
    theta = math.radians(angle_deg)
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _mutual_nearest(
    centres: np.ndarray, forward: np.ndarray, backward: np.ndarray, size: Sequence[int], token_grid: Sequence[int]
) -> np.ndarray:
    """Mutual-nearest-neighbour matrix of tokens under an affine and its inverse.

    Args:
        centres: ``(N, d)`` token centres (the same grid in both views).
        forward: ``(d+1, d+1)`` homogeneous source → augmented matrix.
        backward: ``(d+1, d+1)`` homogeneous augmented → source matrix.
        size: token size per axis (``d``).
        token_grid: tokens per axis (``d``).

    Returns:
        bool ``(N_src, N_aug)``; ``[j, i]`` iff src ``j`` lands in aug ``i`` and aug ``i`` lands back in ``j``.
    """
    d = centres.shape[1]
    to_aug = nearest_token_index(centres @ forward[:d, :d].T + forward[:d, d], size, token_grid)  # (N,)
    to_src = nearest_token_index(centres @ backward[:d, :d].T + backward[:d, d], size, token_grid)  # (N,)
    src = np.arange(len(centres))
    has_target = to_aug >= 0
    # Cycle src -> aug -> src must come back to the same token (the official "loop back" test).
    mutual = has_target & (to_src[np.where(has_target, to_aug, 0)] == src)
    matches = np.zeros((len(centres), len(centres)), dtype=bool)
    matches[src[mutual], to_aug[mutual]] = True
    return matches


def correspondence_matrix(
    params: RegionAffine,
    grid: int | Sequence[int],
    roi: int | Sequence[int],
    tokens_per_crop: int | Sequence[int],
    mode: MatchMode = "slice",
) -> np.ndarray:
    """Ground-truth token correspondences between the source region and its warped (teacher) copy.

    A pair (src token ``j``, aug token ``i``) is positive iff they are mutual nearest neighbours: the
    src centre ``j`` mapped by ``params`` lands in (is nearest to) aug token ``i``, aug centre ``i``
    mapped by the inverse lands in src token ``j``, and both mapped points lie inside the region box.

    Args:
        params: the region warp, source → augmented voxel coordinates.
        grid: crops per axis ``(gx, gy, gz)``.
        roi: crop size in voxels ``(rx, ry, rz)``.
        tokens_per_crop: tokens per crop and axis ``(tx, ty, tz)``.
        mode: ``"slice"`` reproduces the official in-plane matching: x–y only, one ``(X*Y, X*Y)``
            matrix shared by every token-depth slice, z (and z scaling) ignored. ``"volume"`` matches
            all ``X*Y*Z`` tokens in 3D with the full affine.

    Returns:
        bool array ``(N_src, N_aug)``, ``N = X*Y`` (slice) or ``X*Y*Z`` (volume), in region token order.

    Raises:
        ValueError: for an unknown mode or a ``roi`` not divisible by ``tokens_per_crop``.
    """
    size = token_size(roi, tokens_per_crop)
    shape = region_token_shape(grid, tokens_per_crop)
    centres = token_centres(grid, roi, tokens_per_crop)  # (X*Y*Z, 3)
    forward, backward = params.matrix(), params.inverse().matrix()
    if mode == "volume":
        return _mutual_nearest(centres, forward, backward, size, shape)
    if mode == "slice":
        # z is the fastest index, so every Z-th centre is the z = 0 slice in (x, y) C-order.
        plane = centres[:: shape[2], :2]  # (X*Y, 2)
        keep = [0, 1, 3]  # rows/cols x, y and the homogeneous one: drop z from the in-plane map
        return _mutual_nearest(plane, forward[np.ix_(keep, keep)], backward[np.ix_(keep, keep)], size[:2], shape[:2])
    raise ValueError(f"mode must be 'slice' or 'volume', got {mode!r}")


def crop_tokens_to_region(
    tokens: torch.Tensor, grid: int | Sequence[int], tokens_per_crop: int | Sequence[int]
) -> torch.Tensor:
    """Rearranges per-crop token features into region token order.

    Args:
        tokens: ``(B*gx*gy*gz, D, tx, ty, tz)``; crops batch-major, then C-order over ``(gx, gy, gz)``
            (the order of :func:`S2DCCore.data.views.tile_crops`).
        grid: crops per axis ``(gx, gy, gz)``.
        tokens_per_crop: ``(tx, ty, tz)``.

    Returns:
        ``(B, X*Y*Z, D)`` with ``X = gx*tx`` etc., token index ``(x*Y + y)*Z + z``.

    Raises:
        ValueError: if the token tensor does not fit the grid.
    """
    g, t = as_triple(grid, "grid"), as_triple(tokens_per_crop, "tokens_per_crop")
    n_crops = g[0] * g[1] * g[2]
    if tokens.dim() != 5 or tuple(tokens.shape[2:]) != t or tokens.shape[0] % n_crops:
        raise ValueError(f"expected (B*{n_crops}, D, {t[0]}, {t[1]}, {t[2]}) tokens, got {tuple(tokens.shape)}")
    b, d = tokens.shape[0] // n_crops, tokens.shape[1]
    x = tokens.reshape(b, g[0], g[1], g[2], d, t[0], t[1], t[2])  # (B, gx, gy, gz, D, tx, ty, tz)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)  # (B, gx, tx, gy, ty, gz, tz, D)
    return x.reshape(b, g[0] * t[0] * g[1] * t[1] * g[2] * t[2], d)  # (B, X*Y*Z, D)


def region_slices(
    tokens: torch.Tensor, grid: int | Sequence[int], tokens_per_crop: int | Sequence[int]
) -> torch.Tensor:
    """Groups region-ordered tokens into one token set per token-depth slice (the official layout).

    Args:
        tokens: ``(B, X*Y*Z, D)`` in region token order.
        grid: crops per axis ``(gx, gy, gz)``.
        tokens_per_crop: ``(tx, ty, tz)``.

    Returns:
        ``(B*Z, X*Y, D)``; group ``b*Z + z`` holds slice ``z`` of sample ``b``, token index ``x*Y + y``
        (the rows/columns of a ``mode="slice"`` correspondence matrix).
    """
    x_, y_, z_ = region_token_shape(grid, tokens_per_crop)
    if tokens.dim() != 3 or tokens.shape[1] != x_ * y_ * z_:
        raise ValueError(f"expected (B, {x_ * y_ * z_}, D) tokens, got {tuple(tokens.shape)}")
    b, d = tokens.shape[0], tokens.shape[2]
    x = tokens.reshape(b, x_ * y_, z_, d).transpose(1, 2)  # (B, Z, X*Y, D)
    return x.reshape(b * z_, x_ * y_, d)  # (B*Z, X*Y, D)
