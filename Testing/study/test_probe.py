"""The linear probe: exact agreement of low-resolution prediction with classifying interpolated features,
a separable case fitted perfectly, class-balanced sampling, and the intensity-only features."""

import numpy as np
import pytest
import torch

from S2DCCore.config import PreprocessConfig
from S2DCCore.geometry import Grid, strided_grid
from S2DCCore.io.image import Image
from S2DCCore.study import probe
from testdata import make_affine


def _maps(seed=0, shape=(10, 12, 8), kind="oblique"):
    rng = np.random.default_rng(seed)
    grid = Grid(shape, make_affine(kind))
    fine = strided_grid(grid, 2, tuple(-(-n // 2) for n in shape))
    coarse = strided_grid(grid, 4, tuple(-(-n // 4) for n in shape))
    maps = [rng.normal(size=(3,) + fine.shape).astype(np.float32),
            rng.normal(size=(5,) + coarse.shape).astype(np.float32)]
    return probe.FeatureMaps(maps, [fine, coarse], grid)


def test_predict_equals_classifying_interpolated_features():
    maps = _maps()
    rng = np.random.default_rng(1)
    fitted = probe.LinearProbe(weights=[rng.normal(size=(4, 3)).astype(np.float32),
                                        rng.normal(size=(4, 5)).astype(np.float32)], bias=rng.normal(size=4))
    voxels = np.argwhere(np.ones(maps.input_grid.shape, dtype=bool))  # every voxel, C order
    x = probe.features_at(maps, voxels)  # (M, 8) upsampled features
    logits = x @ np.concatenate(fitted.weights, axis=1).T + fitted.bias
    expected = logits.argmax(1).reshape(maps.input_grid.shape)
    got = probe.predict(fitted, maps)
    # Float32 interpolation rounding can flip a near-tie; there are none at this scale.
    assert (got == expected).mean() == 1.0


def test_features_at_reads_token_centres_exactly():
    grid = Grid((8, 8, 8), make_affine("ras"))
    coarse = strided_grid(grid, 4, (2, 2, 2))
    values = np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2)
    maps = probe.FeatureMaps([values], [coarse], grid)
    # Token (1, 0, 1) summarises voxels 4..7, 0..3, 4..7: its centre is voxel (5.5, 1.5, 5.5); voxels 0 and 7
    # lie beyond the first and last centres and are clamped (edge values).
    got = probe.features_at(maps, np.array([[0, 0, 0], [7, 0, 7], [5.5, 1.5, 5.5], [3.5, 1.5, 1.5]]))
    np.testing.assert_allclose(got[:, 0], [0.0, 5.0, 5.0, 2.0], atol=1e-5)


def test_fit_probe_separates_a_separable_problem_and_folds_standardisation():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 50)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = centres[y] * 100.0 + 1000.0 + rng.normal(size=(150, 2))  # far from unit scale: standardisation matters
    x = np.concatenate([x, rng.normal(size=(150, 1))], axis=1)
    fitted = probe.fit_probe(x, y, 3, channels=[2, 1])
    assert [w.shape for w in fitted.weights] == [(3, 2), (3, 1)]
    logits = x @ np.concatenate(fitted.weights, axis=1).T + fitted.bias
    assert (logits.argmax(1) == y).all()


def test_a_class_absent_from_training_is_never_predicted():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 2], 40)
    x = rng.normal(size=(80, 4)) + y[:, None]
    fitted = probe.fit_probe(x, y, 3, channels=[4])
    logits = rng.normal(size=(500, 4)) * 10 @ fitted.weights[0].T + fitted.bias
    assert 1 not in set(logits.argmax(1))


def test_sample_voxels_balances_classes_across_cases():
    a = np.zeros((6, 6, 6), dtype=np.int64)
    a[:2] = 1  # 72 voxels of class 1 in case a
    b = np.zeros((6, 6, 6), dtype=np.int64)
    b[:1, :2] = 2  # 12 voxels of class 2 in case b
    picks = probe.sample_voxels([a, b], 4, per_class=20, rng=np.random.default_rng(0))
    rows = np.concatenate(picks)
    counts = np.bincount(rows[:, 3], minlength=4)
    assert counts.tolist() == [20, 20, 12, 0]
    for case, lab in zip(picks, (a, b)):  # every pick carries its voxel's own label
        assert (lab[case[:, 0], case[:, 1], case[:, 2]] == case[:, 3]).all()
    again = probe.sample_voxels([a, b], 4, per_class=20, rng=np.random.default_rng(0))
    assert all((p == q).all() for p, q in zip(picks, again))


def test_intensity_features_are_the_normalised_volume_and_its_blurs():
    rng = np.random.default_rng(0)
    array = rng.normal(100.0, 20.0, size=(12, 10, 8)).astype(np.float32)
    image = Image(array, make_affine("ras"))
    pre = PreprocessConfig(preset="mr", spacing=None)
    maps = probe.intensity_features(image, pre, sigmas=(1.0, 2.0))
    assert maps.channels == [3]
    first = maps.maps[0][0]
    np.testing.assert_allclose(first, (array - array.mean()) / array.std(), atol=1e-4)
    assert maps.maps[0][2].std() < maps.maps[0][1].std() < first.std()


def test_encoder_features_have_one_map_per_stage_on_strided_grids():
    from S2DCCore.models.encoders import EncoderConfig, build_encoder

    torch.manual_seed(0)
    encoder = build_encoder(EncoderConfig(feature_size=12, window_size=4)).eval().requires_grad_(False)
    image = Image(np.random.default_rng(0).normal(size=(40, 36, 20)).astype(np.float32), make_affine("lps"))
    maps = probe.encoder_features(image, encoder.forward_features, PreprocessConfig(preset="mr", spacing=None),
                                  stages=(0, 2))
    assert maps.channels == [12, 48]
    assert [m.shape[1:] for m in maps.maps] == [(20, 18, 10), (5, 5, 3)]
    assert maps.input_grid.shape == (40, 36, 20)
