"""The encoder shipped inside S2DCCore: its card, and embed / propagate without --model."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from S2DCCore.data.phantoms import PhantomConfig, make_phantom
from S2DCCore.inference.model_io import default_model_dir, load_model
from S2DCCore.io.image import Image, read_image, write_image

MAX_BYTES = 20 * 2**20


def test_card_says_what_it_was_trained_on_and_how_to_remake_it():
    path = default_model_dir()
    card = json.loads((path / "model.json").read_text())
    assert card["kind"] == "encoder" and card["method"] == "s2dc"
    assert (path / "model.safetensors").stat().st_size <= MAX_BYTES
    info = card["default_encoder"]
    assert info["steps"] == card["step"] and info["working_spacing_mm"] == [2.0, 2.0, 2.0] == card["spacing"]
    assert card["intensity_preset"] == "percentile"
    assert "tools/train_default_encoder.sh" in info["command"]
    names = [p["file"] for p in info["pool"]["phantoms"]] + list(info["pool"]["real"])
    assert {"mni152_t1", "itk_t1_head", "nibabel_anatomical"} <= set(info["pool"]["real"])
    assert {"ct", "mr"} == {p["modality"] for p in info["pool"]["phantoms"]}
    assert not any("colin" in n.lower() or "ch2" in n.lower() for n in names)
    model = load_model(path)  # strict load: the weights fit the card
    assert model.spacing == (2.0, 2.0, 2.0)


@pytest.fixture(scope="module")
def phantom_path(tmp_path_factory):
    phantom = make_phantom(0, 3, PhantomConfig(size=48, fov_mm=144.0))  # 3 mm: a 72³ grid at 2 mm
    path = tmp_path_factory.mktemp("img") / "ct.nii.gz"
    write_image(path, phantom.image, phantom.affine)
    return path, phantom


def test_embed_without_a_model_uses_the_default_encoder(phantom_path):
    from S2DCCore.inference.embed import embed

    path, phantom = phantom_path
    result = embed(path, None, pca=True, clusters=4)
    assert result.model_source == str(default_model_dir())
    assert result.pca_rgb.shape == phantom.image.shape + (3,) and result.structures.shape == phantom.image.shape
    assert len(np.unique(result.structures)) == 4
    # The encoder ran at its working spacing (2 mm), not the phantom's 3 mm.
    np.testing.assert_allclose(result.model_grid.spacing, (2.0, 2.0, 2.0))


def test_cli_embed_and_propagate_without_model(phantom_path, tmp_path):
    path, phantom = phantom_path
    env_py = [sys.executable, "-m", "S2DCCore.cli.main"]
    result = subprocess.run(env_py + ["embed", str(path), "-o", str(tmp_path / "emb"), "--pca", "--device", "cpu"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    import nibabel as nib

    rgb = nib.load(str(tmp_path / "emb" / "pca_rgb.nii.gz"))  # an RGB vector volume on the input grid
    assert rgb.shape[:3] == phantom.image.shape
    np.testing.assert_allclose(rgb.affine, phantom.affine, atol=1e-5)
    rng = np.random.default_rng(0)
    seeds = np.zeros(phantom.label.shape, np.uint8)
    for value in np.unique(phantom.label):
        where = np.flatnonzero(phantom.label.ravel() == value)
        seeds.ravel()[rng.choice(where, min(20, len(where)), replace=False)] = value + 1
    write_image(tmp_path / "seeds.nii.gz", seeds, phantom.affine)
    result = subprocess.run(env_py + ["propagate", str(path), "--scribbles", str(tmp_path / "seeds.nii.gz"),
                                      "-o", str(tmp_path / "grown.nii.gz"), "--device", "cpu"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    grown = read_image(tmp_path / "grown.nii.gz").array.astype(np.int64) - 1
    assert grown.shape == phantom.label.shape
    dice = []
    for value in np.unique(phantom.label)[1:]:
        a, b = grown == value, phantom.label == value
        dice.append(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))
    assert np.mean(dice) > 0.4  # 13 structures from 20 voxels each on a coarse 48³ phantom
