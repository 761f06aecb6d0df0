"""Volume nodes ↔ core arrays, with their geometry (Qt-free: MRML, VTK and numpy only).

Conventions on the two sides of the bridge:

* **core** (S2DCCore, nibabel): an array indexed ``[i, j, k]`` (plus a trailing component axis for
  vectors) and a 4×4 voxel → RAS affine;
* **Slicer**: ``slicer.util.arrayFromVolume`` is indexed ``[k, j, i]`` and the node's
  ``GetIJKToRASMatrix`` maps voxels to the node's *local* RAS frame; parent transforms map local to world.

So ``core_array = slicer_array.transpose(2, 1, 0)`` and the affine is the IJK-to-RAS matrix. The core
always sees the **world** geometry: a linear parent transform is hardened into the affine, a non-linear
one is refused. Outputs are computed on the input's voxel grid, so output nodes take the input's local
IJK-to-RAS matrix and its parent transform: they stay on the input wherever the user moves it.

Every function takes the scene (or a node) explicitly, so the same code runs in desktop Slicer and in
the ``slicer-core`` wheel used by the tests.
"""

from __future__ import annotations

import logging

import numpy as np
import slicer
import vtk

log = logging.getLogger(__name__)
# Column-orthogonality tolerance of an IJK-to-RAS matrix (|cos| between direction columns).
ORTHOGONALITY_TOLERANCE = 1e-4
# Colour maps for a similarity overlay, best first (desktop Slicer has the first; slicer-core the last).
SIMILARITY_COLOR_NODE_IDS = (
    "vtkMRMLColorTableNodeFileColdToHotRainbow.txt",
    "vtkMRMLColorTableNodeFileViridis.txt",
    "vtkMRMLColorTableNodeRainbow",
)


class BridgeError(ValueError):
    """A node cannot be converted (the message is meant for the user)."""


def arrayFromMatrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    """(4, 4) float64 copy of a VTK matrix."""
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def matrixFromArray(array: np.ndarray) -> vtk.vtkMatrix4x4:
    """VTK matrix from a (4, 4) array."""
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def ijkToRas(volumeNode) -> np.ndarray:
    """(4, 4) the node's own IJK → RAS matrix (local frame, parent transforms not applied)."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return arrayFromMatrix(matrix)


def parentToWorld(node) -> np.ndarray:
    """(4, 4) local → world matrix of ``node``'s parent transforms (identity without one).

    Raises:
        BridgeError: a parent transform is not linear (it cannot be written into an affine).
    """
    transformNode = node.GetParentTransformNode()
    if transformNode is None:
        return np.eye(4)
    if not transformNode.IsTransformToWorldLinear():
        raise BridgeError(f"'{node.GetName()}' is under a non-linear transform ('{transformNode.GetName()}'). "
                          "Harden the transform (Data module: right-click → Harden transform) and try again.")
    matrix = vtk.vtkMatrix4x4()
    transformNode.GetMatrixTransformToWorld(matrix)
    return arrayFromMatrix(matrix)


def ijkToWorld(volumeNode) -> np.ndarray:
    """(4, 4) IJK → world RAS: the affine the core sees (linear parent transforms hardened)."""
    return parentToWorld(volumeNode) @ ijkToRas(volumeNode)


def checkAffine(affine: np.ndarray) -> np.ndarray:
    """``affine`` as float64 if it is a voxel → RAS matrix a volume node can hold, else `BridgeError`.

    A volume node stores spacing, origin and orthonormal directions, so the direction columns must be
    non-zero and mutually orthogonal (no shear).
    """
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise BridgeError(f"expected a finite 4×4 affine, got shape {affine.shape}")
    if not np.allclose(affine[3], [0, 0, 0, 1]):
        raise BridgeError("the affine's last row must be [0, 0, 0, 1]")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(spacing <= 0):
        raise BridgeError(f"the affine has a zero voxel size ({spacing.tolist()})")
    directions = affine[:3, :3] / spacing
    cosines = directions.T @ directions - np.eye(3)
    if np.abs(cosines).max() > ORTHOGONALITY_TOLERANCE:
        raise BridgeError("the affine is sheared (direction columns not orthogonal); a volume node cannot hold it")
    return affine


def toSlicerArray(array: np.ndarray) -> np.ndarray:
    """Core ``[i, j, k(, c)]`` → Slicer ``[k, j, i(, c)]`` (C-contiguous copy)."""
    axes = (2, 1, 0) if array.ndim == 3 else (2, 1, 0, 3)
    return np.ascontiguousarray(np.asarray(array).transpose(axes))


def toCoreArray(array: np.ndarray) -> np.ndarray:
    """Slicer ``[k, j, i(, c)]`` → core ``[i, j, k(, c)]`` (C-contiguous copy; the node is untouched)."""
    return toSlicerArray(array)  # the axis swap is its own inverse


def volumeToArray(volumeNode) -> tuple[np.ndarray, np.ndarray]:
    """A volume node as the core sees it.

    Args:
        volumeNode: a scalar, labelmap or vector volume node (never modified).

    Returns:
        (array, affine): the voxels as a copy, (X, Y, Z) or (X, Y, Z, C), and the (4, 4) IJK → world RAS
        affine with linear parent transforms hardened.

    Raises:
        BridgeError: no image data, or a non-linear parent transform.
    """
    if volumeNode is None or volumeNode.GetImageData() is None:
        raise BridgeError("the volume has no image data")
    affine = checkAffine(ijkToWorld(volumeNode))
    return toCoreArray(slicer.util.arrayFromVolume(volumeNode)), affine


def addVolume(scene, array: np.ndarray, ijkToRAS: np.ndarray, name: str,
              className: str = "vtkMRMLScalarVolumeNode", parentTransformNode=None,
              createDisplayNodes: bool = True):
    """A new volume node holding a core array.

    Args:
        scene: the MRML scene.
        array: (X, Y, Z) scalars/labels, or (X, Y, Z, C) components for a vector volume.
        ijkToRAS: (4, 4) voxel → RAS matrix of the node's own (local) frame.
        name: node name (made unique by the scene if needed).
        className: ``vtkMRMLScalarVolumeNode``, ``vtkMRMLLabelMapVolumeNode`` or ``vtkMRMLVectorVolumeNode``.
        parentTransformNode: transform node to place the new node under (e.g. the input's), or None.
        createDisplayNodes: False for temporary nodes that are removed again.

    Returns:
        The new node (its voxels are a copy of ``array``).
    """
    if array.ndim not in (3, 4):
        raise BridgeError(f"expected an (X, Y, Z) or (X, Y, Z, C) array, got shape {array.shape}")
    node = scene.AddNewNodeByClass(className, scene.GenerateUniqueName(name))
    node.SetIJKToRASMatrix(matrixFromArray(checkAffine(ijkToRAS)))
    slicer.util.updateVolumeFromArray(node, toSlicerArray(array))
    if parentTransformNode is not None:
        node.SetAndObserveTransformNodeID(parentTransformNode.GetID())
    if createDisplayNodes:
        node.CreateDefaultDisplayNodes()
    return node


def addVolumeLike(scene, array: np.ndarray, referenceNode, name: str,
                  className: str = "vtkMRMLScalarVolumeNode"):
    """A new volume on ``referenceNode``'s voxel grid (same IJK-to-RAS and parent transform).

    Raises:
        BridgeError: ``array``'s spatial shape differs from the reference's.
    """
    expected = tuple(referenceNode.GetImageData().GetDimensions())
    if tuple(array.shape[:3]) != expected:
        raise BridgeError(f"result shape {tuple(array.shape[:3])} differs from the input's {expected}")
    return addVolume(scene, array, ijkToRas(referenceNode), name, className,
                     parentTransformNode=referenceNode.GetParentTransformNode())


def checkSameGrid(shape: tuple, affine: np.ndarray, referenceNode, what: str = "result",
                  atol: float = 1e-3) -> None:
    """Raise `BridgeError` unless (shape, world affine) is ``referenceNode``'s grid (``atol`` in mm)."""
    expected = tuple(referenceNode.GetImageData().GetDimensions())
    if tuple(shape[:3]) != expected:
        raise BridgeError(f"{what} shape {tuple(shape[:3])} differs from the input's {expected}")
    if not np.allclose(affine, ijkToWorld(referenceNode), atol=atol):
        raise BridgeError(f"{what} is not on the input's grid (affines differ by "
                          f"{np.abs(affine - ijkToWorld(referenceNode)).max():.3g})")


def pointWorld(markupsNode, index: int = 0) -> tuple[float, float, float]:
    """World RAS position (mm) of control point ``index`` of a markups node.

    Raises:
        BridgeError: the node has no such control point.
    """
    if markupsNode is None or markupsNode.GetNumberOfControlPoints() <= index:
        raise BridgeError("place a point (markups) first: it is the seed of the similarity map")
    position = [0.0, 0.0, 0.0]
    markupsNode.GetNthControlPointPositionWorld(index, position)
    return tuple(float(v) for v in position)


def setColorMap(volumeNode, scene, window: tuple[float, float]) -> str | None:
    """Show a scalar volume with the first available `SIMILARITY_COLOR_NODE_IDS` map over ``window``.

    Returns:
        The colour node ID used, or None when the scene has none of them.
    """
    display = volumeNode.GetDisplayNode()
    if display is None:
        volumeNode.CreateDefaultDisplayNodes()
        display = volumeNode.GetDisplayNode()
    colorId = next((i for i in SIMILARITY_COLOR_NODE_IDS if scene.GetNodeByID(i) is not None), None)
    if colorId is not None:
        display.SetAndObserveColorNodeID(colorId)
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(float(window[0]), float(window[1]))
    return colorId


def showInSliceViews(scene, background=None, foreground=None, opacity: float = 0.5) -> int:
    """Set the background/foreground layers of every slice view (what ``setSliceViewerLayers`` does,
    without needing the application). Returns the number of slice views changed."""
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    count = composites.GetNumberOfItems()
    for n in range(count):
        composite = composites.GetItemAsObject(n)
        if background is not None:
            composite.SetBackgroundVolumeID(background.GetID())
        if foreground is not None:
            composite.SetForegroundVolumeID(foreground.GetID())
            composite.SetForegroundOpacity(opacity)
    return count
