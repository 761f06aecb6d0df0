"""``embed``: features on an explicit coarser grid, overlays on the input's exact grid.

A network-free encoder (block means of the normalised intensity) makes the expected values known:
on a linear ramp each token equals the ramp at the token's centre given by the feature-grid affine
(which checks the (s − 1)/2 shift), and on a sharp ball the overlays must separate the ball from the
rest at every voxel farther than one token from its surface, for the four geometries and two formats.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from S2DCCore.errors import UsageError
from S2DCCore.inference.embed import embed
from S2DCCore.inference.embed_io import write_embedding
from S2DCCore.geometry import strided_grid
from S2DCCore.io.image import Image, read_image, write_image
from testdata import make_affine


def test_features_sit_at_their_token_centres(geometry, mean_encoder, helpers):
    kind, affine = geometry
    shape = (40, 36, 32)
    slope = np.array([0.5, -0.3, 0.8])  # HU per mm: a linear ramp, so a block mean is the centre's value
    ras = helpers.voxel_centres(shape, affine)
    ramp = (ras @ slope).astype(np.float32)
    low, high = -200.0, 200.0
    model = mean_encoder
    model.card["preprocess"]["ct_window"] = [low, high]
    result = embed(Image(ramp, affine), model, pca=False, stage=1)
    grid = result.feature_grid
    assert result.stride == 4 and grid.shape == tuple(int(np.ceil(n / 4)) for n in result.model_grid.shape)
    np.testing.assert_allclose(grid.affine, strided_grid(result.model_grid, 4, grid.shape).affine)
    centres = helpers.voxel_centres(grid.shape, grid.affine)
    expected = (centres @ slope - low) / (high - low)
    # The last token of an axis may reach past the model grid into the zero padding.
    inner = tuple(slice(0, n - 1) for n in grid.shape)
    np.testing.assert_allclose(result.features[..., 0][inner], expected[inner], atol=1e-5)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_overlays_are_right_on_the_input_grid(tmp_path, geometry, suffix, mean_encoder, helpers):
    kind, affine = geometry
    f, centre = helpers.cone_volume(affine)
    ball = np.where(f > -2.0, 50.0, -50.0).astype(np.float32)  # a 12 mm ball: inside → 1, outside → 0
    path = write_image(tmp_path / f"image{suffix}", ball, affine)
    result = embed(path, mean_encoder, pca=True, clusters=2, point=tuple(centre), stage=0)
    files = write_embedding(tmp_path / "out", result)

    token_mm = result.stride * max(helpers.model_spacing) * np.sqrt(3)  # one token's diagonal
    distance = helpers.radius + 2.0 - f  # mm from the ball's centre
    inside, outside = distance < 12.0 - token_mm, distance > 12.0 + token_mm
    assert inside.sum() > 20 and outside.sum() > 1000

    for name in ("structures.nii.gz", "similarity.nii.gz"):
        back = read_image(files[name])
        assert back.shape == ball.shape
        np.testing.assert_allclose(back.affine, affine, atol=1e-5)
    structures = read_image(files["structures.nii.gz"]).array
    similarity = read_image(files["similarity.nii.gz"]).array
    assert len(np.unique(structures[inside])) == 1 and len(np.unique(structures[outside])) == 1
    assert structures[inside][0] != structures[outside][0]
    assert similarity[inside].min() > 0.9 and similarity[outside].max() < 0.1

    rgb = nib.load(str(files["pca_rgb.nii.gz"]))
    assert rgb.shape == ball.shape + (1, 3) and rgb.get_data_dtype() == np.uint8
    assert rgb.header.get_intent()[0] == "vector"
    np.testing.assert_allclose(rgb.affine, affine, atol=1e-5)
    red = np.asarray(rgb.dataobj)[:, :, :, 0, 0].astype(int)
    assert abs(red[inside].mean() - red[outside].mean()) > 200  # the first component is inside vs outside
    manifest = json.loads(files["embedding.json"].read_text())
    assert manifest["stage"] == 0 and manifest["clusters"] == 2


def test_encoder_directory_uses_its_token_stage(tmp_path, model_dirs, helpers):
    import S2DCCore

    affine = np.diag([-1.5, 1.5, 2.0, 1.0])
    f, centre = helpers.cone_volume(affine, shape=(30, 28, 20))
    result = S2DCCore.embed(Image(f * 20, affine), model_dirs["encoder"], clusters=3, point=tuple(centre), roi=32)
    assert result.stage == 1 and result.stride == 4 and result.features.shape[-1] == 24
    assert result.pca_rgb.shape == f.shape + (3,) and set(np.unique(result.structures)) <= {1, 2, 3}
    assert np.all(np.abs(result.similarity) <= 1.0)
    files = write_embedding(tmp_path / "out", result)
    with np.load(files["embeddings.npz"], allow_pickle=False) as npz:
        assert npz["features"].shape == result.feature_grid.shape + (24,)
        np.testing.assert_allclose(npz["affine"], result.feature_grid.affine)
        np.testing.assert_allclose(npz["input_affine"], affine)
        assert int(npz["stride"]) == 4


def test_segmenter_directory_embeds_at_stage_2(loaded_models, helpers):
    f, _ = helpers.cone_volume(np.eye(4), shape=(24, 24, 24))
    result = embed(Image(f, np.eye(4)), loaded_models["segmenter"], pca=False, roi=32)
    assert result.stage == 2 and result.stride == 8 and result.features.shape[-1] == 48
    assert np.all(np.isfinite(result.features))


def test_point_outside_the_image_and_bad_output_folder(tmp_path, mean_encoder):
    image = Image(np.zeros((10, 10, 10), np.float32), np.eye(4))
    with pytest.raises(UsageError, match="lies outside the image"):
        embed(image, mean_encoder, point=(50.0, 0.0, 0.0))
    result = embed(image, mean_encoder, pca=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(UsageError, match="not empty"):
        write_embedding(tmp_path / "full", result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]  # no temporary folder left behind


def test_slicer_loads_pca_rgb_as_a_vector_volume(tmp_path, mean_encoder, helpers):
    slicer_core = pytest.importorskip("slicer_core")
    vtk = pytest.importorskip("vtk")
    from vtk.util.numpy_support import vtk_to_numpy

    affine = make_affine("oblique")
    f, _ = helpers.cone_volume(affine, shape=(20, 18, 16))
    result = embed(Image(f, affine), mean_encoder, pca=True)
    files = write_embedding(tmp_path / "out", result)
    scene = slicer_core.vtkMRMLScene()
    node = slicer_core.vtkMRMLVectorVolumeNode()
    scene.AddNode(node)
    storage = slicer_core.vtkMRMLVolumeArchetypeStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(files["pca_rgb.nii.gz"]))
    assert storage.ReadData(node) == 1
    data = node.GetImageData()
    assert data.GetNumberOfScalarComponents() == 3 and data.GetScalarTypeAsString() == "unsigned char"
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    np.testing.assert_allclose([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], affine, atol=1e-4)
    voxels = vtk_to_numpy(data.GetPointData().GetScalars()).reshape(16, 18, 20, 3)  # [k, j, i, rgb]
    np.testing.assert_array_equal(voxels.transpose(2, 1, 0, 3), result.pca_rgb)
