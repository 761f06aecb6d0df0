"""Training crops for fine-tuning, nnU-Net style: volumes kept in memory, each class's voxels indexed once
per case, and a share of the crops centred on a foreground class drawn uniformly among the classes the
case has (a small structure is centred as often as a large one).

Everything is drawn from one NumPy generator, so a run is reproducible and resumable from its state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class SamplingConfig:
    """How fine-tuning crops are drawn and augmented.

    Attributes:
        foreground: probability that a crop is centred on a voxel of a foreground class (the class drawn
            uniformly among the case's foreground classes); otherwise the centre is uniform in the volume.
        flip_axes: array axes along which random mirroring keeps the labels valid. Default none: labels
            such as ``kidney_left`` / ``kidney_right`` are not mirror-symmetric. Cohorts whose classes are
            bilateral (merged hemispheres) name the left-right axis here.
        intensity_scale / intensity_shift: the image is multiplied by ``1 + U(−scale, scale)`` and shifted
            by ``U(−shift, shift)`` (on the normalised intensities), each with probability ½.
    """

    foreground: float = 0.5
    flip_axes: tuple[int, ...] = ()
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.foreground <= 1.0:
            raise ValueError(f"sampling.foreground must lie in [0, 1], not {self.foreground}")
        if any(a not in (0, 1, 2) for a in self.flip_axes):
            raise ValueError(f"sampling.flip_axes must list axes 0, 1 or 2, not {list(self.flip_axes)}")


@dataclass
class IndexedCase:
    """A preprocessed case padded to at least the crop, with each foreground class's voxels (flat indices).

    Attributes:
        image: (C, X, Y, Z) float32. label: (X, Y, Z) int64 class indices.
        class_voxels: foreground class → flat indices of its voxels (classes absent from the case omitted).
    """

    image: torch.Tensor
    label: torch.Tensor
    class_voxels: dict[int, np.ndarray]


def index_case(image: torch.Tensor, label: torch.Tensor, roi) -> IndexedCase:
    """Pad ``image`` (C, X, Y, Z) and ``label`` (1 or no channel axis) along every axis shorter than ``roi``
    by ``roi − n`` at *both* ends (image with 0, the background of every intensity preset and what the
    sliding window pads with at inference; label with 0), and index every foreground class's voxels once.

    Padding both ends lets a crop hold the case anywhere along that axis (nnU-Net does the same): padded at
    one end only, every crop of a small case was the same frame, and a network could learn positions from
    where the padding starts (on the Colin27 crops, lobes) — which inference, whose windows frame the case
    differently, does not reproduce.
    """
    label = label.reshape(image.shape[1:]).long()
    pad = [max(0, int(r) - n) for r, n in zip(roi, label.shape)]
    if any(pad):
        spec = [p for axis in reversed(pad) for p in (axis, axis)]
        image = torch.nn.functional.pad(image, spec, value=0.0)
        label = torch.nn.functional.pad(label, spec, value=0)
    flat = label.reshape(-1).numpy()
    counts = np.bincount(flat)
    order = np.argsort(flat, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    voxels = {c: order[starts[c]:starts[c + 1]] for c in range(1, len(counts)) if counts[c]}
    return IndexedCase(image=image.contiguous(), label=label.contiguous(), class_voxels=voxels)


def crop_start(case: IndexedCase, roi, config: SamplingConfig, rng: np.random.Generator) -> tuple[int, int, int]:
    """The corner of a crop of ``roi``: centred on a foreground voxel with probability ``config.foreground``,
    else on a uniform voxel; clamped inside the (padded) volume."""
    shape = np.asarray(case.label.shape)
    if case.class_voxels and rng.random() < config.foreground:
        classes = sorted(case.class_voxels)
        voxels = case.class_voxels[classes[int(rng.integers(len(classes)))]]
        centre = np.asarray(np.unravel_index(int(voxels[int(rng.integers(len(voxels)))]), tuple(shape)))
    else:
        centre = np.array([int(rng.integers(n)) for n in shape])
    roi = np.asarray(roi)
    return tuple(int(s) for s in np.clip(centre - roi // 2, 0, shape - roi))


def sample_crop(case: IndexedCase, roi, config: SamplingConfig, rng: np.random.Generator
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmented crop: image (C, *roi) float32 and label (1, *roi) int64."""
    x, y, z = crop_start(case, roi, config, rng)
    window = (slice(x, x + roi[0]), slice(y, y + roi[1]), slice(z, z + roi[2]))
    image = case.image[(slice(None), *window)]
    label = case.label[window][None]
    flips = [a for a in config.flip_axes if rng.random() < 0.5]
    if flips:
        dims = [a + 1 for a in flips]
        image, label = image.flip(dims), label.flip(dims)
    scale = 1.0 + rng.uniform(-config.intensity_scale, config.intensity_scale) if rng.random() < 0.5 else 1.0
    shift = rng.uniform(-config.intensity_shift, config.intensity_shift) if rng.random() < 0.5 else 0.0
    return (image * scale + shift).contiguous(), label.contiguous()


def batches(cases: list[IndexedCase], roi, crops: int, config: SamplingConfig, rng: np.random.Generator):
    """Endless batches of ``crops`` crops, each from a case drawn uniformly: {"image": (B, C, *roi), "label": (B, 1, *roi)}."""
    while True:
        pairs = [sample_crop(cases[int(rng.integers(len(cases)))], roi, config, rng) for _ in range(crops)]
        yield {"image": torch.stack([p[0] for p in pairs]), "label": torch.stack([p[1] for p in pairs])}
