"""Grids and resampling: the model grid covers the input in physical space; mappings are exact affines."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from S2DCCore.geometry import (Grid, argmax_resample, model_grid, reoriented_grid, resample, same_grid,
                                         sample_points, strided_grid, world_to_index)


def _corners(grid: Grid) -> np.ndarray:
    """RAS positions of the 8 corner voxel centres, sorted (independent of axis order)."""
    idx = np.array([[i, j, k, 1] for i in (0, grid.shape[0] - 1) for j in (0, grid.shape[1] - 1)
                    for k in (0, grid.shape[2] - 1)], dtype=np.float64)
    return np.array(sorted(map(tuple, np.round((grid.affine @ idx.T).T[:, :3], 6))))


def test_reorientation_is_a_relabelling_of_the_same_voxels(geometry):
    kind, affine = geometry
    grid = Grid((7, 9, 5), affine)
    oriented = reoriented_grid(grid)
    assert "".join(nib.aff2axcodes(oriented.affine)) == "RAS"
    assert sorted(oriented.shape) == sorted(grid.shape)
    np.testing.assert_allclose(_corners(oriented), _corners(grid), atol=1e-6)
    # Resampling onto it moves values without interpolating them.
    values = np.random.default_rng(0).normal(size=grid.shape).astype(np.float32)
    moved = resample(values, grid, oriented)
    assert sorted(moved.ravel().tolist()) == pytest.approx(sorted(values.ravel().tolist()), abs=1e-5)


def test_model_grid_keeps_the_first_voxel_and_directions_and_counts_like_monai(geometry):
    kind, affine = geometry
    grid = Grid((40, 36, 32), affine)
    target = model_grid(grid, (1.5, 2.0, 2.5))
    oriented = reoriented_grid(grid)
    np.testing.assert_allclose(target.affine[:3, 3], oriented.affine[:3, 3], atol=1e-9)  # first voxel centre
    np.testing.assert_allclose(target.spacing, (1.5, 2.0, 2.5), atol=1e-9)
    directions = oriented.affine[:3, :3] / np.linalg.norm(oriented.affine[:3, :3], axis=0)
    np.testing.assert_allclose(target.affine[:3, :3] / np.linalg.norm(target.affine[:3, :3], axis=0), directions)
    expected = np.round((np.array(oriented.shape) - 1) * np.array(oriented.spacing) / (1.5, 2.0, 2.5)) + 1
    assert target.shape == tuple(int(n) for n in expected)
    assert model_grid(grid, None).shape == oriented.shape


def test_resampling_a_linear_field_is_exact_inside(geometry):
    kind, affine = geometry
    grid = Grid((20, 18, 16), affine)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), -1)
    field = lambda ras: ras @ np.array([0.3, -0.7, 0.2]) + 5.0  # noqa: E731
    values = field(ijk @ affine[:3, :3].T + affine[:3, 3]).astype(np.float32)
    target = model_grid(grid, (2.0, 2.0, 2.0))
    out = resample(values, grid, target)
    tjk = np.stack(np.meshgrid(*[np.arange(n) for n in target.shape], indexing="ij"), -1)
    expected = field(tjk @ target.affine[:3, :3].T + target.affine[:3, 3])
    source_index = np.einsum("ij,...j->...i", np.linalg.inv(affine)[:3, :3], tjk @ target.affine[:3, :3].T
                             + target.affine[:3, 3]) + np.linalg.inv(affine)[:3, 3]
    inside = np.all((source_index >= 0) & (source_index <= np.array(grid.shape) - 1), axis=-1)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(out[inside], expected[inside], atol=1e-4)


def _scipy_resample(values: np.ndarray, src: Grid, dst: Grid) -> np.ndarray:
    """Reference: scipy's affine_transform (trilinear, edge replication), one channel."""
    from scipy import ndimage

    mapping = np.linalg.solve(src.affine, dst.affine)
    return ndimage.affine_transform(values, mapping[:3, :3], mapping[:3, 3], output_shape=dst.shape, order=1,
                                    mode="nearest")


def test_resample_matches_scipy(geometry):
    kind, affine = geometry
    src = Grid((13, 11, 9), affine)
    dst = model_grid(src, (0.9, 1.3, 1.1))
    values = np.random.default_rng(5).normal(size=src.shape).astype(np.float32)
    np.testing.assert_allclose(resample(values, src, dst), _scipy_resample(values, src, dst), atol=1e-4)


@pytest.mark.parametrize("smooth", [0.0, 1.5])
def test_argmax_resample_matches_channel_wise_resampling(geometry, smooth):
    from scipy import ndimage

    kind, affine = geometry
    rng = np.random.default_rng(3)
    dst = Grid((17, 15, 20), affine)
    src = model_grid(dst, (2.0, 2.0, 2.5))
    scores = ndimage.gaussian_filter(rng.normal(size=(4,) + src.shape), (0,) + (smooth,) * 3).astype(np.float32)
    scores[:, :2] = 0.0  # exact ties: the lowest channel wins, as in argmax
    reference = np.stack([_scipy_resample(c, src, dst) for c in scores])
    top2 = np.sort(reference, axis=0)[-2:]
    decided = (top2[1] - top2[0] > 1e-4) | (top2[1] == top2[0])  # float32 coordinates may swap near-ties
    labels = argmax_resample(scores, src, dst, slab=6)
    assert decided.mean() > 0.95
    np.testing.assert_array_equal(labels[decided], reference.argmax(axis=0)[decided])


def test_sample_points_matches_scipy():
    from scipy import ndimage

    rng = np.random.default_rng(4)
    values = rng.normal(size=(3, 5, 6, 7)).astype(np.float32)
    points = rng.uniform(0, 1, size=(200, 3)) * (np.array([5, 6, 7]) - 1)
    points[:3] = [[0, 0, 0], [4, 5, 6], [4, 0, 6]]  # corners, including the far edges
    expected = np.stack([ndimage.map_coordinates(v, points.T, order=1) for v in values])
    np.testing.assert_allclose(sample_points(values, points), expected, atol=1e-5)
    flat = np.ones((1, 4, 1, 3), np.float32)  # a single-voxel axis
    np.testing.assert_allclose(sample_points(flat, np.array([[1.5, 0.0, 2.0]])), [[1.0]])


def test_strided_grid_puts_tokens_at_block_centres():
    grid = Grid((16, 16, 16), np.diag([1.5, 1.5, 1.5, 1.0]))
    tokens = strided_grid(grid, 4, (4, 4, 4))
    # Token (1, 0, 2) summarises voxels 4..7, 0..3, 8..11: centres 5.5, 1.5, 9.5 voxels.
    np.testing.assert_allclose(tokens.affine @ [1, 0, 2, 1], grid.affine @ [5.5, 1.5, 9.5, 1])
    np.testing.assert_allclose(world_to_index(tokens, grid.affine[:3, :3] @ [5.5, 1.5, 9.5]), [1, 0, 2])


def test_same_grid_tolerance():
    a = Grid((3, 3, 3), np.eye(4))
    shifted = np.eye(4)
    shifted[1, 3] = 1e-3
    assert same_grid(a, Grid((3, 3, 3), np.eye(4) + 1e-6))
    assert not same_grid(a, Grid((3, 3, 3), shifted)) and not same_grid(a, Grid((3, 3, 4), np.eye(4)))
