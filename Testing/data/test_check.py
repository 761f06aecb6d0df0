"""``s2dc check``: every bad file is named with its problem, good ones are summarised, nothing crashes."""

from __future__ import annotations

import json

import numpy as np

from S2DCCore.data.check import check_cohort
from S2DCCore.data.cohort import load_cohort
from S2DCCore.io.image import write_image
from testdata import make_affine

AFFINE = make_affine("anisotropic")


def _good(folder, name, shape=(8, 9, 6)):
    image = write_image(folder / "imagesTr" / f"{name}.nii.gz", np.linspace(-100, 200, np.prod(shape),
                        dtype=np.float32).reshape(shape), AFFINE)
    label = np.zeros(shape, np.uint8)
    label[2:5, 2:5, 1:4] = 1
    write_image(folder / "labelsTr" / f"{name}.nii.gz", label, AFFINE)
    return image


def _bad_cohort(tmp_path):
    """A Decathlon cohort with one good case and each kind of bad file the issue names."""
    root = tmp_path / "cohort"
    _good(root, "good")
    images, labels = root / "imagesTr", root / "labelsTr"
    good_bytes = (images / "good.nii.gz").read_bytes()
    (images / "truncated.nii.gz").write_bytes(good_bytes[: len(good_bytes) // 2])
    (images / "text.nii.gz").write_text("this is not an image\n")
    write_image(images / "flat.nii.gz", np.zeros((8, 9), np.float32), np.eye(4))
    write_image(images / "series.nii.gz", np.zeros((8, 9, 6, 3), np.float32), np.eye(4))
    write_image(images / "nans.nii.gz", np.full((8, 9, 6), np.nan, np.float32), AFFINE)
    _good(root, "mismatch")
    write_image(labels / "mismatch.nii.gz", np.zeros((8, 9, 7), np.uint8), AFFINE, overwrite=True)
    names = ["good", "truncated", "text", "flat", "series", "nans", "mismatch"]
    training = [{"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"} for n in ("good", "mismatch")]
    training += [{"image": f"./imagesTr/{n}.nii.gz"} for n in names if n not in ("good", "mismatch")]
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "organ"},
                                                   "training": training}))
    return root


def test_each_bad_file_is_named_with_its_problem(tmp_path):
    report = check_cohort(_bad_cohort(tmp_path))
    problems = {p.path.name: p.problem for p in report.problems}
    assert not report.ok
    assert set(problems) == {"truncated.nii.gz", "text.nii.gz", "flat.nii.gz", "series.nii.gz", "nans.nii.gz",
                             "mismatch.nii.gz"}
    assert "truncated" in problems["truncated.nii.gz"] or "corrupt" in problems["truncated.nii.gz"]
    assert "NIfTI" in problems["text.nii.gz"]
    assert problems["flat.nii.gz"].startswith("2-D image")
    assert problems["series.nii.gz"].startswith("4-D image")
    assert problems["nans.nii.gz"] == "all voxels are NaN or infinite"
    assert "label shape (8, 9, 7) differs from image shape (8, 9, 6)" == problems["mismatch.nii.gz"]
    # The mismatched label's path is the one named, not its (good) image.
    assert any(p.path.parent.name == "labelsTr" for p in report.problems)


def test_good_case_row(tmp_path):
    root = tmp_path / "c"
    _good(root, "a")
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "bg", "1": "organ"},
                                                   "training": [{"image": "imagesTr/a.nii.gz",
                                                                 "label": "labelsTr/a.nii.gz"}]}))
    report = check_cohort(root)
    assert report.ok
    (row,) = report.rows
    assert row.shape == (8, 9, 6) and row.orientation == "RAS" and row.label_values == (0, 1)
    np.testing.assert_allclose(row.spacing, (0.7, 0.7, 3.0))
    assert row.intensity_range == (-100.0, 200.0)


def test_label_values_outside_the_declared_labels(tmp_path):
    root = tmp_path / "c"
    _good(root, "a")
    write_image(root / "labelsTr" / "a.nii.gz", np.full((8, 9, 6), 5, np.uint8), AFFINE, overwrite=True)
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "bg", "1": "organ"},
                                                   "training": [{"image": "imagesTr/a.nii.gz",
                                                                 "label": "labelsTr/a.nii.gz"}]}))
    (problem,) = check_cohort(root).problems
    assert problem.problem == "label values [5] are not in dataset.json 'labels'"


def test_label_on_another_grid(tmp_path):
    root = tmp_path / "c"
    _good(root, "a")
    write_image(root / "labelsTr" / "a.nii.gz", np.zeros((8, 9, 6), np.uint8), make_affine("ras"), overwrite=True)
    (root / "dataset.json").write_text(json.dumps({"training": [{"image": "imagesTr/a.nii.gz",
                                                                 "label": "labelsTr/a.nii.gz"}]}))
    (problem,) = check_cohort(root).problems
    assert "affine" in problem.problem


def test_plain_folder_is_an_unlabeled_cohort(tmp_path):
    write_image(tmp_path / "x" / "a.nii.gz", np.zeros((4, 4, 4), np.float32), np.eye(4))
    write_image(tmp_path / "x" / "sub" / "b.nrrd", np.zeros((4, 4, 4), np.float32), np.eye(4))
    (tmp_path / "x" / "notes.txt").write_text("ignored")
    cohort = load_cohort(tmp_path / "x")
    assert [c.name for c in cohort.cases] == ["a", "b"]
    assert all(c.label is None for c in cohort.cases)


def test_missing_folder_and_bad_manifest_are_problems_not_crashes(tmp_path):
    report = check_cohort(tmp_path / "nope")
    assert not report.ok and "not a folder" in report.problems[0].problem
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "dataset.json").write_text("{not json")
    report = check_cohort(tmp_path / "bad")
    assert report.problems[0].path.name == "dataset.json" and "not valid JSON" in report.problems[0].problem
