"""Preprocessed volumes kept in memory, and random regions cut from them for pretraining."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch

from S2DCCore.config import PreprocessConfig
from S2DCCore.data.cohort import Case

log = logging.getLogger(__name__)


class VolumeStore:
    """Preprocessed images of a list of cases, loaded on first use and kept (LRU, ``capacity`` volumes).

    Volumes are stored as float32 CPU tensors ``(1, X, Y, Z)`` in RAS at the preset's spacing.
    """

    def __init__(self, cases: Sequence[Case], preprocess: PreprocessConfig, capacity: int = 64) -> None:
        from S2DCCore.data.transforms import preprocess_transforms

        self.cases = list(cases)
        self.transform = preprocess_transforms(preprocess, keys=("image",))
        self.capacity = max(1, capacity)
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> torch.Tensor:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        volume = torch.as_tensor(np.asarray(self.transform({"image": self.cases[index].image})["image"]),
                                 dtype=torch.float32)
        self._cache[index] = volume
        if len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return volume


def random_region(volume: torch.Tensor, shape: Sequence[int], rng: np.random.Generator,
                  small: str = "pad") -> torch.Tensor:
    """A uniformly placed ``shape`` region of ``volume`` (1, X, Y, Z).

    Where the volume is smaller than ``shape`` on an axis: ``small="pad"`` zero-pads it (centred; zero is
    air for both presets: CT is windowed to [0, 1], MR z-scored over the body with air at 0);
    ``small="resize"`` takes the whole extent and stretches it to the region (trilinear, corners aligned),
    as the official S²DC loader does (``RandSpatialCropSamplesd`` then ``Resized``). Both draw the same
    random numbers, so the switch changes no other sample.
    """
    if small not in ("pad", "resize"):
        raise ValueError(f"small must be 'pad' or 'resize', not {small!r}")
    if small == "resize" and any(size < want for size, want in zip(volume.shape[1:], shape)):
        src = []
        for size, want in zip(volume.shape[1:], shape):
            start = int(rng.integers(0, size - want + 1)) if size >= want else 0
            src.append(slice(start, start + min(size, want)))
        crop = volume[(slice(None), *src)]
        return torch.nn.functional.interpolate(crop[None].float(), size=tuple(shape), mode="trilinear",
                                               align_corners=True)[0].to(volume.dtype)
    channels = volume.shape[0]
    out = volume.new_zeros((channels, *shape))
    src, dst = [], []
    for size, want in zip(volume.shape[1:], shape):
        if size >= want:
            start = int(rng.integers(0, size - want + 1))
            src.append(slice(start, start + want))
            dst.append(slice(0, want))
        else:
            offset = (want - size) // 2
            src.append(slice(0, size))
            dst.append(slice(offset, offset + size))
    out[(slice(None), *dst)] = volume[(slice(None), *src)]
    return out
