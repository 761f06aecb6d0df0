"""Preprocessing presets as MONAI dictionary transforms.

``load → orient (RAS) → resample to the target spacing → intensity preset → crop to the body``.
Loading goes through the core's reader (`S2DCCore.io.image.read_image`), so NIfTI, NRRD and DICOM
folders enter MONAI as MetaTensors that carry their voxel-to-RAS affine, and every later step keeps it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from S2DCCore.config import PreprocessConfig
from S2DCCore.io.image import read_image

# Axis-code letters of RAS space; MetaTensors from `load_metatensor` are always RAS.
_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def load_metatensor(path, *, is_label: bool = False):
    """Read an image as a channel-first ``(1, X, Y, Z)`` MetaTensor with its RAS affine."""
    import torch
    from monai.data import MetaTensor

    image = read_image(path)
    dtype = np.int64 if is_label else np.float32
    array = np.ascontiguousarray(image.array.astype(dtype, copy=False))[None]
    meta = {"filename_or_obj": str(path), "original_affine": image.affine.copy(), "space": "RAS"}
    return MetaTensor(torch.from_numpy(array), affine=torch.as_tensor(image.affine), meta=meta)


def _load_dict_transform(keys: Sequence[str], label_keys: Sequence[str]):
    from monai.transforms import MapTransform

    class LoadImageWithGeometryd(MapTransform):
        """Replace each path under ``keys`` by its MetaTensor (labels as integers)."""

        def __call__(self, data: Mapping[Hashable, object]) -> dict:
            out = dict(data)
            for key in self.key_iterator(out):
                out[key] = load_metatensor(out[key], is_label=key in label_keys)
            return out

    return LoadImageWithGeometryd(keys=list(keys), allow_missing_keys=True)


def preprocess_transforms(config: PreprocessConfig, keys: Sequence[str] = ("image", "label")):
    """The deterministic preprocessing pipeline for ``config`` (a MONAI ``Compose``).

    ``keys[0]`` is the image; the others are labels (nearest-neighbour resampling, no intensity
    change). Missing label keys are allowed, so one pipeline serves labelled and unlabelled cases.
    """
    from monai import transforms as mt

    image_key, label_keys = keys[0], tuple(keys[1:])
    steps = [_load_dict_transform(keys, label_keys)]
    steps.append(mt.Orientationd(keys=list(keys), axcodes=config.orientation, labels=_RAS_LABELS, allow_missing_keys=True))
    if config.spacing is not None:
        modes = ["bilinear"] + ["nearest"] * len(label_keys)
        steps.append(mt.Spacingd(keys=list(keys), pixdim=config.spacing, mode=modes, allow_missing_keys=True))
    if config.preset == "ct":
        low, high = config.ct_window
        steps.append(mt.ScaleIntensityRanged(keys=image_key, a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True))
        foreground = _above(0.0)
    elif config.preset == "percentile":
        from S2DCCore.config import PERCENTILES

        steps.append(mt.ScaleIntensityRangePercentilesd(keys=image_key, lower=PERCENTILES[0], upper=PERCENTILES[1],
                                                        b_min=0.0, b_max=1.0, clip=True))
        foreground = _above(0.0)
    else:
        # z-score over the body only, so the air around it does not set the scale.
        steps.append(mt.NormalizeIntensityd(keys=image_key, nonzero=True))
        foreground = _nonzero
    if config.crop_foreground:
        steps.append(
            mt.CropForegroundd(keys=list(keys), source_key=image_key, select_fn=foreground, allow_smaller=True,
                               allow_missing_keys=True)
        )
    steps.append(mt.EnsureTyped(keys=list(keys), allow_missing_keys=True, track_meta=True))
    return mt.Compose(steps)


def _above(threshold: float):
    def select(x):
        return x > threshold

    return select


def _nonzero(x):
    return x != 0
