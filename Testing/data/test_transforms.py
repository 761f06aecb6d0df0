"""Preprocessing presets: orientation to RAS, target spacing, CT window, MR z-score, foreground crop."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from S2DCCore.config import PreprocessConfig
from S2DCCore.data.transforms import preprocess_transforms
from S2DCCore.errors import DataError, find_user_error
from S2DCCore.io.image import write_image
from testdata import make_affine


def _phantom(tmp_path, affine, suffix=".nrrd"):
    """A body (a box of 40 HU) in air (−1000 HU) with a labelled cube inside."""
    image = np.full((20, 16, 12), -1000.0, np.float32)
    image[4:16, 3:13, 2:10] = 40.0
    label = np.zeros(image.shape, np.uint8)
    label[6:10, 5:9, 4:8] = 1
    return (write_image(tmp_path / f"i{suffix}", image, affine), write_image(tmp_path / f"l{suffix}", label, affine))


def test_lps_input_becomes_ras_on_the_target_spacing(tmp_path):
    image_path, label_path = _phantom(tmp_path, make_affine("lps"))
    config = PreprocessConfig(spacing=(2.0, 2.0, 2.0), crop_foreground=False)
    out = preprocess_transforms(config)({"image": image_path, "label": label_path})
    affine = np.asarray(out["image"].affine)
    assert "".join(nib.aff2axcodes(affine)) == "RAS"
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), 2.0)
    assert out["image"].shape == out["label"].shape
    # The labelled cube keeps its physical centre (the world point of its centre voxel) within a voxel.
    src = make_affine("lps") @ np.array([7.5, 6.5, 5.5, 1.0])
    idx = np.argwhere(np.asarray(out["label"][0]) > 0).mean(axis=0)
    np.testing.assert_allclose((affine @ np.append(idx, 1.0))[:3], src[:3], atol=2.0)


def test_ct_window_and_foreground_crop(tmp_path):
    image_path, label_path = _phantom(tmp_path, make_affine("ras"), ".nii.gz")
    config = PreprocessConfig(preset="ct", ct_window=(-160.0, 240.0), spacing=None)
    out = preprocess_transforms(config)({"image": image_path, "label": label_path})
    values = np.asarray(out["image"])
    assert values.min() >= 0.0 and values.max() <= 1.0
    assert tuple(out["image"].shape[1:]) == (12, 10, 8)  # cropped to the 40 HU body box
    np.testing.assert_allclose(values, 0.5)  # 40 HU is the middle of (−160, 240)


def test_mr_zscore_inside_foreground(tmp_path):
    rng = np.random.default_rng(0)
    image = np.zeros((16, 16, 16), np.float32)
    image[4:12, 4:12, 4:12] = rng.normal(300.0, 25.0, size=(8, 8, 8))
    path = write_image(tmp_path / "mr.nii.gz", image, np.eye(4))
    out = preprocess_transforms(PreprocessConfig(preset="mr", spacing=None, crop_foreground=False))({"image": path})
    body = np.asarray(out["image"][0])[4:12, 4:12, 4:12]
    assert abs(body.mean()) < 1e-4 and abs(body.std() - 1.0) < 1e-3
    assert np.all(np.asarray(out["image"][0])[:4] == 0)  # air stays 0


def test_bad_image_fails_with_its_path(tmp_path):
    (tmp_path / "x.nii.gz").write_text("text")
    with pytest.raises(Exception) as info:  # MONAI wraps it in a RuntimeError; the cause is ours
        preprocess_transforms(PreprocessConfig())({"image": tmp_path / "x.nii.gz"})
    error = find_user_error(info.value)
    assert isinstance(error, DataError) and error.path.name == "x.nii.gz" and "NIfTI" in error.problem
