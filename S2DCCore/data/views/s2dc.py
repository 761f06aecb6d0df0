"""S²DC view generation: a region's student crops, warped teacher crops and per-crop augmentations.

Port of the view construction described in ``methods.md`` §1.3 (S²DC, Pan et al., ICCV 2025). Random
parts follow style rule 6: ``sample_*`` functions draw parameters from a ``numpy.random.Generator``
passed in, deterministic functions apply them, and :func:`make_s2dc_views` returns the parameters
with the views, so the ground-truth token correspondences come from the very warp that was applied.

Geometry uses the voxel index coordinates of :mod:`S2DCCore.data.views.correspondence`: a 4×4 matrix maps a
source voxel ``p`` to the output voxel where its content lands. Warps run with ``grid_sample``
(trilinear, ``align_corners=False``) on the input tensor's device.

Deviations from the official code (all documented in the parameters below):
    * The per-crop scale factors really are 0.95–1.05 (the official MONAI ``scale_range`` gives
      factors of about 0–2 on every axis).
    * The per-crop translation and rotation ranges are the intended ones (the official values are
      themselves used as MONAI ranges, so the magnitudes were random up to the sampled value).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from S2DCCore.data.views.correspondence import (
    MatchMode,
    RegionAffine,
    Triple,
    as_triple,
    correspondence_matrix,
    region_centre,
)


@dataclass(frozen=True)
class ViewConfig:
    """Parameters of the S²DC views; field names equal the keywords of :func:`make_s2dc_views`.

    Defaults are the official ones: 4×4×1 crops of 96³, last Swin stage (3³ tokens per crop), rotation
    ±30° about z, shift ±roi/4 in x–y, grid scale 0.9–1.2, crop augmentation ±roi/4 / ±20° / 0.95–1.05,
    intensity shift ±0.1 with probability 0.1.

    Attributes:
        grid: crops per axis ``(gx, gy, gz)``.
        roi: crop size in voxels ``(rx, ry, rz)``.
        tokens_per_crop: tokens per crop and axis ``(tx, ty, tz)``.
        mode: correspondence mode, ``"slice"`` (official) or ``"volume"``.
        max_angle: region rotation range about z, degrees.
        max_shift: region shift range in x–y, voxels; ``None`` = ``roi // 4`` per axis.
        scale_range: range of the sampled region scale ``s``.
        invert_scale: if True (official), ``s`` scales the sampling grid, so content is magnified by
            ``1/s`` (MONAI's ``Affine`` maps output to input coordinates); if False, by ``s``.
        crop_max_shift: per-crop shift range in x–y, voxels; ``None`` = ``roi // 4`` per axis.
        crop_max_angle: per-crop rotation range about x and about y, degrees.
        crop_scale_range: per-crop scale factor range in x and y (z is not scaled).
        intensity_offset: half-width of the additive intensity shift (region and crops).
        intensity_prob: probability of applying the intensity shift.
        crop_aug_mode: ``fixed`` (default: the ranges above mean what they say) or ``official`` (the
            official code's ``RandAffined`` semantics, see `sample_crop_augmentation`).
    """

    grid: Triple = (4, 4, 1)
    roi: Triple = (96, 96, 96)
    tokens_per_crop: Triple = (3, 3, 3)
    mode: MatchMode = "slice"
    max_angle: int = 30
    max_shift: int | None = None
    scale_range: tuple[float, float] = (0.9, 1.2)
    invert_scale: bool = True
    crop_max_shift: int | None = None
    crop_max_angle: int = 20
    crop_scale_range: tuple[float, float] = (0.95, 1.05)
    intensity_offset: float = 0.1
    intensity_prob: float = 0.1
    crop_aug_mode: str = "fixed"

    def __post_init__(self) -> None:
        if self.crop_aug_mode not in ("fixed", "official"):
            raise ValueError(f"views.crop_aug_mode must be 'fixed' or 'official', not {self.crop_aug_mode!r}")


_DEFAULT = ViewConfig()


def _shift_range(max_shift: int | None, roi: Triple) -> tuple[int, int]:
    """Returns the x and y shift half-widths: ``max_shift`` or ``roi // 4``."""
    return (roi[0] // 4, roi[1] // 4) if max_shift is None else (int(max_shift), int(max_shift))


def sample_region_affine(
    rng: np.random.Generator,
    roi: int | Sequence[int],
    region_shape: Sequence[int],
    max_angle: int = _DEFAULT.max_angle,
    max_shift: int | None = _DEFAULT.max_shift,
    scale_range: tuple[float, float] = _DEFAULT.scale_range,
    invert_scale: bool = _DEFAULT.invert_scale,
) -> RegionAffine:
    """Samples the whole-region teacher warp (official ``get_affine_transform``).

    Angle and shift are integers drawn uniformly from ``[-max, max]`` (as the official ``randint``);
    the shift is in-plane only (z shift 0); ``s ~ U(scale_range)``.

    Args:
        rng: random generator (the only source of randomness).
        roi: crop size, for the default shift range ``roi // 4``.
        region_shape: spatial shape ``(n_x, n_y, n_z)`` of the region; the warp is centred on it.
        max_angle: rotation half-range about z in degrees.
        max_shift: x–y shift half-range in voxels; ``None`` = ``roi // 4``.
        scale_range: ``(low, high)`` of the sampled scale ``s``.
        invert_scale: content magnification ``1/s`` (official) instead of ``s``.

    Returns:
        The sampled :class:`RegionAffine`.
    """
    sx, sy = _shift_range(max_shift, as_triple(roi, "roi"))
    angle = int(rng.integers(-max_angle, max_angle, endpoint=True))
    shift = (float(rng.integers(-sx, sx, endpoint=True)), float(rng.integers(-sy, sy, endpoint=True)), 0.0)
    s = float(rng.uniform(*scale_range))
    return RegionAffine(angle_deg=float(angle), translation=shift, scale=1.0 / s if invert_scale else s,
                        centre=region_centre(region_shape))


def sample_intensity_shift(rng: np.random.Generator, offset: float, prob: float) -> float:
    """Samples an additive intensity shift ``U(-offset, offset)`` applied with probability ``prob``.

    Both draws are always made, so the generator advances the same way whatever the outcome.

    Returns:
        The shift, or 0.0 when it is not applied.
    """
    apply, value = rng.random() < prob, float(rng.uniform(-offset, offset))
    return value if apply else 0.0


@dataclass(frozen=True)
class CropAugmentation:
    """Parameters of one per-crop augmentation (the positives of S²DC's global term ``L_g``).

    The content warp is ``q = c + t + R_y(angle_y) R_x(angle_x) S (p - c)`` about the crop centre ``c``,
    applied after adding ``intensity_offset``.

    Attributes:
        translation: shift in voxels ``(tx, ty, tz)``.
        angles_deg: rotations ``(about x, about y)`` in degrees.
        scale: per-axis content scale factors ``(sx, sy, sz)``.
        intensity_offset: additive intensity shift (0.0 when not applied).

    Examples:
        >>> params = CropAugmentation((0.0, 0.0, 0.0), (0.0, 0.0), (1.0, 1.0, 1.0), 0.0)
        >>> bool(np.allclose(params.matrix((4, 4, 4)), np.eye(4)))
        True
    """

    translation: tuple[float, float, float]
    angles_deg: tuple[float, float]
    scale: tuple[float, float, float]
    intensity_offset: float

    def matrix(self, crop_shape: Sequence[int]) -> np.ndarray:
        """Returns the 4×4 source-voxel → augmented-voxel matrix for a crop of spatial shape ``crop_shape``."""
        ax, ay = (math.radians(a) for a in self.angles_deg)
        rot_x = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(ax), -math.sin(ax)], [0.0, math.sin(ax), math.cos(ax)]])
        rot_y = np.array([[math.cos(ay), 0.0, math.sin(ay)], [0.0, 1.0, 0.0], [-math.sin(ay), 0.0, math.cos(ay)]])
        linear = rot_y @ rot_x @ np.diag(self.scale)
        centre = np.asarray(region_centre(crop_shape))
        out = np.eye(4)
        out[:3, :3] = linear
        out[:3, 3] = centre + np.asarray(self.translation) - linear @ centre
        return out


