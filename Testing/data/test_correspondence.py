"""Tests for S2DCCore.data.views.correspondence: token geometry, layouts and ground-truth matches."""

import itertools

import numpy as np
import pytest
import torch

from S2DCCore.data.views.correspondence import (
    RegionAffine,
    correspondence_matrix,
    crop_tokens_to_region,
    nearest_token_index,
    region_centre,
    region_slices,
    token_centres,
)


def _reference_matches(affine, grid, roi, tokens, mode):
    """Brute-force mutual nearest neighbours: argmin over all centres, region box check."""
    centres = token_centres(grid, roi, tokens)
    box = np.asarray(grid) * np.asarray(roi)
    forward, backward = affine.matrix(), affine.inverse().matrix()
    if mode == "slice":
        z_tokens = grid[2] * tokens[2]
        centres, box = centres[::z_tokens, :2], box[:2]
        forward, backward = forward[np.ix_([0, 1, 3], [0, 1, 3])], backward[np.ix_([0, 1, 3], [0, 1, 3])]
    d = centres.shape[1]

    def nearest(matrix):
        mapped = centres @ matrix[:d, :d].T + matrix[:d, d]
        dist = np.linalg.norm(mapped[:, None, :] - centres[None, :, :], axis=2)
        inside = np.all((mapped >= -0.5) & (mapped < box - 0.5), axis=1)
        return np.where(inside, dist.argmin(axis=1), -1)

    to_aug, to_src = nearest(forward), nearest(backward)
    out = np.zeros((len(centres), len(centres)), dtype=bool)
    for j, i in enumerate(to_aug):
        if i >= 0 and to_src[i] == j:
            out[j, i] = True
    return out


def test_token_centres__hand_values_and_order():
    centres = token_centres(grid=(2, 1, 1), roi=(4, 4, 2), tokens_per_crop=(2, 2, 1))  # tokens of 2x2x2 voxels
    assert centres.shape == (4 * 2 * 1, 3)
    assert centres[0].tolist() == [0.5, 0.5, 0.5]
    assert centres[1].tolist() == [0.5, 2.5, 0.5]  # y before x: C-order over (x, y, z)
    assert centres[2].tolist() == [2.5, 0.5, 0.5]
    assert centres[-1].tolist() == [6.5, 2.5, 0.5]  # last token of the second crop along x


def test_token_centres__rejects_roi_not_divisible():
    with pytest.raises(ValueError, match="multiple"):
        token_centres(grid=(1, 1, 1), roi=(10, 10, 10), tokens_per_crop=(3, 3, 3))


def test_nearest_token_index__cells_and_outside():
    points = np.array([[-0.5, 0.0], [1.49, 1.5], [3.49, 0.0], [3.5, 0.0], [-0.51, 0.0]])
    index = nearest_token_index(points, size=(2, 2), token_grid=(2, 2))
    assert index.tolist() == [0, 1, 2, -1, -1]


def test_region_affine__matrix_inverse_and_centre():
    affine = RegionAffine(angle_deg=23.0, translation=(3.0, -2.0, 1.5), scale=1.13, centre=(10.5, 7.5, 3.5))
    assert np.allclose(affine.inverse().matrix() @ affine.matrix(), np.eye(4))
    assert np.allclose(affine.inverse().inverse().matrix(), affine.matrix())
    no_shift = RegionAffine(angle_deg=23.0, translation=(0.0, 0.0, 0.0), scale=1.13, centre=(10.5, 7.5, 3.5))
    assert np.allclose(no_shift.matrix() @ [10.5, 7.5, 3.5, 1.0], [10.5, 7.5, 3.5, 1.0])
    # +90 degrees turns +x into +y; scale 2 doubles the offset from the centre.
    turn = RegionAffine(angle_deg=90.0, translation=(0.0, 0.0, 0.0), scale=2.0, centre=(0.0, 0.0, 0.0))
    assert np.allclose(turn.matrix() @ [1.0, 0.0, 1.0, 1.0], [0.0, 2.0, 2.0, 1.0])
    with pytest.raises(ValueError):
        RegionAffine(angle_deg=0.0, translation=(0.0, 0.0, 0.0), scale=0.0, centre=(0.0, 0.0, 0.0))


