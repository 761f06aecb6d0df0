"""The synthetic torso cohort: determinism, anatomy, no intensity shortcut, cohort files, previews."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from S2DCCore.data.phantoms import torso as phantoms
from S2DCCore.data.phantoms import (STRUCTURES, PhantomConfig, canonical_grid, canonical_to_voxel, make_phantom,
                                    voxel_to_canonical, write_phantom_cohort)
from S2DCCore.data.preview import colour, save_montage
from S2DCCore.io.image import read_image

SMALL = PhantomConfig(size=48)
ML = {  # plausible volumes (mL) per structure, generous; the field of view cuts the lungs' apices
    "body_wall": (2000, 12000), "fat": (1500, 15000), "lung_left": (400, 4000), "lung_right": (400, 4000),
    "liver": (500, 2500), "spleen": (20, 700), "kidney_left": (50, 400), "kidney_right": (50, 400),
    "vertebra": (100, 900), "aorta": (30, 400), "bowel": (300, 4000), "heart": (100, 900),
}


@pytest.fixture(scope="module")
def cases():
    return [make_phantom(n, 11, SMALL) for n in range(3)]


def _centroid_ras(phantom, value):
    ijk = np.argwhere(phantom.label == value).mean(0)
    return phantom.affine[:3, :3] @ ijk + phantom.affine[:3, 3]


def test_make_phantom__same_seed_same_arrays_other_seed_differs():
    a, b = make_phantom(2, 5, PhantomConfig(size=32)), make_phantom(2, 5, PhantomConfig(size=32))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    assert np.array_equal(a.affine, b.affine)
    other_seed, other_case = make_phantom(2, 6, PhantomConfig(size=32)), make_phantom(3, 5, PhantomConfig(size=32))
    assert not np.array_equal(a.label, other_seed.label) and not np.array_equal(a.label, other_case.label)
    assert a.image.dtype == np.float32 and a.label.dtype == np.uint8 and a.affine.dtype == np.float64


def test_every_structure_present_with_plausible_volume(cases):
    assert len(STRUCTURES) - 1 >= 8 and STRUCTURES[0] == "background"
    for phantom in cases:
        assert set(np.unique(phantom.label)) == set(STRUCTURES)
        ml = np.bincount(phantom.label.ravel(), minlength=len(STRUCTURES)) * np.prod(phantom.geometry.spacing) / 1e3
        for value, name in STRUCTURES.items():
            if value:
                low, high = ML[name]
                assert low <= ml[value] <= high, (name, ml[value])


@pytest.mark.parametrize("anisotropic", [False, True])
def test_structures_sit_on_the_right_side_in_ras(anisotropic):
    for n in range(2):
        p = make_phantom(n, 3, PhantomConfig(size=48, anisotropic=anisotropic))
        c = {name: _centroid_ras(p, value) for value, name in STRUCTURES.items() if value}
        spine = c["vertebra"]
        # RAS: +x is the patient's right, +y anterior, +z superior.
        assert c["kidney_right"][0] > spine[0] + 30 > spine[0] - 30 > c["kidney_left"][0]
        assert c["lung_right"][0] > spine[0] > c["lung_left"][0]
        assert c["liver"][0] > spine[0] > c["spleen"][0]
        assert c["aorta"][1] > spine[1] and c["aorta"][0] < spine[0]  # anterior, and to the left
        assert c["heart"][2] > c["liver"][2] > c["kidney_right"][2] and c["lung_left"][2] > c["kidney_left"][2]


def test_ct_vertebra_is_brighter_than_soft_tissue(cases):
    for p in cases:
        bone = np.median(p.image[p.label == 9])
        for name in ("body_wall", "liver", "spleen", "kidney_left", "aorta", "heart"):
            value = next(v for v, n in STRUCTURES.items() if n == name)
            assert bone > np.median(p.image[p.label == value]) + 100, name
        assert np.median(p.image[p.label == 0]) < -900  # air outside the body, in HU


def _intensity_only_dice(train, test, bins=128):
    """Fit per-class intensity histograms, predict each voxel's most probable class; per-class Dice."""
    values = np.concatenate([p.image.ravel() for p in train])
    edges = np.linspace(*np.percentile(values, [0.1, 99.9]), bins + 1)
    counts = np.zeros((len(STRUCTURES), bins))
    for p in train:  # counts ∝ p(intensity | class) p(class): the argmax is the maximum posterior
        np.add.at(counts, (p.label.ravel(), np.clip(np.digitize(p.image.ravel(), edges) - 1, 0, bins - 1)), 1)
    pred = counts.argmax(0)[np.clip(np.digitize(test.image.ravel(), edges) - 1, 0, bins - 1)]
    truth = test.label.ravel()
    return {name: 2 * np.sum((pred == v) & (truth == v)) / (np.sum(pred == v) + np.sum(truth == v))
            for v, name in STRUCTURES.items() if v}