def sample_crop_augmentation(
    rng: np.random.Generator,
    roi: int | Sequence[int],
    max_shift: int | None = _DEFAULT.crop_max_shift,
    max_angle: int = _DEFAULT.crop_max_angle,
    scale_range: tuple[float, float] = _DEFAULT.crop_scale_range,
    intensity_offset: float = _DEFAULT.intensity_offset,
    intensity_prob: float = _DEFAULT.intensity_prob,
    mode: str = "fixed",
) -> CropAugmentation:
    """Samples one per-crop augmentation (official ``RandAffined`` + ``RandShiftIntensityd``).

    ``mode="fixed"``: shifts in x, y and angles about x, y are integers uniform in ``[-max, max]``; x and
    y scale factors are ``U(scale_range)`` (really 0.95–1.05 by default, the intended official range); no
    z shift, rotation about z or z scaling.

    ``mode="official"``: what the official code's ``RandAffined(translate_range=(t1, t2, 0),
    rotate_range=(a1, a2, 0), scale_range=(s1, s2, 1))`` does with its per-call ranges: MONAI samples
    ``U(-|r|, |r|)`` for a scalar range ``r``, so with ``t = randint(-max_shift, max_shift)`` and
    ``a = randint(-max_angle, max_angle)`` the shift is ``U(-|t|, |t|)`` and the angle ``U(-|a|, |a|)``
    (about half the fixed mode's magnitudes on average), and it adds 1 to sampled scales: the x and y
    factors are ``1 + U(-s, s)`` with ``s = U(scale_range)`` (≈ U(0, 2)) and z is scaled by ``1 + U(-1, 1)``.

    Args:
        rng: random generator.
        roi: crop size, for the default shift range ``roi // 4``.
        max_shift: x–y shift half-range in voxels; ``None`` = ``roi // 4``.
        max_angle: rotation half-range about x and about y, degrees.
        scale_range: ``(low, high)`` of the x and y scale factors.
        intensity_offset: half-width of the intensity shift.
        intensity_prob: probability of the intensity shift.

    Returns:
        The sampled :class:`CropAugmentation`.
    """
    sx, sy = _shift_range(max_shift, as_triple(roi, "roi"))
    shift = (float(rng.integers(-sx, sx, endpoint=True)), float(rng.integers(-sy, sy, endpoint=True)), 0.0)
    angles = tuple(float(a) for a in rng.integers(-max_angle, max_angle, size=2, endpoint=True))
    factors = rng.uniform(*scale_range, size=2)
    offset = sample_intensity_shift(rng, intensity_offset, intensity_prob)
    if mode == "official":
        # The values above are MONAI's per-call ranges; MONAI then draws within them (see the docstring).
        shift = (float(rng.uniform(-abs(shift[0]), abs(shift[0]))), float(rng.uniform(-abs(shift[1]), abs(shift[1]))), 0.0)
        angles = tuple(float(rng.uniform(-abs(a), abs(a))) for a in angles)
        scale = (1.0 + float(rng.uniform(-factors[0], factors[0])), 1.0 + float(rng.uniform(-factors[1], factors[1])),
                 1.0 + float(rng.uniform(-1.0, 1.0)))
        return CropAugmentation(translation=shift, angles_deg=(angles[0], angles[1]), scale=scale,
                                intensity_offset=offset)
    if mode != "fixed":
        raise ValueError(f"mode must be 'fixed' or 'official', not {mode!r}")
    return CropAugmentation(translation=shift, angles_deg=(angles[0], angles[1]),
                            scale=(float(factors[0]), float(factors[1]), 1.0), intensity_offset=offset)