@pytest.mark.parametrize("mode, size", [("slice", 6 * 6), ("volume", 6 * 6 * 3)])
def test_correspondence_matrix__identity_is_identity(mode, size):
    grid, roi, tokens = (2, 2, 1), (9, 9, 9), (3, 3, 3)
    identity = RegionAffine.identity(np.asarray(grid) * roi)
    matches = correspondence_matrix(identity, grid, roi, tokens, mode=mode)
    assert matches.dtype == bool
    assert np.array_equal(matches, np.eye(size, dtype=bool))


@pytest.mark.parametrize("mode", ["slice", "volume"])
def test_correspondence_matrix__one_token_shift_in_x(mode):
    grid, roi, tokens = (2, 1, 1), (8, 8, 4), (2, 2, 2)  # 4x2x2 tokens of 4x4x2 voxels
    shape = (4, 2, 2)
    stride = 4.0
    shift = RegionAffine(angle_deg=0.0, translation=(stride, 0.0, 0.0), scale=1.0, centre=region_centre((16, 8, 4)))
    matches = correspondence_matrix(shift, grid, roi, tokens, mode=mode)
    n_z = 1 if mode == "slice" else shape[2]
    expected = np.zeros_like(matches)
    for x, y, z in itertools.product(range(shape[0] - 1), range(shape[1]), range(n_z)):
        expected[(x * shape[1] + y) * n_z + z, ((x + 1) * shape[1] + y) * n_z + z] = True
    assert np.array_equal(matches, expected)
    # The last x column of source tokens leaves the region; the first x column of aug tokens is empty.
    assert matches.sum() == (shape[0] - 1) * shape[1] * n_z


# src (x, y) -> aug (2 - y, x) for +90 degrees about the centre of a 3x3 token plane, written out by hand.
_ROT90 = {0: 6, 1: 3, 2: 0, 3: 7, 4: 4, 5: 1, 6: 8, 7: 5, 8: 2}


@pytest.mark.parametrize("mode", ["slice", "volume"])
def test_correspondence_matrix__rotation_90_is_hand_permutation(mode):
    grid, roi, tokens = (3, 1, 1), (2, 6, 4), (1, 3, 2)  # 3x3x2 tokens of 2x2x2 voxels
    turn = RegionAffine(angle_deg=90.0, translation=(0.0, 0.0, 0.0), scale=1.0, centre=region_centre((6, 6, 4)))
    matches = correspondence_matrix(turn, grid, roi, tokens, mode=mode)
    n_z = 1 if mode == "slice" else 2
    expected = np.zeros((9 * n_z, 9 * n_z), dtype=bool)
    for (src, aug), z in itertools.product(_ROT90.items(), range(n_z)):
        expected[src * n_z + z, aug * n_z + z] = True
    assert np.array_equal(matches, expected)
    back = RegionAffine(angle_deg=-90.0, translation=(0.0, 0.0, 0.0), scale=1.0, centre=region_centre((6, 6, 4)))
    assert np.array_equal(correspondence_matrix(back, grid, roi, tokens, mode=mode), expected.T)


@pytest.mark.parametrize("mode", ["slice", "volume"])
def test_correspondence_matrix__random_affines_match_brute_force(mode):
    rng = np.random.default_rng(7)
    grid, roi, tokens = (4, 4, 1), (12, 12, 12), (3, 3, 3)
    centre = region_centre((48, 48, 12))
    for _ in range(6):
        affine = RegionAffine(angle_deg=float(rng.uniform(-30, 30)), translation=(*rng.uniform(-3, 3, 2), 0.0),
                              scale=float(rng.uniform(0.8, 1.2)), centre=centre)
        matches = correspondence_matrix(affine, grid, roi, tokens, mode=mode)
        assert matches.sum(axis=0).max() <= 1 and matches.sum(axis=1).max() <= 1  # mutual NN: one-to-one
        assert matches.sum() > matches.shape[0] // 2  # small warps keep most tokens matched
        assert np.array_equal(matches, _reference_matches(affine, grid, roi, tokens, mode))


