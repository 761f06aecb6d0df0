"""``segment``: the labelmap has the input's exact shape and affine and is *right* on that grid.

The geometry is checked with a network-free predictor (one-hot logits of "normalised intensity > 0.5")
on a cone whose zero level is an off-centre ball: the labelmap must equal the thresholded input at every
voxel farther than half a model-voxel diagonal from the ball's surface, for RAS, LPS, oblique and
anisotropic grids in NIfTI and NRRD. A flip, axis swap or shift of a voxel would break it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from S2DCCore.errors import UsageError
from S2DCCore.inference.memory import MemoryBudgetError
from S2DCCore.inference.model_io import LoadedModel
from S2DCCore.inference.segment import segment, segment_image, write_segmentation
from S2DCCore.io.image import Image, read_image, write_image


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_segmentation_is_the_thresholded_input_on_the_input_grid(tmp_path, geometry, suffix, threshold_segmenter,
                                                                  helpers):
    kind, affine = geometry
    f, _ = helpers.cone_volume(affine)
    path = write_image(tmp_path / f"image{suffix}", f, affine)
    result = segment_image(path, threshold_segmenter)
    out, sidecar = write_segmentation(tmp_path / f"seg{suffix}", result)

    back = read_image(out)
    assert back.shape == f.shape
    np.testing.assert_allclose(back.affine, affine, atol=1e-5)
    truth = f > 0
    assert 300 < truth.sum() < truth.size / 2  # the ball lies inside the volume
    # |∇f| = 1 mm/mm, so |f| is the distance (mm) to the ball's surface.
    decided = np.abs(f) > 0.5 * np.linalg.norm(helpers.model_spacing)
    np.testing.assert_array_equal(back.array[decided], truth[decided])
    assert np.mean(back.array != truth) < 0.02
    table = json.loads(sidecar.read_text())
    assert sidecar.name == "seg.json" and table["labelmap"] == out.name
    assert [(e["value"], e["name"]) for e in table["labels"]] == [(0, "background"), (1, "ball")]


def test_python_api_returns_an_array_on_the_input_grid(threshold_segmenter, helpers):
    import S2DCCore

    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    f, _ = helpers.cone_volume(affine, shape=(30, 28, 12))
    labels = S2DCCore.segment(Image(f, affine), threshold_segmenter)
    assert S2DCCore.segment is segment
    assert labels.shape == f.shape and labels.dtype == np.uint8
    assert set(np.unique(labels)) == {0, 1}


def test_non_contiguous_label_values_are_written(threshold_segmenter, helpers):
    # Fine-tuning maps a cohort's values (here 0 and 5) to channels in sorted order.
    card = {**threshold_segmenter.card, "labels": {"0": "background", "5": "ball"}}
    model = LoadedModel(card=card, segmenter=threshold_segmenter.segmenter)
    f, _ = helpers.cone_volume(np.eye(4), shape=(30, 30, 30))
    labels = segment(Image(f, np.eye(4)), model)
    assert set(np.unique(labels)) == {0, 5}
    np.testing.assert_array_equal(labels[np.abs(f) > 2] == 5, f[np.abs(f) > 2] > 0)


def test_tiny_swin_segmenter(tmp_path, loaded_models, helpers):
    affine = np.diag([-1.2, -1.2, 1.5, 1.0])
    f, _ = helpers.cone_volume(affine, shape=(36, 30, 20))
    path = write_image(tmp_path / "ct.nrrd", f * 20, affine)
    result = segment_image(path, loaded_models["segmenter"], device="cpu")
    assert result.labels.shape == f.shape
    assert set(np.unique(result.labels)) <= {0, 1, 2}
    assert result.label_names == {0: "background", 1: "liver", 2: "spleen"}
    assert result.model_grid.spacing == pytest.approx((2.0, 2.0, 2.0))


def test_an_encoder_cannot_segment(tmp_path, loaded_models):
    path = write_image(tmp_path / "x.nii.gz", np.zeros((8, 8, 8), np.float32), np.eye(4))
    with pytest.raises(UsageError, match="is an encoder"):
        segment(path, loaded_models["encoder"])


def test_memory_refusal_with_a_tiny_budget(tmp_path, loaded_models):
    path = write_image(tmp_path / "x.nii.gz", np.zeros((20, 20, 20), np.float32), np.eye(4))
    with pytest.raises(MemoryBudgetError, match=r"needs about .* but the budget is 1\.0 MiB") as info:
        segment(path, loaded_models["segmenter"], memory_budget=2**20)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_outputs_are_never_overwritten(tmp_path, threshold_segmenter, helpers):
    f, _ = helpers.cone_volume(np.eye(4), shape=(20, 20, 20))
    result = segment_image(Image(f, np.eye(4)), threshold_segmenter)
    (tmp_path / "seg.json").write_text("{}")
    with pytest.raises(UsageError, match="refusing to overwrite"):
        write_segmentation(tmp_path / "seg.nii.gz", result)
    assert not (tmp_path / "seg.nii.gz").exists()


def test_small_windows_are_refused_for_instance_norm_segmenters(tmp_path, loaded_models):
    image = Image(np.zeros((8, 8, 8), np.float32), np.eye(4))
    with pytest.raises(UsageError, match="at least 64"):
        segment(image, loaded_models["segmenter"], roi=32)
    with pytest.raises(UsageError, match="multiples of 32"):
        segment(image, loaded_models["segmenter"], roi=(64, 64, 48))


def test_segment_sees_only_the_foreground_box_that_training_cropped_to():
    """Fine-tuning crops each case to its foreground box (intensity > 0 after the CT window), so a network
    can confuse the air outside the body with lung it only ever saw inside. Inference applies the same box
    and calls the rest background; a card with ``crop_foreground: false`` gets the whole volume."""
    import torch

    from S2DCCore.inference.model_io import LoadedModel
    from S2DCCore.inference.segment import segment_image
    from S2DCCore.io.image import Image

    volume = np.full((40, 36, 32), -1000.0, dtype=np.float32)  # air
    volume[8:30, 6:28, 4:26] = 40.0                               # the body's box
    volume[12:16, 10:14, 8:12] = -1000.0                          # a lung pocket inside it
    image = Image(volume, np.diag([1.5, 1.5, 1.5, 1.0]))

    def air_is_lung(x):
        lung = (x < 0.05).float()
        return torch.cat([1.0 - lung, lung], dim=1)

    def card(crop: bool) -> dict:
        return {"kind": "segmenter", "roi": [16, 16, 16], "spacing": [1.5] * 3, "orientation": "RAS",
                "labels": {"0": "background", "1": "lung"},
                "preprocess": {"preset": "ct", "ct_window": [-50.0, 50.0], "crop_foreground": crop}}

    cropped = segment_image(image, LoadedModel(card=card(True), segmenter=air_is_lung)).labels
    whole = segment_image(image, LoadedModel(card=card(False), segmenter=air_is_lung)).labels
    pocket = np.zeros(volume.shape, dtype=bool)
    pocket[12:16, 10:14, 8:12] = True
    assert np.array_equal(cropped == 1, pocket)
    assert np.array_equal(whole == 1, volume < 0)