@pytest.mark.parametrize("modality", ["ct", "mr"])
def test_intensity_alone_does_not_solve_the_labels(modality):
    config = PhantomConfig(size=48, modality=modality)
    dice = _intensity_only_dice([make_phantom(n, 0, config) for n in range(2)], make_phantom(0, 1, config))
    mean = float(np.mean(list(dice.values())))
    rounded = {k: round(float(v), 2) for k, v in dice.items()}
    print(f"intensity-only mean foreground Dice ({modality}, 48³): {mean:.3f}", rounded)
    assert mean <= 0.5
    if modality == "ct":  # the classifier is competent where intensity does carry the label
        assert dice["fat"] > 0.6 and dice["vertebra"] > 0.6
        assert min(dice["kidney_left"], dice["kidney_right"]) < 0.1  # same tissue: only the side tells


def test_cohort__byte_identical_files_and_manifest(tmp_path):
    config = PhantomConfig(size=32, modality="mr")
    first = write_phantom_cohort(tmp_path / "a", cases=2, seed=4, config=config)
    second = write_phantom_cohort(tmp_path / "b", cases=2, seed=4, config=config)
    other = write_phantom_cohort(tmp_path / "c", cases=1, seed=5, config=config)
    for kind in ("labelsTr", "imagesTr"):
        for name in ("case_000.nii.gz", "case_001.nii.gz"):
            data = (first / kind / name).read_bytes()
            assert data == (second / kind / name).read_bytes()
            assert data[4:8] == b"\0\0\0\0"  # gzip mtime 0: no time stamp in the file
    assert (first / "labelsTr/case_000.nii.gz").read_bytes() != (other / "labelsTr/case_000.nii.gz").read_bytes()

    manifest = json.loads((first / "dataset.json").read_text())
    assert manifest["modality"] == {"0": "MR"} and manifest["numTraining"] == 2
    assert manifest["labels"] == {str(k): v for k, v in STRUCTURES.items()}
    assert manifest["training"][1] == {"image": "./imagesTr/case_001.nii.gz", "label": "./labelsTr/case_001.nii.gz"}
    assert manifest["s2dc"]["seed"] == 4 and manifest["s2dc"]["size"] == 32 and manifest["s2dc"]["modality"] == "mr"
    label = read_image(first / "labelsTr/case_001.nii.gz")
    expected = make_phantom(1, 4, config)
    assert np.array_equal(label.array, expected.label) and label.array.dtype == np.uint8
    assert np.allclose(label.affine, expected.affine)
    assert read_image(first / "imagesTr/case_001.nii.gz").array.dtype == np.float32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # no temporary folders left


