"""Labelmaps ↔ segmentation nodes, with names, colours, terminology and reference geometry (Qt-free).

A core labelmap (``[i, j, k]`` label values on the input's grid) plus its label table (the sidecar JSON
the core writes: value, name, 0–255 colour) becomes a segmentation node with one segment per non-zero
label, in label order: the segment's name and colour come from the table, its terminology tag from
`Terminology`, and the input volume is its reference geometry. The reverse direction (segments → a label
array on a volume's grid) feeds ``propagate`` with scribbles and lets tests read results back.

The segmentations logic's static functions are called directly (no ``slicer.modules``), so this runs in
desktop Slicer and in ``slicer-core``.
"""

from __future__ import annotations

import colorsys
import re
from dataclasses import dataclass

import numpy as np
import slicer
import vtk

from S2DCExtensionLib import MRMLBridge, Terminology
from S2DCExtensionLib.MRMLBridge import BridgeError

SegmentationsLogic = slicer.vtkSlicerSegmentationsModuleLogic


@dataclass(frozen=True)
class LabelEntry:
    """One label of a labelmap: its value, name and 0–255 RGB colour."""

    value: int
    name: str
    color: tuple[int, int, int]


def fallbackColor(value: int) -> tuple[int, int, int]:
    """A distinct colour for a label the table does not name (golden-ratio hues)."""
    r, g, b = colorsys.hsv_to_rgb((0.61803398875 * int(value)) % 1.0, 0.65, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def labelEntriesFromSidecar(payload: dict) -> list[LabelEntry]:
    """The non-background labels of a core sidecar (``{"labels": [{"value", "name", "color"}]}``)."""
    entries = []
    for item in payload.get("labels", []):
        value = int(item["value"])
        if value == 0:
            continue
        color = tuple(int(c) for c in item.get("color") or fallbackColor(value))
        entries.append(LabelEntry(value, str(item.get("name") or f"label {value}"), color))
    return sorted(entries, key=lambda e: e.value)


def completeEntries(entries: list[LabelEntry], labels: np.ndarray) -> list[LabelEntry]:
    """``entries`` plus a generic entry for every non-zero value of ``labels`` they do not name."""
    named = {e.value for e in entries}
    extra = [LabelEntry(int(v), f"label {int(v)}", fallbackColor(int(v)))
             for v in np.unique(labels) if v != 0 and int(v) not in named]
    return sorted([*entries, *extra], key=lambda e: e.value)


def segmentId(name: str, used: set[str]) -> str:
    """A stable segment ID from ``name`` (``"kidney left"`` → ``"kidney_left"``), unique within ``used``."""
    base = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "segment"
    candidate, n = base, 2
    while candidate in used:
        candidate, n = f"{base}_{n}", n + 1
    used.add(candidate)
    return candidate


def labelmapToSegmentation(scene, labels: np.ndarray, entries: list[LabelEntry], referenceVolume,
                           segmentationNode=None, name: str | None = None):
    """Labels on ``referenceVolume``'s grid → segments of a segmentation node.

    Args:
        scene: the MRML scene.
        labels: (X, Y, Z) integer labels on the reference volume's voxel grid (0 = background).
        entries: names and colours by value (`labelEntriesFromSidecar`); unnamed values get generic ones.
        referenceVolume: the input volume: reference geometry, voxel grid and parent transform.
        segmentationNode: a node to fill (its segments are replaced), or None for a new node.
        name: name of a new node (default ``"<volume> segmentation"``).

    Returns:
        The segmentation node: one segment per entry, in value order, even for labels that are absent
        (an empty segment), with name, colour and terminology tag set.
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise BridgeError(f"labels must be integers, not {labels.dtype}")
    entries = completeEntries(entries, labels)
    if segmentationNode is None:
        segmentationNode = scene.AddNewNodeByClass(
            "vtkMRMLSegmentationNode", scene.GenerateUniqueName(name or f"{referenceVolume.GetName()} segmentation"))
        segmentationNode.CreateDefaultDisplayNodes()
    segmentation = segmentationNode.GetSegmentation()
    segmentation.RemoveAllSegments()
    segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolume)
    segmentationNode.SetNodeReferenceID(segmentationNode.GetReferenceImageGeometryReferenceRole(),
                                        referenceVolume.GetID())
    parent = referenceVolume.GetParentTransformNode()
    segmentationNode.SetAndObserveTransformNodeID(parent.GetID() if parent is not None else None)

    used: set[str] = set()
    ids = vtk.vtkStringArray()
    lookup = np.zeros(int(max([0, *(e.value for e in entries)])) + 1, dtype=np.uint16)
    for index, entry in enumerate(entries):
        sid = segmentation.AddEmptySegment(segmentId(entry.name, used), entry.name,
                                           [c / 255.0 for c in entry.color])
        segment = segmentation.GetSegment(sid)
        segment.SetTag(segment.GetTerminologyEntryTagName(), Terminology.terminologyEntry(entry.name))
        ids.InsertNextValue(sid)
        lookup[entry.value] = index + 1  # the import maps label value n to the n-th listed segment
    if entries and labels.max() > 0:
        consecutive = lookup[np.clip(labels, 0, len(lookup) - 1)]
        consecutive[labels < 0] = 0
        temporary = MRMLBridge.addVolume(scene, consecutive, MRMLBridge.ijkToRas(referenceVolume), "S2DC labels",
                                         "vtkMRMLLabelMapVolumeNode", parentTransformNode=parent,
                                         createDisplayNodes=False)
        try:
            if not SegmentationsLogic.ImportLabelmapToSegmentationNode(temporary, segmentationNode, ids):
                raise BridgeError("importing the labelmap into the segmentation failed")
        finally:
            scene.RemoveNode(temporary)
    return segmentationNode


def segmentInfo(segmentationNode) -> list[tuple[str, str, tuple[int, int, int]]]:
    """(segment ID, name, 0–255 colour) of every segment, in order."""
    segmentation = segmentationNode.GetSegmentation()
    info = []
    for n in range(segmentation.GetNumberOfSegments()):
        sid = segmentation.GetNthSegmentID(n)
        segment = segmentation.GetSegment(sid)
        info.append((sid, segment.GetName(), tuple(int(round(c * 255)) for c in segment.GetColor())))
    return info


def segmentsToLabels(scene, segmentationNode, referenceVolume, segmentIds: list[str] | None = None) -> np.ndarray:
    """Segments → (X, Y, Z) uint16 labels on ``referenceVolume``'s grid: the n-th segment is value n + 1.

    Each segment is exported on its own, so values follow ``segmentIds``' order exactly (a later segment
    wins where two overlap).

    Raises:
        BridgeError: the segmentation and the volume are under different parent transforms.
    """
    mine, theirs = segmentationNode.GetParentTransformNode(), referenceVolume.GetParentTransformNode()
    if (mine.GetID() if mine else None) != (theirs.GetID() if theirs else None):
        raise BridgeError(f"'{segmentationNode.GetName()}' and '{referenceVolume.GetName()}' are under different "
                          "transforms; put them under the same one (or harden both)")
    segmentation = segmentationNode.GetSegmentation()
    if segmentIds is None:
        segmentIds = [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]
    shape = referenceVolume.GetImageData().GetDimensions()
    labels = np.zeros(tuple(shape), dtype=np.uint16)
    temporary = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "S2DC export")
    try:
        for value, sid in enumerate(segmentIds, start=1):
            ids = vtk.vtkStringArray()
            ids.InsertNextValue(sid)
            if not SegmentationsLogic.ExportSegmentsToLabelmapNode(segmentationNode, ids, temporary, referenceVolume):
                raise BridgeError(f"exporting segment '{sid}' failed")
            if temporary.GetImageData() is None:
                continue  # an empty segment
            mask = MRMLBridge.toCoreArray(slicer.util.arrayFromVolume(temporary)) != 0
            labels[mask] = value
    finally:
        scene.RemoveNode(temporary)
    return labels
