"""Geometry round trips: write → read keeps shape, values and the voxel→RAS affine (1e-6)."""

from __future__ import annotations

import nibabel as nib
import nrrd
import numpy as np
import pytest

from testdata import make_affine, write_dicom_series
from S2DCCore.errors import UsageError
from S2DCCore.io.image import read_image, write_image


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd"])
def test_round_trip_keeps_affine_shape_and_values(tmp_path, geometry, suffix):
    kind, affine = geometry
    array = np.random.default_rng(1).normal(size=(7, 9, 5)).astype(np.float32)
    path = write_image(tmp_path / f"{kind}{suffix}", array, affine)
    back = read_image(path)
    assert back.shape == array.shape
    np.testing.assert_allclose(back.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(back.array, array)


def test_nrrd_is_written_in_lps_like_slicer(tmp_path):
    affine = make_affine("ras")
    path = write_image(tmp_path / "x.nrrd", np.zeros((3, 4, 5), np.uint8), affine)
    header = nrrd.read_header(str(path))
    assert header["space"] == "left-posterior-superior"
    # RAS origin (-20, -30, 10) is LPS (20, 30, 10).
    np.testing.assert_allclose(header["space origin"], [20.0, 30.0, 10.0])
    np.testing.assert_allclose(header["space directions"], np.diag([-1.0, -1.0, 1.0]))


def test_nrrd_in_ras_space_and_voxel_to_world_point(tmp_path):
    # A file written by another tool in RAS space: the voxel (1, 2, 3) must land where the header says.
    directions = np.array([[0.0, 2.0, 0.0], [-1.5, 0.0, 0.0], [0.0, 0.0, 3.0]])  # rows = axis vectors
    origin = np.array([10.0, -4.0, 7.0])
    nrrd.write(str(tmp_path / "ras.nrrd"), np.zeros((4, 5, 6), np.int16),
               {"space": "right-anterior-superior", "space directions": directions, "space origin": origin})
    image = read_image(tmp_path / "ras.nrrd")
    expected = origin + 1 * directions[0] + 2 * directions[1] + 3 * directions[2]
    np.testing.assert_allclose((image.affine @ [1, 2, 3, 1])[:3], expected)


def test_nifti_matches_nibabel_world_coordinates(tmp_path, geometry):
    _, affine = geometry
    path = write_image(tmp_path / "a.nii.gz", np.zeros((4, 5, 6), np.float32), affine)
    np.testing.assert_allclose(nib.load(str(path)).affine, affine, atol=1e-6)
    header = nib.load(str(path)).header
    assert int(header["sform_code"]) == 1 and int(header["qform_code"]) == 1


def test_seg_nrrd_label_names_round_trip(tmp_path):
    label = np.zeros((6, 6, 6), np.uint8)
    label[1:3, 1:3, 1:3], label[4:, 4:, 4:] = 3, 7
    path = write_image(tmp_path / "s.seg.nrrd", label, make_affine("lps"), label_names={3: "liver", 7: "spleen"})
    back = read_image(path)
    assert back.label_names == {3: "liver", 7: "spleen"}
    np.testing.assert_array_equal(back.array, label)


def test_multilayer_seg_nrrd_is_merged(tmp_path):
    layers = np.zeros((2, 4, 4, 4), np.uint8)  # Slicer's layered form: (layer, i, j, k)
    layers[0, :2] = 1
    layers[1, 2:] = 1
    header = {"space": "left-posterior-superior", "kinds": ["list", "domain", "domain", "domain"],
              "space directions": np.vstack([np.full(3, np.nan), np.eye(3)]), "space origin": [0.0, 0.0, 0.0],
              "Segment0_Name": "a", "Segment0_LabelValue": "1", "Segment0_Layer": "0",
              "Segment1_Name": "b", "Segment1_LabelValue": "1", "Segment1_Layer": "1"}
    nrrd.write(str(tmp_path / "m.seg.nrrd"), layers, header, index_order="F")
    back = read_image(tmp_path / "m.seg.nrrd")
    assert back.shape == (4, 4, 4)
    # Both segments use value 1 in their own layer; merged, they keep value 1 on their own halves.
    assert np.all(back.array[:2] == 1) and np.all(back.array[2:] == 1)


@pytest.mark.parametrize("kind", ["ras", "lps", "oblique", "anisotropic"])
def test_dicom_series_geometry(tmp_path, kind):
    affine = make_affine(kind)
    volume = np.random.default_rng(2).integers(-1000, 1000, size=(6, 5, 4)).astype(np.int16)
    write_dicom_series(tmp_path / "series", volume, affine)
    image = read_image(tmp_path / "series")
    np.testing.assert_allclose(image.affine, affine, atol=1e-4)  # DICOM decimal strings keep ~16 digits
    np.testing.assert_array_equal(image.array, volume)
    assert image.orientation == "".join(nib.aff2axcodes(affine))


def test_write_refuses_to_overwrite_and_leaves_no_temp_files(tmp_path):
    path = write_image(tmp_path / "a.nii.gz", np.ones((3, 3, 3), np.float32), np.eye(4))
    before = path.read_bytes()
    with pytest.raises(UsageError, match="refusing to overwrite"):
        write_image(path, np.zeros((3, 3, 3), np.float32), np.eye(4))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz"]


def test_write_unsupported_suffix(tmp_path):
    with pytest.raises(UsageError, match="cannot write"):
        write_image(tmp_path / "a.png", np.zeros((3, 3, 3)), np.eye(4))
    assert not list(tmp_path.iterdir())
