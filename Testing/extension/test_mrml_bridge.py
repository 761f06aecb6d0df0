"""MRML bridge on real MRML (slicer-core): volume geometry round trips, transforms, vector volumes,
labelmap ↔ segmentation with names, colours, terminology and reference geometry, overlays."""

from __future__ import annotations

import numpy as np
import pytest
import slicer
import vtk

from S2DCExtensionLib import MRMLBridge, Segmentations, VolumeFiles
from S2DCExtensionLib.MRMLBridge import BridgeError

SHAPE = (7, 6, 5)


def _volume(scene, affine, dtype=np.int16, name="input"):
    array = np.random.default_rng(1).integers(-500, 500, SHAPE).astype(dtype)
    return array, MRMLBridge.addVolume(scene, array, affine, name)


def _linear_transform(scene, matrix):
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "T")
    node.SetMatrixTransformToParent(MRMLBridge.matrixFromArray(matrix))
    return node


def test_volume_round_trip_keeps_voxels_and_geometry(scene, geometry):
    name, affine = geometry  # RAS, LPS, oblique and anisotropic grids (Testing/conftest.py)
    array, node = _volume(scene, affine)
    # Slicer's own view of the node: [k, j, i] arrays and an IJK-to-RAS matrix equal to the affine.
    assert slicer.util.arrayFromVolume(node).shape == SHAPE[::-1]
    assert slicer.util.arrayFromVolume(node)[4, 3, 2] == array[2, 3, 4]
    assert tuple(node.GetImageData().GetDimensions()) == SHAPE
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    np.testing.assert_allclose(matrix.MultiplyPoint([2, 3, 4, 1]), affine @ [2, 3, 4, 1], atol=1e-9)
    back, back_affine = MRMLBridge.volumeToArray(node)
    assert back.dtype == array.dtype and np.array_equal(back, array), name
    np.testing.assert_allclose(back_affine, affine, atol=1e-9)
    assert back.flags.writeable and not np.shares_memory(back, slicer.util.arrayFromVolume(node))


def test_nifti_exchange_keeps_the_geometry_the_core_reads(scene, geometry, tmp_path):
    from S2DCCore.io.image import read_image

    _, affine = geometry
    array, node = _volume(scene, affine)
    path = VolumeFiles.writeVolumeFile(tmp_path / "v.nii", *MRMLBridge.volumeToArray(node))
    image = read_image(path)  # the core's reader, as the worker uses it
    assert np.array_equal(image.array, array)
    np.testing.assert_allclose(image.affine, affine, atol=1e-5)
    again, again_affine = VolumeFiles.readVolumeFile(path)
    assert np.array_equal(again, array) and np.allclose(again_affine, affine, atol=1e-5)


def test_linear_parent_transform_is_hardened_and_outputs_follow_the_input(scene, geometry):
    _, affine = geometry
    array, node = _volume(scene, affine)
    rotation = np.eye(4)
    rotation[:3, :3] = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    rotation[:3, 3] = [10.0, -4.0, 2.5]
    transform = _linear_transform(scene, rotation)
    node.SetAndObserveTransformNodeID(transform.GetID())
    _, world = MRMLBridge.volumeToArray(node)
    np.testing.assert_allclose(world, rotation @ affine, atol=1e-9)
    np.testing.assert_allclose(MRMLBridge.ijkToRas(node), affine, atol=1e-9)  # the input is untouched
    output = MRMLBridge.addVolumeLike(scene, array.astype(np.float32), node, "out")
    assert output.GetParentTransformNode() is transform
    np.testing.assert_allclose(MRMLBridge.ijkToWorld(output), rotation @ affine, atol=1e-9)
    with pytest.raises(BridgeError, match="differs"):
        MRMLBridge.addVolumeLike(scene, array[:-1], node, "wrong")


def test_non_linear_transforms_and_sheared_affines_are_refused(scene):
    _, node = _volume(scene, np.eye(4))
    grid = scene.AddNewNodeByClass("vtkMRMLTransformNode", "warp")
    grid.SetAndObserveTransformToParent(vtk.vtkThinPlateSplineTransform())
    node.SetAndObserveTransformNodeID(grid.GetID())
    with pytest.raises(BridgeError, match="non-linear transform"):
        MRMLBridge.volumeToArray(node)
    sheared = np.eye(4)
    sheared[0, 1] = 0.5
    with pytest.raises(BridgeError, match="sheared"):
        MRMLBridge.addVolume(scene, np.zeros(SHAPE), sheared, "s")
    with pytest.raises(BridgeError, match="zero voxel size"):
        MRMLBridge.checkAffine(np.diag([1.0, 0.0, 1.0, 1.0]))


def test_pca_rgb_becomes_a_three_component_vector_volume(scene, geometry):
    _, affine = geometry
    _, reference = _volume(scene, affine)
    rgb = np.random.default_rng(2).integers(0, 256, (*SHAPE, 3)).astype(np.uint8)
    node = MRMLBridge.addVolumeLike(scene, rgb, reference, "pca", "vtkMRMLVectorVolumeNode")
    assert node.IsA("vtkMRMLVectorVolumeNode") and node.GetImageData().GetNumberOfScalarComponents() == 3
    assert node.GetDisplayNode().IsA("vtkMRMLVectorVolumeDisplayNode")
    back, back_affine = MRMLBridge.volumeToArray(node)
    assert back.shape == (*SHAPE, 3) and np.array_equal(back, rgb)
    np.testing.assert_allclose(back_affine, affine, atol=1e-9)