def test_correspondence_matrix__slice_mode_ignores_z_volume_mode_does_not():
    grid, roi, tokens = (2, 2, 1), (8, 8, 8), (2, 2, 2)
    centre = region_centre((16, 16, 8))
    flat = RegionAffine(angle_deg=10.0, translation=(1.0, 2.0, 0.0), scale=1.0, centre=centre)
    deep = RegionAffine(angle_deg=10.0, translation=(1.0, 2.0, 4.0), scale=1.0, centre=centre)
    slice_flat, slice_deep = (correspondence_matrix(a, grid, roi, tokens) for a in (flat, deep))
    assert np.array_equal(slice_flat, slice_deep) and slice_flat.sum() > 0
    volume_flat = correspondence_matrix(flat, grid, roi, tokens, mode="volume")
    volume_deep = correspondence_matrix(deep, grid, roi, tokens, mode="volume")
    # A z shift of one token moves every z = 0 token to z = 1 and pushes z = 1 out of the region.
    assert np.array_equal(volume_deep[0::2, 1::2], volume_flat[0::2, 0::2])
    assert not volume_deep[1::2].any()


def test_correspondence_matrix__rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        correspondence_matrix(RegionAffine.identity((8, 8, 8)), 1, 8, 2, mode="plane")


def test_crop_tokens_to_region__matches_hand_layout():
    grid, tokens, batch, dim = (2, 3, 2), (2, 1, 3), 2, 2
    n_crops = 12
    crop_tokens = torch.arange(batch * n_crops * dim * 6, dtype=torch.float32).reshape(batch * n_crops, dim, 2, 1, 3)
    region = crop_tokens_to_region(crop_tokens, grid, tokens)
    size_x, size_y, size_z = 4, 3, 6
    assert region.shape == (batch, size_x * size_y * size_z, dim)
    for b, cx, cy, cz, ix, iy, iz in itertools.product(range(2), range(2), range(3), range(2), range(2), range(1),
                                                       range(3)):
        crop = b * n_crops + (cx * 3 + cy) * 2 + cz
        x, y, z = cx * 2 + ix, cy * 1 + iy, cz * 3 + iz
        index = (x * size_y + y) * size_z + z
        assert torch.equal(region[b, index], crop_tokens[crop, :, ix, iy, iz])


def test_crop_tokens_to_region__rejects_wrong_shape():
    with pytest.raises(ValueError):
        crop_tokens_to_region(torch.zeros(5, 4, 2, 2, 2), grid=(2, 2, 1), tokens_per_crop=(2, 2, 2))
    with pytest.raises(ValueError):
        crop_tokens_to_region(torch.zeros(4, 4, 2, 2, 3), grid=(2, 2, 1), tokens_per_crop=(2, 2, 2))


def test_region_slices__groups_depth_slices():
    grid, tokens = (1, 2, 1), (2, 1, 3)  # token grid (2, 2, 3)
    region = torch.arange(2 * 12 * 2, dtype=torch.float32).reshape(2, 12, 2)  # (B, X*Y*Z, D)
    slices = region_slices(region, grid, tokens)
    assert slices.shape == (2 * 3, 4, 2)
    for b, x, y, z in itertools.product(range(2), range(2), range(2), range(3)):
        assert torch.equal(slices[b * 3 + z, x * 2 + y], region[b, (x * 2 + y) * 3 + z])
    with pytest.raises(ValueError):
        region_slices(region[:, :11], grid, tokens)
