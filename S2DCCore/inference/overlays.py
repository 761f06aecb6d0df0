"""The math of embedding overlays: PCA colours, k-means structures, cosine similarity (numpy, (N, C) in).

Each function takes a flat matrix of N embeddings with C channels and is deterministic (k-means is
seeded), so overlays are reproducible and testable against hand-computed cases.
"""

from __future__ import annotations

import numpy as np

# Percentiles mapped to 0 and 255 in the PCA colours: robust to a few extreme tokens.
RGB_PERCENTILES = (1.0, 99.0)
# Tokens used to fit k-means; the rest are only assigned (keeps it to about a second on a CPU).
KMEANS_FIT_TOKENS = 50_000


def pca_components(features: np.ndarray, n_components: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Principal axes of ``features`` with a deterministic sign.

    Args:
        features: (N, C) embeddings.
        n_components: how many axes (at most C).

    Returns:
        (mean (C,), axes (n_components, C)) with axes sorted by decreasing variance; each axis's
        largest-magnitude entry is positive (eigenvectors are only defined up to sign).
    """
    x = np.asarray(features, dtype=np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    covariance = centred.T @ centred / max(len(x) - 1, 1)  # (C, C)
    values, vectors = np.linalg.eigh(covariance)
    axes = vectors[:, np.argsort(values)[::-1][:n_components]].T  # (n, C)
    signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])
    return mean, axes * signs[:, None]


def scale_to_uint8(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map each column of ``values`` linearly from [low, high] to [0, 255] (clipped), as uint8.

    Works in float32 (a float64 temporary of a whole volume would be twice the size).
    """
    low, high = np.asarray(low, dtype=np.float32), np.asarray(high, dtype=np.float32)
    scale = np.float32(255.0) / np.where(high > low, high - low, np.float32(1.0))
    scaled = (np.asarray(values, dtype=np.float32) - low) * scale
    return np.clip(np.round(scaled, out=scaled), 0, 255, out=scaled).astype(np.uint8)


def robust_range(values: np.ndarray, percentiles=RGB_PERCENTILES) -> tuple[np.ndarray, np.ndarray]:
    """Per-column (low, high) percentiles of (N, D) ``values``."""
    low, high = np.percentile(values, percentiles, axis=0)
    return low, high


def kmeans(features: np.ndarray, k: int, *, seed: int = 0, iterations: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding.

    Args:
        features: (N, C) embeddings (N ≥ k).
        k: number of clusters.
        seed: seeds the initialisation and the fitting subsample.
        iterations: maximum Lloyd steps (stops earlier when assignments no longer change).

    Returns:
        (centroids (k, C) float32, labels (N,) int64 in 0..k−1).
    """
    x = np.asarray(features, dtype=np.float32)
    if k < 1 or k > len(x):
        raise ValueError(f"k must be between 1 and the number of embeddings ({len(x)}), got {k}")
    rng = np.random.default_rng(seed)
    fit = x if len(x) <= KMEANS_FIT_TOKENS else x[rng.choice(len(x), KMEANS_FIT_TOKENS, replace=False)]
    centroids = _kmeans_plus_plus(fit, k, rng)
    labels = None
    for _ in range(iterations):
        new = squared_distances(fit, centroids).argmin(axis=1)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        for c in range(k):
            members = fit[labels == c]
            # An emptied cluster restarts at the point farthest from its centroid set.
            if len(members):
                centroids[c] = members.mean(axis=0)
            else:
                centroids[c] = fit[squared_distances(fit, centroids).min(1).argmax()]
    return centroids, squared_distances(x, centroids).argmin(axis=1)


def squared_distances(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(N, k) squared Euclidean distances (expanded form, clamped at 0)."""
    d = (x * x).sum(1)[:, None] - 2.0 * x @ centroids.T + (centroids * centroids).sum(1)[None, :]
    return np.maximum(d, 0.0)


def cosine_similarity(features: np.ndarray, query: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """(N,) cosine similarity of each row of ``features`` (N, C) to ``query`` (C,)."""
    x = np.asarray(features, dtype=np.float32)
    q = np.asarray(query, dtype=np.float32)
    return (x @ q) / (np.linalg.norm(x, axis=1) * np.linalg.norm(q) + eps)


def _kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centroids = np.empty((k, x.shape[1]), dtype=np.float32)
    centroids[0] = x[rng.integers(len(x))]
    closest = squared_distances(x, centroids[:1])[:, 0]
    for c in range(1, k):
        total = closest.sum()
        index = rng.choice(len(x), p=closest / total) if total > 0 else rng.integers(len(x))
        centroids[c] = x[index]
        closest = np.minimum(closest, squared_distances(x, centroids[c:c + 1])[:, 0])
    return centroids
