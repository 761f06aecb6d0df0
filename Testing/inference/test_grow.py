"""Structure-aware growing: the geodesic competition, the seed folds, the refinement fit, and `propagate`."""

from __future__ import annotations

import numpy as np
import pytest

from S2DCCore.inference import grow
from S2DCCore.inference.geodesic import geodesic_labels, grid_graph


def _line(values):
    return np.asarray(values, dtype=np.float32).reshape(1, 1, 1, -1)


def test_geodesic_splits_at_the_intensity_edge_not_halfway():
    # Seeds at both ends; the edge lies between voxels 3 and 4, so voxel 4 (Euclidean-closer to seed 0)
    # belongs to seed 1 as Grow from seeds would have it.
    features = _line([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    labels = geodesic_labels(grid_graph(features), (1, 1, 10), np.array([0, 9]), np.array([0, 1]))
    assert labels.ravel().tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]


def test_a_class_score_channel_makes_an_edge_where_the_image_has_none():
    intensity = np.zeros(10)
    score = np.r_[np.zeros(7), np.ones(3)]
    features = np.stack([intensity, score]).reshape(2, 1, 1, 10).astype(np.float32)
    labels = geodesic_labels(grid_graph(features), (1, 1, 10), np.array([0, 9]), np.array([0, 1]))
    assert labels.ravel().tolist() == [0] * 7 + [1] * 3


def test_seed_folds_split_strokes_and_keep_single_strokes_in_both():
    shape = (1, 6, 10)
    nodes, classes = [], []
    for j in (1, 2, 3):  # class 0: one stroke of three voxels
        nodes.append(np.ravel_multi_index((0, 1, j), shape))
        classes.append(0)
    for j in (0, 8):  # class 1: two separate one-voxel strokes
        nodes.append(np.ravel_multi_index((0, 4, j), shape))
        classes.append(1)
    folds = grow.seed_folds(np.array(nodes), np.array(classes), shape)
    assert folds[:3].tolist() == [-1, -1, -1]
    assert sorted(folds[3:].tolist()) == [0, 1]


@pytest.mark.parametrize("informative", ["geodesic", "intensity"])
def test_refinement_trusts_whichever_source_separates_the_seeds(informative):
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 40)
    truth = np.eye(3, dtype=np.float32)[y]
    noise = np.eye(3, dtype=np.float32)[rng.integers(0, 3, len(y))]
    fine_good = np.stack([y + 0.1 * rng.standard_normal(len(y)), (y == 1) + 0.1 * rng.standard_normal(len(y))], 1)
    fine_bad = rng.standard_normal((len(y), 2))
    if informative == "geodesic":
        beta, _, _ = grow.fit_refinement(truth, fine_bad.astype(np.float32), y, 3)
        assert beta > 1.0
    else:
        beta, w, b = grow.fit_refinement(noise, fine_good.astype(np.float32), y, 3)
        assert beta < 0.3
        assert ((fine_good @ w + b).argmax(1) == y).mean() > 0.9


def test_work_grid_caps_the_node_count():
    from S2DCCore.inference.geometry import Grid

    grid = Grid((200, 200, 200), np.diag([2.0, 2.0, 2.0, 1.0]))
    work, stride = grow.work_grid(grid)
    assert stride == 2 and work.shape == (100, 100, 100) and np.prod(work.shape) <= grow.MAX_WORK_NODES
    np.testing.assert_allclose(work.spacing, (4.0, 4.0, 4.0))
