"""Anatomy-matched points across volumes for Alice's views (methods.md §0 and §2.2), with pluggable matchers.

Alice pairs a random point of the current (query) volume with the most similar point of another
(key) volume and cuts a crop around each. Officially the similarity is that of SAM embeddings
(fine and coarse maps, ``(cos_fine + cos_coarse) / 2``), a point is redrawn until the best similarity
exceeds 0.7, for at most ~100 tries. Here a matcher is anything with
``pair(query_index, query_volume, key_index, key_volume) → match(point) → (key_point, score)``:

* `SelfMatcher`: the key is the query volume itself at the same point (score 1): the degenerate pair,
  used while a teacher matcher warms up;
* `EmbeddingMatcher`: cosine similarity of dense encoder embeddings; built from an S2DCCore encoder
  checkpoint (`load_encoder_features`) or from the method's own EMA teacher;
* `S2DCCore.data.phantoms.matching.PhantomOracle`: the phantom generator's exact correspondence.

Points are voxel indices ``[i, j, k]`` of the preprocessed volumes ``(1, X, Y, Z)`` of `VolumeStore`.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from S2DCCore.errors import UsageError

log = logging.getLogger(__name__)
PointMatch = Callable[[np.ndarray], tuple[np.ndarray, float]]


class Matcher(Protocol):
    """What the view generator needs from a matcher."""

    cross_volume: bool  # False: the key is the query volume itself

    def pair(self, query_index: int, query: torch.Tensor, key_index: int, key: torch.Tensor) -> PointMatch:
        """A function mapping a query point (3,) to (key point (3,) int, similarity score)."""


def crop_at(volume: torch.Tensor, centre: Sequence[int], shape: Sequence[int]) -> torch.Tensor:
    """The ``shape`` box of ``volume`` (C, X, Y, Z) starting at ``centre − shape // 2``, zero-padded outside."""
    out = volume.new_zeros((volume.shape[0], *shape))
    src, dst = [], []
    for c, size, want in zip(centre, volume.shape[1:], shape):
        start = int(c) - want // 2
        lo, hi = max(start, 0), min(start + want, size)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[(slice(None), *dst)] = volume[(slice(None), *src)]
    return out


