"""The guided filter: against a direct window-by-window reference, its two limits (flat guide: a box
mean; an edge of the guide: kept), patches against the whole volume, and bad arguments."""

from __future__ import annotations

import numpy as np
import pytest

from S2DCCore.inference.guided_filter import box_mean, guided_filter
from S2DCCore.inference.grow import patch_points


def _window_mean(volume: np.ndarray, r: int) -> np.ndarray:
    """Mean of every (2r+1)³ window, border voxels replicated, by summing shifted copies."""
    padded = np.pad(volume.astype(np.float64), r, mode="edge")
    total = np.zeros(volume.shape)
    n = volume.shape
    for i in range(2 * r + 1):
        for j in range(2 * r + 1):
            for k in range(2 * r + 1):
                total += padded[i:i + n[0], j:j + n[1], k:k + n[2]]
    return total / (2 * r + 1) ** 3


def _reference(p: np.ndarray, guide: np.ndarray, r: int, eps: float) -> np.ndarray:
    """He et al.'s Algorithm 1, written out in float64."""
    mean_i, mean_p = _window_mean(guide, r), _window_mean(p, r)
    cov = _window_mean(guide * p, r) - mean_i * mean_p
    var = _window_mean(guide * guide, r) - mean_i**2
    a = cov / (var + eps)
    b = mean_p - a * mean_i
    return _window_mean(a, r) * guide + _window_mean(b, r)


def test_box_mean_matches_summed_windows():
    volume = np.random.default_rng(0).random((7, 9, 8)).astype(np.float32)
    np.testing.assert_allclose(box_mean(volume, 2), _window_mean(volume, 2), atol=1e-5)


@pytest.mark.parametrize("radius,eps", [(1, 1e-3), (2, 1e-2)])
def test_guided_filter_matches_the_reference(radius, eps):
    rng = np.random.default_rng(1)
    guide = rng.random((10, 11, 9)).astype(np.float32)
    channels = rng.random((3, 10, 11, 9)).astype(np.float32)
    out = guided_filter(channels, guide, radius, eps)
    for c in range(3):
        np.testing.assert_allclose(out[c], _reference(channels[c], guide, radius, eps), atol=2e-4)


def test_a_flat_guide_gives_the_box_mean_of_the_box_mean():
    # var(I) = 0 and cov(I, p) = 0 everywhere: a = 0, b = mean(p), q = mean(mean(p)).
    p = np.zeros((1, 9, 9, 9), np.float32)
    p[0, 4, 4, 4] = 1.0  # one isolated voxel of a class
    out = guided_filter(p, np.full((9, 9, 9), 0.5, np.float32), 1, 1e-2)
    assert out[0, 4, 4, 4] == pytest.approx(27 / 27**2, abs=1e-6)  # 27 windows of 27 voxels see it once each
    assert out[0, 0, 0, 0] == pytest.approx(0.0, abs=1e-7)


def test_an_edge_of_the_guide_is_kept_where_a_box_mean_blurs_it():
    guide = np.zeros((12, 12, 12), np.float32)
    guide[:, 6:] = 1.0
    p = guide[None].copy()  # the class is exactly the bright half
    filtered = guided_filter(p, guide, 2, 1e-3)[0]
    assert np.abs(filtered - p[0]).max() < 0.01
    assert np.abs(box_mean(p[0], 2) - p[0]).max() > 0.3


def test_the_centre_of_a_patch_is_the_whole_volume_value():
    rng = np.random.default_rng(2)
    guide = rng.random((15, 14, 13)).astype(np.float32)
    channels = rng.random((2, 15, 14, 13)).astype(np.float32)
    whole = guided_filter(channels, guide, 2, 1e-2)
    centres = np.array([[7, 7, 6], [4, 5, 4], [10, 9, 8]])  # ≥ 2r from every border
    points = patch_points(centres, 2, guide.shape)  # (3, 9, 9, 9, 3)
    assert points.shape == (3, 9, 9, 9, 3)
    at = (points[..., 0], points[..., 1], points[..., 2])
    patches = guided_filter(channels[:, at[0], at[1], at[2]], guide[at], 2, 1e-2)
    np.testing.assert_allclose(patches[:, :, 4, 4, 4], whole[:, centres[:, 0], centres[:, 1], centres[:, 2]], atol=1e-5)
    # Nearer the border the patch is clamped, an approximation (the volume replicates its border values
    # before the second box mean, the patch after the first).
    edge = patch_points(np.array([[0, 0, 0]]), 2, guide.shape)
    assert edge.min() == 0 and edge[0, 4, 4, 4].tolist() == [0, 0, 0]


def test_bad_arguments_are_refused():
    guide = np.zeros((5, 5, 5), np.float32)
    with pytest.raises(ValueError, match="must be"):
        guided_filter(np.zeros((2, 5, 5, 4), np.float32), guide, 1, 1e-2)
    with pytest.raises(ValueError, match="radius"):
        guided_filter(np.zeros((2, 5, 5, 5), np.float32), guide, 0, 1e-2)
    with pytest.raises(ValueError, match="radius"):
        guided_filter(np.zeros((2, 5, 5, 5), np.float32), guide, 1, 0.0)


def test_in_place_filtering_gives_the_same_result():
    rng = np.random.default_rng(3)
    guide = rng.random((8, 9, 10)).astype(np.float32)
    channels = rng.random((4, 8, 9, 10)).astype(np.float32)
    expected = guided_filter(channels, guide, 1, 1e-2)
    returned = guided_filter(channels, guide, 1, 1e-2, inplace=True)
    assert returned is channels
    np.testing.assert_array_equal(channels, expected)
    with pytest.raises(ValueError, match="inplace"):
        guided_filter(channels.astype(np.float64), guide, 1, 1e-2, inplace=True)
