"""Alice's views: a crop around a random point of one volume and one around its match in another.

Per pair (methods.md §2.2–2.3): draw the query volume, draw a different key volume (the official code
uses the previous iteration's volume; a random other one keeps resumed runs exact), draw query
points until the matcher scores above the threshold (`draw_match`), cut ``roi`` crops around both
points (zero-padded), and derive
* the **student** inputs: the plain crops, masked later on the device with the sampled column masks;
* the **teacher** inputs: the crops rotated in the axial (x–y) plane by U(−deg, deg) and given Gaussian
  noise — the official ``data_aug`` computes these but never uses them (``augment=False`` reproduces that);
* the reconstruction target: the plain crops.
The sampled masks, angles and match scores are returned with the crops (the supervision is explicit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from S2DCCore.data.views.masking import sample_column_mask
from S2DCCore.data.views.matching import Matcher, crop_at, draw_match


@dataclass
class AlicePair:
    """One query/key pair and everything drawn for it.

    Attributes:
        query / key: (1, *roi) plain crops (student inputs before masking; reconstruction targets).
        teacher_query / teacher_key: (1, *roi) teacher inputs.
        mask_query / mask_key: (roi_x / p, roi_y / p) bool column masks.
        query_index / key_index: store indices. query_point / key_point: (3,) voxel centres of the crops.
        score: the matcher's similarity. draws: query points drawn. angles: teacher rotations (degrees).
    """

    query: torch.Tensor
    key: torch.Tensor
    teacher_query: torch.Tensor
    teacher_key: torch.Tensor
    mask_query: np.ndarray
    mask_key: np.ndarray
    query_index: int
    key_index: int
    query_point: np.ndarray
    key_point: np.ndarray
    score: float
    draws: int
    angles: tuple[float, float]


def rotate_axial(crop: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate (C, X, Y, Z) by ``degrees`` about z (in the x–y plane), linear interpolation, zeros outside."""
    if degrees == 0:
        return crop.clone()
    from scipy import ndimage

    array = ndimage.rotate(crop.numpy(), degrees, axes=(1, 2), reshape=False, order=1, mode="constant", cval=0.0)
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def teacher_view(crop: torch.Tensor, rng: np.random.Generator, augment: bool, rotate_degrees: float,
                 noise_std: float) -> tuple[torch.Tensor, float]:
    """The teacher's input for ``crop`` and the rotation angle drawn (0 without augmentation)."""
    if not augment:
        return crop.clone(), 0.0
    angle = float(rng.uniform(-rotate_degrees, rotate_degrees))
    view = rotate_axial(crop, angle)
    if noise_std > 0:
        view = view + torch.from_numpy(rng.normal(0.0, noise_std, view.shape).astype(np.float32))
    return view, angle


def make_alice_pair(store, rng: np.random.Generator, matcher: Matcher, *, roi: Sequence[int], threshold: float = 0.7,
                    tries: int = 100, margin: int = 10, mask_patch: int = 16, mask_ratio: float = 0.75,
                    augment: bool = True, rotate_degrees: float = 15.0, noise_std: float = 0.1) -> AlicePair:
    """Draw one pair of views from ``store`` (a `VolumeStore`, or any sequence of (1, X, Y, Z) tensors).

    Args:
        store: volumes. rng: numpy generator (every random choice comes from it).
        matcher: see `S2DCCore.data.views.matching`; a matcher with ``cross_volume`` False pairs a volume with itself.
        roi: crop size. threshold / tries: acceptance of a match (official 0.7, ~100 draws).
        margin: query points stay this far from the borders (official 10 voxels).
        mask_patch / mask_ratio: column masks (official 16 voxels, 0.75).
        augment / rotate_degrees / noise_std: teacher views (official ±15°, σ = 0.1).
    """
    n = len(store)
    query_index = int(rng.integers(n))
    key_index = query_index
    if matcher.cross_volume and n > 1:
        key_index = (query_index + 1 + int(rng.integers(n - 1))) % n
    query_volume, key_volume = store[query_index], store[key_index]
    match = matcher.pair(query_index, query_volume, key_index, key_volume)
    query_point, key_point, score, draws = draw_match(match, query_volume, rng, threshold=threshold, tries=tries,
                                                      margin=margin)
    query, key = crop_at(query_volume, query_point, roi), crop_at(key_volume, key_point, roi)
    teacher_query, angle_q = teacher_view(query, rng, augment, rotate_degrees, noise_std)
    teacher_key, angle_k = teacher_view(key, rng, augment, rotate_degrees, noise_std)
    return AlicePair(query=query, key=key, teacher_query=teacher_query, teacher_key=teacher_key,
                     mask_query=sample_column_mask(rng, roi, mask_patch, mask_ratio),
                     mask_key=sample_column_mask(rng, roi, mask_patch, mask_ratio),
                     query_index=query_index, key_index=key_index, query_point=query_point, key_point=key_point,
                     score=score, draws=draws, angles=(angle_q, angle_k))


def collate_pairs(pairs: Sequence[AlicePair]) -> dict[str, torch.Tensor]:
    """Stack pairs into a batch: crops (B, 1, *roi), masks (B, gx, gy) bool, ``score`` (B,), ``draws`` (B,)."""
    out = {name: torch.stack([getattr(p, name) for p in pairs])
           for name in ("query", "key", "teacher_query", "teacher_key")}
    for name in ("mask_query", "mask_key"):
        out[name] = torch.from_numpy(np.stack([getattr(p, name) for p in pairs]))
    out["score"] = torch.tensor([p.score for p in pairs], dtype=torch.float32)
    out["draws"] = torch.tensor([p.draws for p in pairs], dtype=torch.int64)
    return out