def test_cohort__refuses_a_non_empty_folder_and_fills_an_empty_one(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        write_phantom_cohort(out, cases=1, config=PhantomConfig(size=32))
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (write_phantom_cohort(empty, cases=1, config=PhantomConfig(size=32)) / "dataset.json").exists()


def test_cohort__failure_leaves_nothing_behind(tmp_path, monkeypatch):
    real = phantoms.make_phantom

    def failing(case_index, seed, config):
        if case_index == 1:
            raise RuntimeError("disk full")
        return real(case_index, seed, config)

    monkeypatch.setattr(phantoms, "make_phantom", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        write_phantom_cohort(tmp_path / "out", cases=2, config=PhantomConfig(size=32))
    assert list(tmp_path.iterdir()) == []


def test_cohort_preview_png(tmp_path):
    out = write_phantom_cohort(tmp_path / "c", cases=1, config=PhantomConfig(size=32), preview=True)
    png = Image.open(out / "preview" / "case_000.png").convert("RGB")
    # Three 256-px panels (isotropic 400 mm cube), 6-px gaps, a title row, and a 3-row legend for 12 labels.
    assert png.size == (3 * 256 + 4 * 6, 14 + 256 + 2 * 6 + 3 * 14)
    pixels = np.asarray(png).reshape(-1, 3)
    assert pixels.std() > 20 and len(np.unique(pixels, axis=0)) > 500
    assert any(np.all(pixels == colour(9), axis=1))  # the legend's vertebra swatch


@pytest.mark.parametrize("flip", [False, True])
def test_preview__radiological_orientation_and_physical_aspect(tmp_path, flip):
    """A marker on the patient's right shows on the image's left, whatever the voxel order."""
    image = np.zeros((20, 20, 8), np.float32)
    label = np.zeros((20, 20, 8), np.uint8)
    label[15:19, 8:12, 2:6] = 3  # high i = patient's right with an RAS affine
    affine = np.diag([2.0, 2.0, 5.0, 1.0])
    if flip:  # the same physical volume stored LPS-like (i flipped)
        image, label = image[::-1], label[::-1]
        affine = affine @ np.array([[-1, 0, 0, 19], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    png = save_montage(tmp_path / "m.png", image, label, affine=affine, window=(0, 1), panel_px=100)
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    axial = rgb[14:14 + 100, 6:6 + 100]
    cols = np.flatnonzero(np.any(np.abs(axial - np.asarray(colour(3)) * 0.4).sum(-1) < 6, axis=0))
    assert cols.size and cols.max() < 50  # left half of the axial panel
    # 40 mm × 40 mm × 40 mm: the coronal panel is as tall as wide despite 8 slices of 5 mm.
    assert Image.open(png).size[0] == 3 * 100 + 4 * 6


def test_anisotropic_grid_has_thick_slices():
    p = make_phantom(0, 0, PhantomConfig(size=40, anisotropic=True))
    assert p.image.shape == (40, 40, 16)
    spacing = np.linalg.norm(p.affine[:3, :3], axis=0)
    assert np.allclose(spacing, [10.0, 10.0, 25.0])


def test_canonical_correspondence_round_trip_and_across_cases():
    a, b = (make_phantom(n, 2, PhantomConfig(size=40, anisotropic=n == 1)) for n in range(2))
    rng = np.random.default_rng(0)
    voxels = rng.uniform(0, 39, (200, 3)) * [1, 1, 15 / 39]
    canonical = voxel_to_canonical(a.geometry, voxels)
    assert np.abs(canonical_to_voxel(a.geometry, canonical) - voxels).max() < 1e-4
    grid = canonical_grid(a.geometry)
    idx = np.round(voxels).astype(int)
    assert np.abs(grid[:, idx[:, 0], idx[:, 1], idx[:, 2]].T - voxel_to_canonical(a.geometry, idx)).max() < 1e-2
    # The same canonical point is the same anatomy: organ centroids agree in canonical space within
    # each case's own organ jitter, and each is nearest its own counterpart.
    # (The spleen is left out: its size varies ×0.6–1.6, which moves its centroid by up to ~4 cm.)
    values = (5, 7, 8, 12)  # liver, kidneys, heart: whole organs, inside every field of view
    ca, cb = ({v: voxel_to_canonical(p.geometry, np.argwhere(p.label == v)).mean(0) for v in values} for p in (a, b))
    for v in values:
        distances = {w: np.linalg.norm(ca[v] - cb[w]) for w in values}
        assert distances[v] < 30 and min(distances, key=distances.get) == v, (v, distances)