def sample_query_point(volume: torch.Tensor, rng: np.random.Generator, margin: int = 10,
                       threshold: float = 0.0, draws: int = 1000) -> np.ndarray:
    """A random voxel with ``|value| > threshold`` at least ``margin`` voxels from every border.

    Air is 0 for both intensity presets (CT windowed to [0, 1], MR z-scored inside the body), so the
    default picks body voxels; the official ``select_random_points`` asks for ``value > 0`` on CT in
    [0, 1]. Rejection sampling, falling back to the last draw (the official code falls back to any
    voxel after many draws); the margin shrinks for volumes too small to keep it.

    Returns:
        (3,) int64 voxel index.
    """
    shape = np.asarray(volume.shape[1:])
    margins = np.minimum(margin, (shape - 1) // 2)
    low, high = margins, shape - margins  # high exclusive
    image = volume[0]
    point = None
    for _ in range(draws):
        point = rng.integers(low, high)
        if abs(float(image[tuple(point)])) > threshold:
            return point.astype(np.int64)
    return point.astype(np.int64)


class SelfMatcher:
    """The query volume is its own key, at the same point (score 1)."""

    cross_volume = False

    def pair(self, query_index: int, query: torch.Tensor, key_index: int, key: torch.Tensor) -> PointMatch:
        return lambda point: (np.asarray(point, dtype=np.int64), 1.0)


@torch.no_grad()
def dense_embeddings(features: Callable[[torch.Tensor], list[torch.Tensor]], volume: torch.Tensor,
                     stages: Sequence[int], roi: Sequence[int], device: torch.device | str = "cpu",
                     patch_size: int = 2) -> tuple[torch.Tensor, int]:
    """Unit-normalised encoder embeddings of a whole volume on the grid of its finest requested stage.

    Coarser stages are trilinearly up-sampled to the finest stage's grid (as the official coarse SAM
    map), the windows are blended, each stage is L2-normalised, and the S stages are concatenated scaled
    by ``1/√S``, so the dot product of two embeddings is the mean of the per-stage cosines (the official
    ``(cos_fine + cos_coarse) / 2`` for S = 2). The volume is zero-padded at its far end to multiples of
    32 and encoded in sliding windows.

    Args:
        features: (1, 1, x, y, z) → encoder stages (``forward_features``).
        volume: (1, X, Y, Z).
        stages: encoder stages to use, e.g. (2, 3).
        roi: sliding-window size (multiples of 32).
        device: where the encoder runs.
        patch_size: the encoder's patch size (stage s has stride patch_size · 2^s).

    Returns:
        ((D, gx, gy, gz) embeddings on ``device``, covering the unpadded volume; stride of the grid in voxels).
    """
    from monai.inferers import sliding_window_inference

    stages = sorted(set(int(s) for s in stages))
    if not stages:
        raise UsageError("matcher stages must name at least one encoder stage")
    stride = patch_size * 2 ** stages[0]
    x = volume[None].to(device=device, dtype=torch.float32)  # (1, 1, X, Y, Z)
    padded = [math.ceil(n / 32) * 32 for n in x.shape[2:]]
    x = F.pad(x, [p for n, want in zip(reversed(x.shape[2:]), reversed(padded)) for p in (0, want - n)])
    window = [min(int(r), p) for r, p in zip(roi, padded)]
    sizes: list[int] = []

    def predictor(window_x: torch.Tensor) -> torch.Tensor:
        outs = features(window_x)
        fine = outs[stages[0]].shape[2:]
        maps = [F.interpolate(outs[s], size=fine, mode="trilinear", align_corners=False) if s != stages[0]
                else outs[s] for s in stages]
        sizes[:] = [m.shape[1] for m in maps]
        return torch.cat(maps, dim=1)

    blended = sliding_window_inference(x, window, 1, predictor, overlap=0.25, mode="constant")[0]
    parts = torch.split(blended, sizes, dim=0)
    embedding = torch.cat([F.normalize(p, dim=0) for p in parts], dim=0) / math.sqrt(len(parts))
    keep = [math.ceil(n / stride) for n in volume.shape[1:]]
    return embedding[:, : keep[0], : keep[1], : keep[2]].contiguous(), stride


def best_match(query_vector: torch.Tensor, key_embedding: torch.Tensor) -> tuple[tuple[int, int, int], float]:
    """Grid index and similarity of the key token most similar to ``query_vector`` (D,) in (D, gx, gy, gz)."""
    scores = torch.einsum("d,dxyz->xyz", query_vector, key_embedding)
    flat = int(torch.argmax(scores))
    index = np.unravel_index(flat, tuple(scores.shape))
    return tuple(int(i) for i in index), float(scores.reshape(-1)[flat])


def token_centre(index: Sequence[int], stride: int, shape: Sequence[int]) -> np.ndarray:
    """Voxel at the centre of token ``index`` (the block [i·stride, (i+1)·stride)), clipped into ``shape``."""
    centre = np.floor((np.asarray(index) + 0.5) * stride).astype(np.int64)
    return np.clip(centre, 0, np.asarray(shape) - 1)


class EmbeddingMatcher:
    """Match points by the cosine similarity of dense embeddings (`dense_embeddings`).

    Args:
        features: the encoder's ``forward_features`` (run without gradients).
        stages / roi / device / patch_size: see `dense_embeddings`.
        cache_size: embeddings of this many volumes kept by index (0 for an encoder that keeps changing,
            such as the EMA teacher).
    """

    cross_volume = True

    def __init__(self, features: Callable[[torch.Tensor], list[torch.Tensor]], stages: Sequence[int],
                 roi: Sequence[int], device: torch.device | str = "cpu", patch_size: int = 2,
                 cache_size: int = 0) -> None:
        self.features, self.stages, self.roi = features, tuple(stages), tuple(roi)
        self.device, self.patch_size, self.cache_size = device, patch_size, cache_size
        self._cache: OrderedDict[int, tuple[torch.Tensor, int]] = OrderedDict()

    def embed(self, index: int, volume: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Embeddings (D, gx, gy, gz) and stride of volume ``index`` (cached when ``cache_size`` > 0)."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        result = dense_embeddings(self.features, volume, self.stages, self.roi, self.device, self.patch_size)
        if self.cache_size > 0:
            self._cache[index] = result
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return result

    def pair(self, query_index: int, query: torch.Tensor, key_index: int, key: torch.Tensor) -> PointMatch:
        query_emb, stride = self.embed(query_index, query)
        key_emb, _ = self.embed(key_index, key)

        def match(point: np.ndarray) -> tuple[np.ndarray, float]:
            token = np.minimum(np.asarray(point) // stride, np.asarray(query_emb.shape[1:]) - 1)
            index, score = best_match(query_emb[(slice(None), *token)], key_emb)
            return token_centre(index, stride, key.shape[1:]), score

        return match


def load_encoder_features(path: str | Path, device: torch.device | str = "cpu"):
    """The ``forward_features`` of an S2DCCore encoder directory, frozen, on ``device``, and its model card.

    Raises:
        UsageError: the directory does not hold an encoder.
    """
    from S2DCCore.checkpoint import load_model_dir
    from S2DCCore.config import from_dict
    from S2DCCore.models.encoders import EncoderConfig, build_encoder

    tensors, card = load_model_dir(path)
    if card.get("kind") != "encoder":
        raise UsageError(f"the matcher must be an encoder directory (kind 'encoder'), not kind {card.get('kind')!r}",
                         path)
    encoder = build_encoder(from_dict(EncoderConfig, card["architecture"], where="architecture."))
    encoder.load_state_dict(tensors, strict=True)
    encoder.eval().requires_grad_(False).to(device)
    log.info("matcher: encoder %s (method %s, step %s)", path, card.get("method"), card.get("step"))
    return encoder.forward_features, card


def draw_match(match: PointMatch, query: torch.Tensor, rng: np.random.Generator, *, threshold: float, tries: int,
               margin: int) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Draw query points until the match scores above ``threshold`` (at most ``tries`` draws).

    Returns the accepted pair, or the best-scoring one after ``tries`` draws (the official loop keeps
    its last draw instead).

    Returns:
        (query point, key point, score, draws used).
    """
    best = None
    for attempt in range(1, max(1, tries) + 1):
        point = sample_query_point(query, rng, margin)
        key_point, score = match(point)
        if best is None or score > best[2]:
            best = (point, key_point, score)
        if score > threshold:
            return point, key_point, score, attempt
    return best[0], best[1], best[2], max(1, tries)
