"""Tests for S2DCCore.data.views.s2dc: warps, tiling, sampled parameters and the assembled S²DC views."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from S2DCCore.data.views.correspondence import (
    RegionAffine,
    correspondence_matrix,
    crop_tokens_to_region,
    region_centre,
    token_centres,
)
from S2DCCore.data.views.s2dc import (
    CropAugmentation,
    ViewConfig,
    augment_crop,
    make_s2dc_views,
    sample_crop_augmentation,
    sample_region_affine,
    tile_crops,
    warp_region,
    warp_volume,
)

TINY = dict(grid=(2, 2, 1), roi=(16, 16, 16), tokens_per_crop=(2, 2, 2))


def _blob(shape, centre, sigma=1.0):
    """A Gaussian dot at a continuous voxel coordinate, shape (1, X, Y, Z)."""
    axes = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    dist2 = sum((a - c) ** 2 for a, c in zip(axes, centre))
    return torch.from_numpy(np.exp(-dist2 / (2 * sigma**2))).float().unsqueeze(0)


def _centroid(volume, around, radius=4):
    """Intensity-weighted centroid of a (1, X, Y, Z) volume in a window around a point."""
    lo = np.maximum(np.round(around).astype(int) - radius, 0)
    hi = np.round(around).astype(int) + radius + 1
    window = volume[0, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].numpy().astype(np.float64)
    grids = np.meshgrid(*(np.arange(a, a + n) for a, n in zip(lo, window.shape)), indexing="ij")
    return np.array([(g * window).sum() / window.sum() for g in grids])


def test_warp_region__identity_and_integer_shift_are_exact():
    region = torch.rand(2, 10, 8, 6)
    identity = RegionAffine.identity((10, 8, 6))
    assert torch.allclose(warp_region(region, identity), region, atol=1e-5)
    shift = RegionAffine(angle_deg=0.0, translation=(2.0, -1.0, 1.0), scale=1.0, centre=region_centre((10, 8, 6)))
    out = warp_region(region, shift)
    assert torch.allclose(out[:, 2:, :-1, 1:], region[:, :-2, 1:, :-1], atol=1e-5)
    assert out[:, :2].abs().max() == 0 and out[:, :, -1:].abs().max() == 0  # zero padding where content left


def test_warp_region__batch_equals_per_item_and_keeps_dtype():
    region = torch.rand(3, 1, 12, 12, 4, dtype=torch.float64)
    affine = RegionAffine(angle_deg=17.0, translation=(1.5, 0.0, 0.0), scale=1.1, centre=region_centre((12, 12, 4)))
    batched = warp_region(region, affine)
    assert batched.dtype == torch.float64 and batched.shape == region.shape
    for b in range(3):
        assert torch.allclose(batched[b], warp_region(region[b], affine))
    with pytest.raises(ValueError):
        warp_region(torch.zeros(12, 12, 4), affine)


@pytest.mark.parametrize("mode", ["slice", "volume"])
def test_warp_region__dot_lands_at_mapped_point_in_paired_token(mode):
    grid, roi, tokens = (2, 2, 1), (16, 16, 16), (2, 2, 2)  # tokens of 8 voxels, region 32x32x16
    shape, size = (32, 32, 16), 8
    centres = token_centres(grid, roi, tokens)  # (32, 3)
    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(4):
        affine = sample_region_affine(rng, roi, shape, max_shift=4)
        matches = correspondence_matrix(affine, grid, roi, tokens, mode=mode)
        step = 2 if mode == "slice" else 1  # slice rows are (x, y) tokens; use the z = 0 centres
        for src in np.flatnonzero(matches.any(axis=1))[:6]:
            centre = centres[src * step]
            mapped = (affine.matrix() @ np.append(centre, 1.0))[:3]
            warped = warp_region(_blob(shape, centre), affine)
            brightest = np.array(np.unravel_index(int(warped.argmax()), shape))
            assert np.abs(brightest - mapped).max() <= 1.0
            if np.all((mapped >= 4) & (mapped <= np.array(shape) - 5)):  # centroid window not clipped
                assert np.abs(_centroid(warped, mapped) - mapped).max() < 0.25
            # The paired aug token contains the dot unless the mapped point sits on a token boundary.
            offset = (mapped + 0.5) % size
            dims = 2 if mode == "slice" else 3
            if np.all((offset[:dims] > 1.0) & (offset[:dims] < size - 1.0)):
                cell = ((brightest + 0.5) // size).astype(int)
                aug = cell[0] * 4 + cell[1] if mode == "slice" else (cell[0] * 4 + cell[1]) * 2 + cell[2]
                assert matches[src, aug]
                checked += 1
    assert checked >= 8


def test_tile_crops__order_matches_token_layout():
    # Each voxel holds the index of its region token, so pooled crop tokens must come back as arange.
    grid, roi, tokens = (2, 3, 2), (4, 4, 6), (2, 1, 3)
    size = np.array(roi) // tokens
    shape = np.array(grid) * roi
    axes = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    cells = [a // s for a, s in zip(axes, size)]
    token_grid = np.array(grid) * tokens
    labels = (cells[0] * token_grid[1] + cells[1]) * token_grid[2] + cells[2]
    region = torch.from_numpy(labels).float().unsqueeze(0)  # (1, X, Y, Z)
    crops = tile_crops(region, grid, roi)  # (12, 1, 4, 4, 6)
    assert crops.shape == (12, 1, 4, 4, 6)
    pooled = F.avg_pool3d(crops, kernel_size=tuple(size.tolist()))  # (12, 1, tx, ty, tz)
    ordered = crop_tokens_to_region(pooled, grid, tokens)  # (1, N, 1)
    assert torch.equal(ordered[0, :, 0], torch.arange(int(np.prod(token_grid)), dtype=torch.float32))


def test_tile_crops__batched_and_shape_errors():
    region = torch.rand(2, 1, 8, 8, 4)
    crops = tile_crops(region, grid=(2, 2, 1), roi=(4, 4, 4))
    assert crops.shape == (8, 1, 4, 4, 4)
    assert torch.equal(crops[5], region[1, :, 0:4, 4:8, :])  # sample 1, crop (0, 1, 0)
    with pytest.raises(ValueError, match="grid"):
        tile_crops(torch.rand(1, 8, 8, 5), grid=(2, 2, 1), roi=(4, 4, 4))


def test_sample_region_affine__official_ranges():
    rng = np.random.default_rng(0)
    samples = [sample_region_affine(rng, roi=96, region_shape=(384, 384, 96)) for _ in range(300)]
    angles = np.array([a.angle_deg for a in samples])
    shifts = np.array([a.translation for a in samples])
    scales = np.array([a.scale for a in samples])
    assert np.all(angles == np.round(angles)) and angles.min() >= -30 and angles.max() <= 30
    assert np.abs(shifts[:, :2]).max() == 24 and np.all(shifts[:, 2] == 0)
    # invert_scale (official): the grid scale s ~ U(0.9, 1.2) magnifies content by 1/s.
    assert scales.min() >= 1 / 1.2 and scales.max() <= 1 / 0.9 and scales.max() - scales.min() > 0.2
    assert all(a.centre == (191.5, 191.5, 47.5) for a in samples)
    direct = sample_region_affine(rng, roi=96, region_shape=(384, 384, 96), invert_scale=False)
    assert 0.9 <= direct.scale <= 1.2


def test_sample_crop_augmentation__scale_really_within_range():
    rng = np.random.default_rng(1)
    samples = [sample_crop_augmentation(rng, roi=96) for _ in range(2000)]
    scales = np.array([p.scale for p in samples])
    # The official MONAI scale_range quirk gave factors of ~0-2; here they stay in 0.95-1.05, z unscaled.
    assert scales[:, :2].min() >= 0.95 and scales[:, :2].max() <= 1.05
    assert scales[:, :2].min() < 0.96 and scales[:, :2].max() > 1.04
    assert np.all(scales[:, 2] == 1.0)
    assert np.abs([p.translation[:2] for p in samples]).max() == 24
    assert np.abs([p.angles_deg for p in samples]).max() == 20
    offsets = np.array([p.intensity_offset for p in samples])
    assert np.abs(offsets).max() <= 0.1 and 0.06 < np.mean(offsets != 0) < 0.14


def test_augment_crop__moves_dot_and_shifts_intensity():
    shape = (16, 16, 16)
    params = CropAugmentation(translation=(3.0, -2.0, 0.0), angles_deg=(15.0, -10.0), scale=(1.04, 0.96, 1.0),
                              intensity_offset=0.0)
    point = np.array([7.0, 9.0, 6.0])
    mapped = (params.matrix(shape) @ np.append(point, 1.0))[:3]
    out = augment_crop(_blob(shape, point), params)
    assert np.abs(_centroid(out, mapped) - mapped).max() < 0.25
    shift_only = CropAugmentation((0.0, 0.0, 0.0), (0.0, 0.0), (1.0, 1.0, 1.0), intensity_offset=0.05)
    crop = torch.rand(1, 8, 8, 8)
    assert torch.allclose(augment_crop(crop, shift_only), crop + 0.05, atol=1e-5)
    assert torch.allclose(warp_volume(crop, shift_only.matrix((8, 8, 8))), crop, atol=1e-5)


def test_make_s2dc_views__shapes_and_consistency():
    region = torch.rand(1, 32, 32, 16)
    views = make_s2dc_views(region, np.random.default_rng(5), **TINY, intensity_prob=1.0)
    for crops in (views.student, views.teacher, views.teacher_aug):
        assert crops.shape == (4, 1, 16, 16, 16)
    assert views.matches.dtype == torch.bool and views.matches.shape == (16, 16)
    assert torch.equal(views.student, tile_crops(region, TINY["grid"], TINY["roi"]))
    assert views.teacher_offset != 0.0
    expected_teacher = tile_crops(warp_region(region, views.region_affine) + views.teacher_offset, (2, 2, 1), 16)
    assert torch.allclose(views.teacher, expected_teacher)
    assert len(views.crop_params) == 4
    for k in range(4):
        assert torch.allclose(views.teacher_aug[k], augment_crop(views.student[k], views.crop_params[k]))
    gt = correspondence_matrix(views.region_affine, **TINY)
    assert np.array_equal(views.matches.numpy(), gt)
    volume = make_s2dc_views(region, np.random.default_rng(5), **TINY, mode="volume")
    assert volume.matches.shape == (32, 32)


def test_make_s2dc_views__deterministic_by_seed_and_config_roundtrip():
    region = torch.rand(1, 32, 32, 16)
    config = dataclasses.replace(ViewConfig(), **TINY)
    first = make_s2dc_views(region, np.random.default_rng(11), **dataclasses.asdict(config))
    second = make_s2dc_views(region, np.random.default_rng(11), **dataclasses.asdict(config))
    assert first.region_affine == second.region_affine and first.crop_params == second.crop_params
    assert torch.equal(first.teacher, second.teacher) and torch.equal(first.teacher_aug, second.teacher_aug)
    other = make_s2dc_views(region, np.random.default_rng(12), **dataclasses.asdict(config))
    assert other.region_affine != first.region_affine


def test_view_config__official_defaults_and_errors():
    config = ViewConfig()
    assert (config.grid, config.roi, config.tokens_per_crop) == ((4, 4, 1), (96, 96, 96), (3, 3, 3))
    assert (config.mode, config.max_angle, config.max_shift, config.scale_range) == ("slice", 30, None, (0.9, 1.2))
    assert (config.crop_max_angle, config.crop_scale_range) == (20, (0.95, 1.05))
    with pytest.raises(ValueError):
        make_s2dc_views(torch.rand(1, 1, 32, 32, 16), np.random.default_rng(0), **TINY)
    with pytest.raises(ValueError):
        make_s2dc_views(torch.rand(1, 30, 32, 16), np.random.default_rng(0), **TINY)
