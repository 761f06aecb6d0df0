"""Overlay and few-shot math against references and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from S2DCCore.inference.few_shot import fit_linear, knn_scores, linear_scores, standardize
from S2DCCore.inference.overlays import (cosine_similarity, kmeans, pca_components, robust_range, scale_to_uint8,
                                         squared_distances)


def test_pca_matches_the_svd_up_to_a_fixed_sign():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)) @ np.diag([5.0, 3.0, 2.0, 0.5, 0.2, 0.1]) @ np.linalg.qr(rng.normal(size=(6, 6)))[0]
    mean, axes = pca_components(x, 3)
    _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    np.testing.assert_allclose(mean, x.mean(0))
    np.testing.assert_allclose(np.abs(np.sum(axes * vt[:3], axis=1)), 1.0, atol=1e-8)
    assert np.all(axes[np.arange(3), np.abs(axes).argmax(1)] > 0)
    _, flipped = pca_components(-x, 3)  # the sign rule makes the result independent of the data's sign
    np.testing.assert_allclose(flipped, axes, atol=1e-8)


def test_kmeans_finds_separated_blobs_and_is_seeded():
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    truth = rng.integers(0, 3, 300)
    x = centres[truth] + rng.normal(scale=0.5, size=(300, 2))
    found, labels = kmeans(x, 3, seed=4)
    # Same partition up to renaming the clusters.
    assert len({(a, b) for a, b in zip(truth, labels)}) == 3
    np.testing.assert_allclose(sorted(map(tuple, np.round(found))), sorted(map(tuple, centres)), atol=0.5)
    np.testing.assert_array_equal(kmeans(x, 3, seed=4)[1], labels)
    with pytest.raises(ValueError):
        kmeans(x[:2], 3)


def test_small_formulas_by_hand():
    np.testing.assert_allclose(squared_distances(np.array([[0.0, 0.0], [3.0, 4.0]]), np.array([[0.0, 0.0]])),
                               [[0.0], [25.0]])
    np.testing.assert_allclose(cosine_similarity(np.array([[1.0, 0.0], [1.0, 1.0], [-2.0, 0.0]]), np.array([3.0, 0.0])),
                               [1.0, np.sqrt(0.5), -1.0], atol=1e-6)
    values = np.array([[0.0, 10.0], [5.0, 20.0], [10.0, 30.0]])
    low, high = robust_range(values, (0.0, 100.0))
    np.testing.assert_array_equal(scale_to_uint8(values, low, high), [[0, 0], [128, 128], [255, 255]])


def test_knn_scores_are_minus_the_mean_distance_to_each_class():
    samples = np.array([[0.0], [1.0], [10.0], [12.0]], dtype=np.float32)
    classes = np.array([0, 0, 1, 1])
    scores = knn_scores(samples, classes, np.array([[2.0]], dtype=np.float32), 2, k=2)
    np.testing.assert_allclose(scores, [[-(2 + 1) / 2, -(8 + 10) / 2]])


def test_standardize_weights_groups_equally():
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(5, 3, size=(1000, 4)), rng.normal(-1, 0.1, size=(1000, 1))], axis=1)
    shift, scale = standardize(x, [slice(0, 4), slice(4, 5)])
    z = (x - shift) / scale
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose((z[:, :4] ** 2).sum(1).mean(), (z[:, 4:] ** 2).sum(1).mean(), rtol=1e-3)


def test_linear_probe_separates_separable_classes():
    rng = np.random.default_rng(3)
    samples = np.concatenate([rng.normal(-2, 0.3, size=(20, 3)), rng.normal(2, 0.3, size=(20, 3))]).astype(np.float32)
    classes = np.repeat([0, 1], 20)
    weights, bias = fit_linear(samples, classes, 2)
    queries = np.array([[-2.0, -2.0, -2.0], [2.0, 2.0, 2.0]], dtype=np.float32)
    np.testing.assert_array_equal(linear_scores(weights, bias, queries).argmax(1), [0, 1])