def test_labelmap_becomes_segments_with_names_colours_terminology_and_reference(scene, geometry):
    _, affine = geometry
    array, volume = _volume(scene, affine)
    before = slicer.util.arrayFromVolume(volume).copy()
    labels = np.zeros(SHAPE, dtype=np.int32)
    labels[1:4, 1:3, 0:2] = 5
    labels[5, 4, 3] = 7
    labels[0, 5, 4] = 9  # not in the table: a generic name and colour
    entries = [Segmentations.LabelEntry(5, "liver", (192, 104, 88)), Segmentations.LabelEntry(6, "kidney_left", (0, 0, 255)),
               Segmentations.LabelEntry(7, "structure 7", (10, 20, 30))]
    segmentation = Segmentations.labelmapToSegmentation(scene, labels, entries, volume)
    info = Segmentations.segmentInfo(segmentation)
    assert [name for _, name, _ in info] == ["liver", "kidney_left", "structure 7", "label 9"]
    assert [colour for _, _, colour in info][:3] == [(192, 104, 88), (0, 0, 255), (10, 20, 30)]
    tag = vtk.reference("")
    segment = segmentation.GetSegmentation().GetSegment(info[1][0])
    assert segment.GetTag(segment.GetTerminologyEntryTagName(), tag) and "SCT^64033007^Kidney~SCT^7771000^Left" in str(tag)
    role = segmentation.GetReferenceImageGeometryReferenceRole()
    assert segmentation.GetNodeReference(role) is volume
    back = Segmentations.segmentsToLabels(scene, segmentation, volume)
    expected = np.select([labels == 5, labels == 7, labels == 9], [1, 3, 4], 0)
    assert np.array_equal(back, expected)  # kidney_left (absent) is an empty segment
    assert np.array_equal(slicer.util.arrayFromVolume(volume), before)  # the input is never modified
    assert scene.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems() == 0  # no temporary nodes left


def test_an_existing_segmentation_is_replaced_in_place(scene):
    _, volume = _volume(scene, np.diag([2.0, 2.0, 3.0, 1.0]))
    labels = np.zeros(SHAPE, dtype=np.int32)
    labels[2, 2, 2] = 1
    target = Segmentations.labelmapToSegmentation(scene, labels, [Segmentations.LabelEntry(1, "a", (1, 2, 3))], volume)
    count = scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    labels[3, 3, 3] = 2
    again = Segmentations.labelmapToSegmentation(scene, labels, [Segmentations.LabelEntry(2, "b", (4, 5, 6))], volume,
                                                 segmentationNode=target)
    assert again is target and scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == count
    assert [name for _, name, _ in Segmentations.segmentInfo(target)] == ["label 1", "b"]


def test_segments_of_a_segmentation_under_another_transform_are_refused(scene):
    _, volume = _volume(scene, np.eye(4))
    labels = np.zeros(SHAPE, dtype=np.int32)
    labels[1, 1, 1] = 1
    segmentation = Segmentations.labelmapToSegmentation(scene, labels, [], volume)
    segmentation.SetAndObserveTransformNodeID(_linear_transform(scene, np.eye(4)).GetID())
    with pytest.raises(BridgeError, match="different transforms"):
        Segmentations.segmentsToLabels(scene, segmentation, volume)


def test_similarity_overlay_colour_map_foreground_and_seed_point(scene):
    _, volume = _volume(scene, np.eye(4))
    similarity = MRMLBridge.addVolumeLike(scene, np.linspace(-1, 1, np.prod(SHAPE)).reshape(SHAPE), volume, "sim")
    colour = MRMLBridge.setColorMap(similarity, scene, (-0.2, 1.0))
    display = similarity.GetDisplayNode()
    assert colour in MRMLBridge.SIMILARITY_COLOR_NODE_IDS and display.GetColorNodeID() == colour
    assert display.GetWindowLevelMin() == pytest.approx(-0.2) and display.GetWindowLevelMax() == pytest.approx(1.0)
    assert MRMLBridge.showInSliceViews(scene, background=volume, foreground=similarity, opacity=0.4) == 1
    composite = scene.GetFirstNodeByClass("vtkMRMLSliceCompositeNode")
    assert composite.GetForegroundVolumeID() == similarity.GetID() and composite.GetBackgroundVolumeID() == volume.GetID()
    assert composite.GetForegroundOpacity() == pytest.approx(0.4)
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "seed")
    with pytest.raises(BridgeError, match="place a point"):
        MRMLBridge.pointWorld(points)
    points.AddControlPoint(1.0, 2.0, 3.0)
    shift = np.eye(4)
    shift[:3, 3] = [10.0, 0.0, 0.0]
    points.SetAndObserveTransformNodeID(_linear_transform(scene, shift).GetID())
    assert MRMLBridge.pointWorld(points) == pytest.approx((11.0, 2.0, 3.0))  # world RAS, as the core expects