def _normalised_theta(matrix: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Converts a source → output voxel matrix into ``affine_grid``'s 3×4 ``theta``.

    ``theta`` maps normalised OUTPUT coordinates to normalised INPUT coordinates. With
    ``align_corners=False`` voxel ``i`` of an axis of ``n`` voxels sits at ``(2i + 1)/n - 1``, so the
    voxel → normalised map never divides by zero, even for a one-voxel axis.
    """
    n = np.asarray(shape, dtype=np.float64)
    to_voxel = np.eye(4)
    to_voxel[:3, :3] = np.diag(n / 2)
    to_voxel[:3, 3] = (n - 1) / 2
    theta = np.linalg.inv(to_voxel) @ np.linalg.inv(matrix) @ to_voxel  # normalised out -> normalised in
    # grid_sample orders grid components (W, H, D): for a (X, Y, Z) volume that is (z, y, x).
    flip = np.eye(4)[[2, 1, 0, 3]]
    return (flip @ theta @ flip)[:3]


def warp_volume(volume: torch.Tensor, matrix: np.ndarray, padding: str = "zeros") -> torch.Tensor:
    """Warps a volume so that content at source voxel ``p`` lands at output voxel ``matrix @ p``.

    Args:
        volume: ``(C, X, Y, Z)`` or ``(B, C, X, Y, Z)`` floating tensor, any device.
        matrix: 4×4 homogeneous source → output voxel matrix (one for the whole batch).
        padding: ``grid_sample`` padding mode (``"zeros"``, ``"border"``, ``"reflection"``).

    Returns:
        Tensor of the input's shape, dtype and device (trilinear interpolation).
    """
    if volume.dim() not in (4, 5) or not volume.is_floating_point():
        raise ValueError(f"expected a floating (C, X, Y, Z) or (B, C, X, Y, Z) tensor, got {volume.dtype} "
                         f"{tuple(volume.shape)}")
    batch = volume if volume.dim() == 5 else volume.unsqueeze(0)  # (B, C, X, Y, Z)
    theta = torch.as_tensor(_normalised_theta(matrix, batch.shape[2:]), dtype=batch.dtype, device=batch.device)
    grid = F.affine_grid(theta.expand(batch.shape[0], 3, 4), list(batch.shape), align_corners=False)
    out = F.grid_sample(batch, grid, mode="bilinear", padding_mode=padding, align_corners=False)
    return out if volume.dim() == 5 else out.squeeze(0)


def warp_region(region: torch.Tensor, affine: RegionAffine, padding: str = "zeros") -> torch.Tensor:
    """Applies a :class:`RegionAffine` to a region: content at ``p`` appears at ``affine.matrix() @ p``.

    Args:
        region: ``(C, X, Y, Z)`` or ``(B, C, X, Y, Z)`` floating tensor.
        affine: the warp (its ``centre`` should be the region centre).
        padding: ``grid_sample`` padding mode; the official code pads with zeros.

    Returns:
        The warped region, same shape, dtype and device.
    """
    return warp_volume(region, affine.matrix(), padding=padding)


def tile_crops(region: torch.Tensor, grid: int | Sequence[int], roi: int | Sequence[int]) -> torch.Tensor:
    """Cuts a region into its grid of non-overlapping crops.

    Args:
        region: ``(C, gx*rx, gy*ry, gz*rz)`` or batched ``(B, C, ...)``.
        grid: crops per axis ``(gx, gy, gz)``.
        roi: crop size ``(rx, ry, rz)``.

    Returns:
        ``(B*gx*gy*gz, C, rx, ry, rz)``, batch-major then C-order over ``(gx, gy, gz)`` (``B = 1`` unbatched).
    """
    g, r = as_triple(grid, "grid"), as_triple(roi, "roi")
    batch = region if region.dim() == 5 else region.unsqueeze(0)
    expected = tuple(gi * ri for gi, ri in zip(g, r))
    if region.dim() not in (4, 5) or tuple(batch.shape[2:]) != expected:
        raise ValueError(f"region spatial shape must be grid*roi = {expected}, got {tuple(region.shape)}")
    b, c = batch.shape[:2]
    x = batch.reshape(b, c, g[0], r[0], g[1], r[1], g[2], r[2])  # (B, C, gx, rx, gy, ry, gz, rz)
    x = x.permute(0, 2, 4, 6, 1, 3, 5, 7)  # (B, gx, gy, gz, C, rx, ry, rz)
    return x.reshape(b * g[0] * g[1] * g[2], c, r[0], r[1], r[2])


def augment_crop(crop: torch.Tensor, params: CropAugmentation, padding: str = "zeros") -> torch.Tensor:
    """Applies a per-crop augmentation: intensity shift, then the affine warp (official order).

    Args:
        crop: ``(C, rx, ry, rz)`` or ``(B, C, rx, ry, rz)`` floating tensor.
        params: sampled :class:`CropAugmentation`.
        padding: ``grid_sample`` padding mode.

    Returns:
        The augmented crop, same shape, dtype and device.
    """
    return warp_volume(crop + params.intensity_offset, params.matrix(crop.shape[-3:]), padding=padding)


@dataclass(frozen=True)
class S2DCViews:
    """The views of one region and the parameters that produced them.

    Attributes:
        student: ``(N_crops, C, rx, ry, rz)`` source crops (never augmented).
        teacher: ``(N_crops, C, rx, ry, rz)`` crops of the warped region (``L_p2p``, ``L_p2s``).
        teacher_aug: ``(N_crops, C, rx, ry, rz)`` per-crop augmented source crops (``L_g`` positives).
        matches: bool ``(N_src, N_aug)`` token correspondences (see ``correspondence_matrix``).
        region_affine: the region warp.
        teacher_offset: intensity shift added to the warped region (0.0 if none).
        crop_params: per-crop augmentation parameters, in crop order.
    """

    student: torch.Tensor
    teacher: torch.Tensor
    teacher_aug: torch.Tensor
    matches: torch.Tensor
    region_affine: RegionAffine
    teacher_offset: float
    crop_params: tuple[CropAugmentation, ...]


def make_s2dc_views(
    region: torch.Tensor,
    rng: np.random.Generator,
    grid: Triple = _DEFAULT.grid,
    roi: Triple = _DEFAULT.roi,
    tokens_per_crop: Triple = _DEFAULT.tokens_per_crop,
    mode: MatchMode = _DEFAULT.mode,
    max_angle: int = _DEFAULT.max_angle,
    max_shift: int | None = _DEFAULT.max_shift,
    scale_range: tuple[float, float] = _DEFAULT.scale_range,
    invert_scale: bool = _DEFAULT.invert_scale,
    crop_max_shift: int | None = _DEFAULT.crop_max_shift,
    crop_max_angle: int = _DEFAULT.crop_max_angle,
    crop_scale_range: tuple[float, float] = _DEFAULT.crop_scale_range,
    intensity_offset: float = _DEFAULT.intensity_offset,
    intensity_prob: float = _DEFAULT.intensity_prob,
    crop_aug_mode: str = _DEFAULT.crop_aug_mode,
) -> S2DCViews:
    """Builds the S²DC student, teacher and per-crop-augmented views of one region.

    Call as ``make_s2dc_views(region, rng, **dataclasses.asdict(config))`` with a :class:`ViewConfig`;
    the keywords are documented there.

    Args:
        region: ``(C, gx*rx, gy*ry, gz*rz)`` floating tensor; views are made on its device.
        rng: random generator for every sampled parameter.

    Returns:
        :class:`S2DCViews`; ``matches`` is a bool tensor on the region's device.

    Examples:
        >>> views = make_s2dc_views(torch.rand(1, 32, 32, 16), np.random.default_rng(0),
        ...                         grid=(2, 2, 1), roi=(16, 16, 16), tokens_per_crop=(2, 2, 2))
        >>> tuple(views.teacher.shape), tuple(views.matches.shape)
        ((4, 1, 16, 16, 16), (16, 16))
    """
    if region.dim() != 4:
        raise ValueError(f"expected one region (C, X, Y, Z), got {tuple(region.shape)}")
    student = tile_crops(region, grid, roi)  # (N_crops, C, rx, ry, rz); also checks the shape
    affine = sample_region_affine(rng, roi, region.shape[1:], max_angle=max_angle, max_shift=max_shift,
                                  scale_range=scale_range, invert_scale=invert_scale)
    offset = sample_intensity_shift(rng, intensity_offset, intensity_prob)
    crop_params = tuple(
        sample_crop_augmentation(rng, roi, max_shift=crop_max_shift, max_angle=crop_max_angle,
                                 scale_range=crop_scale_range, intensity_offset=intensity_offset,
                                 intensity_prob=intensity_prob, mode=crop_aug_mode)
        for _ in range(student.shape[0])
    )
    # Official order: warp the whole region, then shift its intensity, then cut the same grid.
    teacher = tile_crops(warp_region(region, affine) + offset, grid, roi)
    teacher_aug = torch.stack([augment_crop(crop, p) for crop, p in zip(student, crop_params)])
    matches = torch.from_numpy(correspondence_matrix(affine, grid, roi, tokens_per_crop, mode=mode))
    return S2DCViews(student=student, teacher=teacher, teacher_aug=teacher_aug, matches=matches.to(region.device),
                     region_affine=affine, teacher_offset=offset, crop_params=crop_params)
