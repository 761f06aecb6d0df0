"""Linear probe: per-voxel multinomial logistic regression on frozen multi-scale encoder features.

It isolates representation quality from fine-tuning: the encoder is frozen, every stage's feature map
is interpolated (trilinearly) to the voxel, and one linear classifier is fitted on a few hundred voxels
per class of the K labelled cases. Prediction never materialises the upsampled features: interpolation
is linear, so the classifier is applied on each stage's own grid and only the K class scores are
interpolated to the input grid and summed,

    logits(v) = b + Σ_s interp_s(W_s · f_s)(v) = b + Σ_s W_s · interp_s(f_s)(v),

the same numbers as classifying interpolated features (tested). Training samples use the same
interpolation (`S2DCCore.geometry.sample_points`), so training and prediction agree exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from S2DCCore.config import PreprocessConfig
from S2DCCore.geometry import Grid, index_map, resample_channels, sample_points
from S2DCCore.inference.model_input import prepare_input
from S2DCCore.io.image import Image


@dataclass
class FeatureMaps:
    """Feature maps of one image on their own grids, and the input grid they are read back onto.

    Attributes:
        maps: per stage, (C_s, X_s, Y_s, Z_s) float32.
        grids: per stage, the grid of ``maps[s]`` (same physical space as the input).
        input_grid: the image's own grid (labels and predictions live here).
    """

    maps: list[np.ndarray]
    grids: list[Grid]
    input_grid: Grid

    @property
    def channels(self) -> list[int]:
        return [m.shape[0] for m in self.maps]


@dataclass
class LinearProbe:
    """A fitted classifier: ``weights[s]`` (K, C_s) per stage and ``bias`` (K,), on raw features."""

    weights: list[np.ndarray]
    bias: np.ndarray


def encoder_features(image: Image, encoder: Callable, preprocess: PreprocessConfig, *, stages: Sequence[int],
                     patch_size: int = 2, multiple: int = 32, device=None) -> FeatureMaps:
    """Frozen-encoder features of ``image`` at ``stages``, from one pass over the whole model grid.

    The volume is zero-padded at its far end to a multiple of ``multiple`` (the deepest stride), so token
    ``t`` of stage ``s`` summarises model voxels ``t·stride .. (t+1)·stride − 1`` and its grid is
    `strided_grid`. One pass (no sliding windows) gives every stage at once and no seams; the study's
    volumes are small (a 128³ pass of the tiny encoder takes about a second and 1 GB on a CPU).
    """
    import torch

    from S2DCCore.geometry import strided_grid

    prepared = prepare_input(image, preprocess, preprocess.spacing, preprocess.orientation)
    volume = prepared.volume
    padded = [-(-n // multiple) * multiple for n in volume.shape]
    volume = np.pad(volume, [(0, p - n) for p, n in zip(padded, volume.shape)])
    with torch.no_grad():
        outputs = encoder(torch.from_numpy(volume)[None, None].to(device))  # per stage (1, C_s, X_s, Y_s, Z_s)
    maps, grids = [], []
    for stage in stages:
        stride = patch_size * 2**stage
        shape = tuple(-(-n // stride) for n in prepared.model_grid.shape)
        features = outputs[stage][0, :, : shape[0], : shape[1], : shape[2]].float().cpu().numpy()
        maps.append(np.ascontiguousarray(features))
        grids.append(strided_grid(prepared.model_grid, stride, shape))
    return FeatureMaps(maps, grids, prepared.grid)


def intensity_features(image: Image, preprocess: PreprocessConfig, sigmas: Sequence[float] = (1.0, 2.0, 4.0)
                       ) -> FeatureMaps:
    """The intensity-only floor's features: the normalised intensity and its Gaussian blurs (σ in voxels)."""
    from scipy.ndimage import gaussian_filter

    prepared = prepare_input(image, preprocess, preprocess.spacing, preprocess.orientation)
    volume = prepared.volume
    stack = np.stack([volume] + [gaussian_filter(volume, s) for s in sigmas]).astype(np.float32)
    return FeatureMaps([stack], [prepared.model_grid], prepared.grid)


