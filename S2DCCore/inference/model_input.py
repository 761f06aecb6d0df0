"""From an input image to the network's input: the model grid, resampling, and the intensity preset.

This mirrors the training preprocessing (`S2DCCore.data.transforms`): orient → resample to the model
spacing (trilinear) → intensity preset (``ct``: window to [0, 1] with clipping, as MONAI
``ScaleIntensityRanged``; ``mr``: z-score over the non-zero voxels, as ``NormalizeIntensityd(nonzero=True)``).
Foreground cropping, a training-time saving, is not applied: every voxel of the input gets a prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from S2DCCore.config import PreprocessConfig
from S2DCCore.geometry import Grid, model_grid, resample
from S2DCCore.io.image import Image, read_image, validate_volume


@dataclass
class ModelInput:
    """An input image and its resampled, normalised copy on the model grid.

    Attributes:
        image: the input as read (array indexed ``[i, j, k]`` + affine).
        grid: the input's grid.
        model_grid: the grid the network sees.
        volume: (X, Y, Z) float32 network input on ``model_grid``.
        source: the input's path (or ``<array>``), for messages.
    """

    image: Image
    grid: Grid
    model_grid: Grid
    volume: np.ndarray
    source: str


def read_input(image: Image | str | Path) -> tuple[Image, str]:
    """The validated image and a name for messages; paths are read with `read_image` (which validates)."""
    if isinstance(image, Image):
        return validate_volume(image, "<array>"), "<array>"
    if isinstance(image, (str, Path)):
        return read_image(image), str(image)
    raise TypeError(f"image must be an Image or a path, not {type(image).__name__}")


def input_grid(image: Image) -> Grid:
    return Grid(shape=tuple(int(s) for s in image.array.shape), affine=np.asarray(image.affine, dtype=np.float64))


def target_grid(image: Image, spacing, orientation: str) -> Grid:
    """The model grid for ``image`` (cheap: no resampling), for memory estimates before any work."""
    return model_grid(input_grid(image), spacing, orientation)


def prepare_input(image: Image, preprocess: PreprocessConfig, spacing, orientation: str,
                  source: str = "<array>") -> ModelInput:
    """Resample ``image`` to the model grid and apply the intensity preset.

    Args:
        image: a validated 3-D image.
        preprocess: the model's preprocessing (intensity preset and CT window).
        spacing: model spacing in mm, or None to keep the input's.
        orientation: the model's axis codes.
        source: name used in messages.
    """
    grid = input_grid(image)
    target = model_grid(grid, spacing, orientation)
    volume = resample(np.asarray(image.array, dtype=np.float32), grid, target)
    normalize_intensity(volume, preprocess)
    return ModelInput(image=image, grid=grid, model_grid=target, volume=volume, source=source)


def foreground_box(volume: np.ndarray, preprocess: PreprocessConfig) -> tuple[slice, ...] | None:
    """The bounding box training cropped ``volume`` (normalised, on the model grid) to, or None.

    Fine-tuning crops every case to the bounding box of its foreground (`PreprocessConfig.crop_foreground`:
    MONAI's ``CropForegroundd`` with the preset's selector, intensity > 0 after scaling, or ≠ 0 for the
    z-score preset), so the network never sees the air far outside the body. Inference applies the same box
    (nnU-Net does the same) and calls the rest background. None: no cropping, or no foreground at all.
    """
    if not preprocess.crop_foreground:
        return None
    mask = volume != 0 if preprocess.preset not in ("ct", "percentile") else volume > 0
    if not mask.any():
        return None
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def normalize_intensity(volume: np.ndarray, preprocess: PreprocessConfig) -> np.ndarray:
    """Apply the intensity preset to a float32 ``volume`` in place (and return it)."""
    if preprocess.preset == "ct":
        low, high = preprocess.ct_window
        volume -= low
        volume /= high - low
        np.clip(volume, 0.0, 1.0, out=volume)
    elif preprocess.preset == "percentile":
        from S2DCCore.config import PERCENTILES

        low, high = (float(v) for v in np.percentile(volume, PERCENTILES))
        volume -= low
        volume /= (high - low) if high > low else 1.0
        np.clip(volume, 0.0, 1.0, out=volume)
    else:
        mask = volume != 0
        if mask.any():
            values = volume[mask]
            mean, std = float(values.mean()), float(values.std())
            volume[mask] = (values - mean) / (std if std > 0 else 1.0)
    return volume
