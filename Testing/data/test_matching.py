"""Anatomy matching for Alice: crops, point draws, the embedding matcher on a known shift, the phantom oracle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from S2DCCore.config import PreprocessConfig
from S2DCCore.data.views.alice import make_alice_pair
from S2DCCore.data.cohort import load_cohort
from S2DCCore.data.views.matching import (EmbeddingMatcher, SelfMatcher, crop_at, dense_embeddings, draw_match,
                                    sample_query_point)
from S2DCCore.data.phantoms.matching import PhantomOracle
from S2DCCore.data.phantoms import PhantomConfig, write_phantom_cohort
from S2DCCore.data.regions import VolumeStore
from S2DCCore.data.transforms import preprocess_transforms
from S2DCCore.errors import DataError

PREPROCESS = PreprocessConfig(spacing=None, ct_window=(-1000.0, 1000.0))  # the pretraining default


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = write_phantom_cohort(tmp_path_factory.mktemp("ph") / "ph", cases=3, seed=3, config=PhantomConfig(size=48))
    cases = load_cohort(root).cases
    store = VolumeStore(cases, PREPROCESS)
    both = preprocess_transforms(PREPROCESS, keys=("image", "label"))
    labels = [np.asarray(both({"image": c.image, "label": c.label})["label"][0]) for c in cases]
    return root, store, labels


def test_crop_at_centres_the_point_and_pads_with_zeros():
    volume = torch.arange(6 * 5 * 4, dtype=torch.float32).reshape(1, 6, 5, 4)
    crop = crop_at(volume, (3, 2, 1), (4, 4, 4))
    assert crop[0, 2, 2, 2] == volume[0, 3, 2, 1]  # the point sits at roi // 2
    torch.testing.assert_close(crop[0, :, :, 1:], volume[0, 1:5, 0:4, 0:3])
    assert torch.all(crop[0, :, :, 0] == 0)  # z index −1 lies outside
    assert torch.all(crop_at(volume, (50, 50, 50), (4, 4, 4)) == 0)


def test_query_points_respect_threshold_and_margin():
    volume = torch.zeros(1, 30, 30, 30)
    volume[0, 12:15, 5:25, 10:20] = 1.0
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = sample_query_point(volume, rng, margin=6)
        assert volume[0, p[0], p[1], p[2]] > 0 and np.all(p >= 6) and np.all(p < 24)


class _ConvEncoder:
    """A fixed random convolution + tanh, average-pooled to each stage's stride: shift-equivariant by whole tokens."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.kernel = torch.randn(32, 1, 3, 3, 3)

    def __call__(self, x):
        y = torch.tanh(F.conv3d(x, self.kernel, padding=1))
        return [F.avg_pool3d(y, 2 ** (s + 1)) for s in range(5)]


def test_embedding_matcher_recovers_a_known_shift():
    torch.manual_seed(1)
    a = F.interpolate(torch.randn(1, 1, 16, 16, 16), scale_factor=4, mode="trilinear")[0]  # (1, 64, 64, 64)
    shift = np.array([16, 32, 0])  # whole tokens of both stages (strides 8 and 16)
    b = torch.roll(a, shifts=tuple(shift), dims=(1, 2, 3))
    encoder = _ConvEncoder()
    emb, stride = dense_embeddings(encoder, a, (2, 3), (64, 64, 64))
    assert stride == 8 and emb.shape == (64, 8, 8, 8)
    torch.testing.assert_close(emb.norm(dim=0), torch.ones(8, 8, 8))  # dot products are mean cosines
    match = EmbeddingMatcher(encoder, (2, 3), (64, 64, 64), cache_size=2).pair(0, a, 1, b)
    for point in ([20, 20, 28], [28, 12, 36], [20, 36, 20], [12, 12, 12], [40, 40, 40]):
        found, score = match(np.array(point))
        assert score > 0.95
        np.testing.assert_array_equal(found // stride, ((np.array(point) + shift) % 64) // stride)


def test_draw_match_retries_until_the_threshold_and_keeps_the_best():
    volume = torch.ones(1, 8, 8, 8)
    scores = iter([0.2, 0.6, 0.9, 0.1])
    _, _, score, draws = draw_match(lambda p: (p, next(scores)), volume, np.random.default_rng(0), threshold=0.7,
                                    tries=10, margin=1)
    assert (score, draws) == (0.9, 3)
    scores = iter([0.2, 0.6, 0.1])
    _, _, score, draws = draw_match(lambda p: (p, next(scores)), volume, np.random.default_rng(0), threshold=0.7,
                                    tries=3, margin=1)
    assert (score, draws) == (0.6, 3)


def test_oracle_is_exact_and_lands_in_the_same_structure(phantoms):
    root, store, labels = phantoms
    oracle = PhantomOracle(root, store.cases, store.transform)
    points = np.array([[10.0, 20.0, 30.0], [24.5, 7.0, 40.0]])
    np.testing.assert_allclose(oracle.map_points(0, points, 0), points, atol=1e-5)
    np.testing.assert_allclose(oracle.map_points(1, oracle.map_points(0, points, 1), 0), points, atol=1e-4)
    rng = np.random.default_rng(0)
    same = chance = total = 0
    for q, k in ((0, 1), (1, 2), (2, 0)):
        match = oracle.pair(q, store[q], k, store[k])
        for _ in range(40):
            p = sample_query_point(store[q], rng, margin=4)
            found, score = match(p)
            if score < 1:
                continue
            total += 1
            same += labels[q][tuple(p)] == labels[k][tuple(found)]
            chance += labels[q][tuple(p)] == labels[k][tuple(sample_query_point(store[k], rng, margin=4))]
    # Measured: 0.73 with the oracle vs 0.29 for a random body voxel (organ jitter keeps it below 1).
    assert total > 100 and same / total > 0.6 and same / total > chance / total + 0.25


def test_oracle_refuses_a_cohort_without_generator_block(tmp_path, phantoms):
    root, store, _ = phantoms
    manifest = json.loads((root / "dataset.json").read_text())
    manifest.pop("s2dc")
    (tmp_path / "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="phantom cohort"):
        PhantomOracle(tmp_path, store.cases, store.transform)


def test_alice_pair_crops_masks_and_teacher_views(phantoms):
    root, store, _ = phantoms
    oracle = PhantomOracle(root, store.cases, store.transform)
    rng = np.random.default_rng(2)
    roi = (64, 32, 32)
    pair = make_alice_pair(store, rng, oracle, roi=roi, margin=4, augment=False)
    assert pair.query_index != pair.key_index and pair.score == 1.0
    assert pair.query.shape == (1, *roi) and torch.equal(pair.teacher_query, pair.query)
    q = pair.query_point
    assert pair.query[0, 32, 16, 16] == store[pair.query_index][0, q[0], q[1], q[2]]
    assert pair.mask_query.shape == (4, 2) and pair.mask_query.sum() == 6
    augmented = make_alice_pair(store, rng, oracle, roi=roi, margin=4, rotate_degrees=15.0, noise_std=0.1)
    assert augmented.teacher_key.shape == (1, *roi) and not torch.equal(augmented.teacher_key, augmented.key)
    assert all(abs(a) <= 15.0 for a in augmented.angles)
    itself = make_alice_pair(store, rng, SelfMatcher(), roi=roi, margin=4, augment=False)
    assert itself.query_index == itself.key_index and torch.equal(itself.query, itself.key)
