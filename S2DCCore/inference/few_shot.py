"""Few-shot voxel classifiers on frozen embeddings: class-wise k-NN distance and a linear (softmax) probe.

Both turn a handful of labelled feature vectors into per-class **scores** for every location (higher is
more likely), continuous so they can be interpolated between grids before the argmax.
"""

from __future__ import annotations

import numpy as np

# Neighbours averaged per class by the k-NN scorer (fewer when a class has fewer samples).
KNN_NEIGHBOURS = 3
# L2 penalty of the linear probe on standardised features; with ~20 samples per class the probe
# otherwise separates them perfectly with huge weights and extrapolates wildly.
LINEAR_L2 = 1e-2
LINEAR_ITERATIONS = 100
# Rows scored at once, at most: the (rows, samples) distance matrix stays under 2^26 floats (256 MB).
SCORE_CHUNK = 65_536
DISTANCE_BUDGET = 2**26


def standardize(features: np.ndarray, groups: list[slice] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-column (shift, scale) so columns have zero mean and unit variance, and each group of columns
    contributes the same expected squared distance (a group of ``n`` columns is divided by ``√n`` more).

    Args:
        features: (N, D) features of all locations.
        groups: column groups (e.g. embedding, intensity, coordinates); None = one group.

    Returns:
        (shift (D,), scale (D,)); apply as ``(x - shift) / scale``.
    """
    x = np.asarray(features, dtype=np.float64)
    shift = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-8] = 1.0
    for group in groups or [slice(0, x.shape[1])]:
        width = len(range(*group.indices(x.shape[1])))
        scale[group] *= np.sqrt(max(width, 1))
    return shift.astype(np.float32), scale.astype(np.float32)


def knn_scores(samples: np.ndarray, sample_classes: np.ndarray, queries: np.ndarray, n_classes: int,
               k: int = KNN_NEIGHBOURS) -> np.ndarray:
    """Scores = minus the mean distance to the ``k`` nearest samples of each class.

    Args:
        samples: (S, D) labelled features.
        sample_classes: (S,) class indices 0..n_classes−1 (every class present).
        queries: (N, D) features to score.
        n_classes: number of classes.
        k: neighbours per class.

    Returns:
        (N, n_classes) float32 scores.
    """
    scores = np.empty((len(queries), n_classes), dtype=np.float32)
    chunk = max(1, min(SCORE_CHUNK, DISTANCE_BUDGET // max(len(samples), 1)))
    for start in range(0, len(queries), chunk):
        q = queries[start:start + chunk]
        d2 = (q * q).sum(1)[:, None] - 2.0 * q @ samples.T + (samples * samples).sum(1)[None, :]
        distance = np.sqrt(np.maximum(d2, 0.0))  # (n, S)
        for c in range(n_classes):
            own = distance[:, sample_classes == c]
            kk = min(k, own.shape[1])
            nearest = np.partition(own, kk - 1, axis=1)[:, :kk]
            scores[start:start + len(q), c] = -nearest.mean(axis=1)
    return scores


def fit_linear(samples: np.ndarray, sample_classes: np.ndarray, n_classes: int, *, l2: float = LINEAR_L2,
               iterations: int = LINEAR_ITERATIONS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression with class-balanced weights and an L2 penalty (L-BFGS, torch).

    Returns:
        (weights (D, n_classes), bias (n_classes,)) float32; scores are ``x @ weights + bias``.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(samples, dtype=torch.float32)
    y = torch.as_tensor(sample_classes, dtype=torch.long)
    counts = torch.bincount(y, minlength=n_classes).clamp(min=1).float()
    class_weight = counts.sum() / (n_classes * counts)  # balanced: each class counts equally
    weights = (0.01 * torch.randn(x.shape[1], n_classes, generator=generator)).requires_grad_()
    bias = torch.zeros(n_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights, bias], max_iter=iterations, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weights + bias, y, weight=class_weight)
        loss = loss + l2 * (weights**2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weights.detach().numpy(), bias.detach().numpy()


def linear_scores(weights: np.ndarray, bias: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """(N, n_classes) float32 logits."""
    return (queries @ weights + bias).astype(np.float32)