def sample_voxels(labels: Sequence[np.ndarray], n_classes: int, per_class: int, rng: np.random.Generator
                  ) -> list[np.ndarray]:
    """Up to ``per_class`` voxels of each class, drawn uniformly from all cases together.

    Returns:
        per case, (M_c, 4) int64 rows ``(i, j, k, class)``.
    """
    picks: list[list[np.ndarray]] = [[] for _ in labels]
    for value in range(n_classes):
        where = [np.argwhere(lab == value) for lab in labels]
        counts = np.array([len(w) for w in where])
        total = int(counts.sum())
        if total == 0:
            continue
        chosen = np.sort(rng.choice(total, size=min(per_class, total), replace=False))
        case_of = np.searchsorted(np.cumsum(counts), chosen, side="right")
        offsets = chosen - np.concatenate([[0], np.cumsum(counts)])[case_of]
        for case in np.unique(case_of):
            rows = where[case][offsets[case_of == case]]
            picks[case].append(np.column_stack([rows, np.full(len(rows), value)]))
    return [np.concatenate(p) if p else np.zeros((0, 4), dtype=np.int64) for p in picks]


def features_at(maps: FeatureMaps, voxels: np.ndarray) -> np.ndarray:
    """Every stage's features interpolated at input voxels (M, 3): (M, ΣC_s) float32."""
    parts = []
    for fmap, grid in zip(maps.maps, maps.grids):
        mapping = index_map(grid, maps.input_grid)
        points = voxels @ mapping[:3, :3].T + mapping[:3, 3]
        points = np.clip(points, 0.0, np.asarray(fmap.shape[1:], dtype=np.float64) - 1.0)
        parts.append(sample_points(fmap, points).T)  # (M, C_s)
    return np.concatenate(parts, axis=1)


def fit_probe(x: np.ndarray, y: np.ndarray, n_classes: int, channels: Sequence[int], *, l2: float = 1e-3,
              iterations: int = 100) -> LinearProbe:
    """Class-balanced multinomial logistic regression on standardised features
    (`S2DCCore.inference.few_shot.fit_linear`, the classifier ``s2dc propagate`` uses).

    Args:
        x: (M, C) features; y: (M,) classes in ``0..n_classes-1``.
        channels: C_s per stage (their sum is C), to split the weights back per stage.
        l2: weight penalty on the standardised features (mean loss over samples + l2·‖W‖²).

    Returns:
        the probe on *raw* features (standardisation folded into the weights and bias). A class absent
        from ``y`` gets a bias far below the others, so it is never predicted.
    """
    from S2DCCore.inference.few_shot import fit_linear

    x = np.asarray(x, dtype=np.float64)
    mean, std = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6)
    weights, bias = fit_linear(((x - mean) / std).astype(np.float32), y, n_classes, l2=l2, iterations=iterations)
    w = weights.T.astype(np.float64) / std  # (K, C) on raw features
    b = bias.astype(np.float64) - w @ mean
    b[np.bincount(y, minlength=n_classes) == 0] = -1e9
    splits = np.cumsum(channels)[:-1]
    return LinearProbe(weights=np.split(w.astype(np.float32), splits, axis=1), bias=b)


def predict(probe: LinearProbe, maps: FeatureMaps) -> np.ndarray:
    """Class of every input voxel: each stage's scores on its grid, interpolated to the input and summed."""
    scores = np.zeros((len(probe.bias),) + tuple(maps.input_grid.shape), dtype=np.float64)
    for w, fmap, grid in zip(probe.weights, maps.maps, maps.grids):
        stage_scores = np.einsum("kc,cxyz->kxyz", w, fmap, optimize=True)  # (K, X_s, Y_s, Z_s)
        scores += resample_channels(stage_scores, grid, maps.input_grid)
    scores += probe.bias[:, None, None, None]
    return scores.argmax(axis=0).astype(np.uint8 if len(probe.bias) <= 256 else np.uint16)


def probe_predictions(feature_fn: Callable, train_images: Sequence[Image], train_labels: Sequence[np.ndarray],
                      test_images: Sequence[Image], n_classes: int, *, per_class: int = 500, seed: int = 0
                      ) -> list[np.ndarray]:
    """Fit a probe on ``per_class`` voxels per class of the training images (labels as class indices) and
    return the predicted class indices of every test image (``feature_fn(image)`` → `FeatureMaps`)."""
    maps = [feature_fn(image) for image in train_images]
    picks = sample_voxels(list(train_labels), n_classes, per_class, np.random.default_rng(seed))
    x = np.concatenate([features_at(m, p[:, :3]) for m, p in zip(maps, picks)])
    y = np.concatenate([p[:, 3] for p in picks])
    fitted = fit_probe(x, y, n_classes, maps[0].channels)
    return [predict(fitted, feature_fn(image)) for image in test_images]
