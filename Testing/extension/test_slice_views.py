"""Slicer's slice views rendered offscreen through slicer-core's slice logic and displayable managers
(``tools/slice_views.py``, what ``tools/screenshots.sh`` uses), checked as pixels: each segment's colour is
where its label is, a foreground overlay changes the picture, a seed point is drawn where it is, and
left/anterior/superior are where Slicer puts them (radiological convention: the patient's left on the
right of axial and coronal views, anterior up in axial and to the left in sagittal, superior up).

Small pictures (128 px) of a synthetic 24³ volume stored with flipped axes (as NIfTI from DICOM often is),
so that orientation mistakes cannot cancel out; no worker processes (the full pipeline is tools/screenshots.sh).
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

if not os.environ.get("S2DC_VTK_WINDOW") and ctypes.util.find_library("EGL") is None:
    pytest.skip("offscreen rendering needs Mesa's EGL (apt-get install libegl1 libgl1 libgles2; tools/test.sh "
                "installs it as root)", allow_module_level=True)
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

from slice_views import SliceViews  # noqa: E402

from S2DCExtensionLib import MRMLBridge, Segmentations  # noqa: E402

SIZE = 128
SHAPE = (24, 24, 24)
AFFINE = np.array([[-2.0, 0, 0, 23.0], [0, -2.0, 0, 23.0], [0, 0, 2.0, -23.0], [0, 0, 0, 1]])  # i → left, j → posterior
# Boxes in RAS (mm): A left-anterior-superior, B right-posterior-inferior.
BOXES = {"A": ((-20, -6), (6, 20), (6, 20)), "B": ((6, 20), (-20, -6), (-20, -6))}
COLORS = {"A": (255, 0, 0), "B": (0, 0, 255)}
CENTRES = {name: tuple(np.mean(box, axis=1)) for name, box in BOXES.items()}


def _ras_grid() -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), -1).astype(float)
    return ijk @ AFFINE[:3, :3].T + AFFINE[:3, 3]


def _labels() -> np.ndarray:
    ras, labels = _ras_grid(), np.zeros(SHAPE, np.int32)
    for value, box in enumerate(BOXES.values(), start=1):
        inside = np.all([(ras[..., a] >= lo) & (ras[..., a] <= hi) for a, (lo, hi) in enumerate(box)], axis=0)
        labels[inside] = value
    return labels


@pytest.fixture(scope="module")
def views():
    views = SliceViews(size=SIZE)
    scene = views.scene
    volume = MRMLBridge.addVolume(scene, np.full(SHAPE, 100, np.int16), AFFINE, "grey")
    volume.GetDisplayNode().AutoWindowLevelOff()
    volume.GetDisplayNode().SetWindowLevel(200.0, 100.0)  # 100 → mid grey
    labels = _labels()
    segmentation = Segmentations.labelmapToSegmentation(
        scene, labels, [Segmentations.LabelEntry(n, name, COLORS[name]) for n, name in enumerate(BOXES, start=1)],
        volume, name="boxes")
    overlay = np.zeros((*SHAPE, 3), np.uint8)
    overlay[..., 1] = 255  # a green RGB vector volume, like the PCA colours
    rgb = MRMLBridge.addVolume(scene, overlay, AFFINE, "rgb", "vtkMRMLVectorVolumeNode")
    seed = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "seed")
    seed.CreateDefaultDisplayNodes()
    seed.GetDisplayNode().SetSelectedColor(1.0, 0.0, 1.0)
    seed.GetDisplayNode().SetColor(1.0, 0.0, 1.0)
    seed.GetDisplayNode().SetPointLabelsVisibility(False)
    seed.AddControlPoint(*CENTRES["B"])
    views.show(background=volume)
    views.nodes = {"volume": volume, "segmentation": segmentation, "rgb": rgb, "seed": seed, "labels": labels}
    yield views
    scene.Clear(1)


def _pixel_labels(views, name: str, labels: np.ndarray) -> np.ndarray:
    """The label under each pixel's centre (0 outside the volume), from the view's own XY→RAS."""
    import vtk

    xyToRas = vtk.vtkMatrix4x4()
    xyToRas.DeepCopy(views.views[name]["sliceNode"].GetXYToRAS())
    m = np.array([[xyToRas.GetElement(r, c) for c in range(4)] for r in range(4)])
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    xy = np.stack([cols.ravel(), (SIZE - 1 - rows).ravel(), np.zeros(rows.size), np.ones(rows.size)])
    ijk = np.rint((np.linalg.inv(AFFINE) @ m @ xy)[:3]).astype(int)
    inside = np.all((ijk >= 0) & (ijk < np.array(SHAPE)[:, None]), axis=0)
    out = np.zeros(rows.size, np.int32)
    out[inside] = labels[tuple(ijk[:, inside])]
    return out.reshape(SIZE, SIZE)


def _tinted(picture: np.ndarray, color) -> np.ndarray:
    channel = int(np.argmax(color))
    others = [c for c in range(3) if c != channel]
    return picture[..., channel].astype(int) - picture[..., others].astype(int).max(axis=-1) > 40


def _magenta(picture: np.ndarray) -> np.ndarray:
    p = picture.astype(int)
    return (p[..., 0] - p[..., 1] > 60) & (p[..., 2] - p[..., 1] > 60)


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(mask)
    assert rows.size > 20, "the segment is not drawn"
    return rows.mean() / SIZE, cols.mean() / SIZE


@pytest.mark.parametrize("box", ["A", "B"])
def test_each_segment_is_drawn_in_its_colour_exactly_where_its_label_is(views, box):
    views.show(background=views.nodes["volume"])
    views.jumpTo(CENTRES[box])
    value = list(BOXES).index(box) + 1
    for name in ("Red", "Yellow", "Green"):
        picture = views.render(name)
        expected = _pixel_labels(views, name, views.nodes["labels"]) == value
        drawn = _tinted(picture, COLORS[box])
        assert expected.sum() > 100
        overlap = (drawn & expected).sum() / max((drawn | expected).sum(), 1)
        assert overlap > 0.85, f"{name}: segment {box} drawn off its label (IoU {overlap:.2f})"
        grey = picture[~drawn & (_pixel_labels(views, name, views.nodes["labels"]) == 0)]
        assert np.abs(grey.astype(int) - 127).max() <= 3, f"{name}: background is not the volume's mid grey"


def test_left_anterior_superior_are_where_slicer_puts_them(views):
    views.show(background=views.nodes["volume"])
    views.jumpTo(CENTRES["A"])  # A is left, anterior, superior
    red = _centroid(_tinted(views.render("Red"), COLORS["A"]))        # axial: (row, col) fractions
    yellow = _centroid(_tinted(views.render("Yellow"), COLORS["A"]))  # sagittal
    green = _centroid(_tinted(views.render("Green"), COLORS["A"]))    # coronal
    assert red[1] > 0.5 and red[0] < 0.5, "axial: left is on the right, anterior at the top"
    assert yellow[1] < 0.5 and yellow[0] < 0.5, "sagittal: anterior is on the left, superior at the top"
    assert green[1] > 0.5 and green[0] < 0.5, "coronal: left is on the right, superior at the top"
    views.jumpTo(CENTRES["B"])  # B is right, posterior, inferior: every view mirrors
    red = _centroid(_tinted(views.render("Red"), COLORS["B"]))
    yellow = _centroid(_tinted(views.render("Yellow"), COLORS["B"]))
    green = _centroid(_tinted(views.render("Green"), COLORS["B"]))
    assert red[1] < 0.5 and red[0] > 0.5 and yellow[1] > 0.5 and yellow[0] > 0.5 and green[1] < 0.5 and green[0] > 0.5


def test_the_foreground_overlay_changes_the_picture_at_its_opacity(views):
    volume, rgb = views.nodes["volume"], views.nodes["rgb"]
    views.nodes["segmentation"].GetDisplayNode().SetVisibility(False)
    try:
        views.show(background=volume)
        plain = views.render("Red").astype(int)
        views.show(background=volume, foreground=rgb, opacity=0.5)
        blended = views.render("Red").astype(int)
        views.show(background=volume, foreground=rgb, opacity=1.0)
        opaque = views.render("Red").astype(int)
    finally:
        views.nodes["segmentation"].GetDisplayNode().SetVisibility(True)
        views.show(background=volume)
    centre = (slice(SIZE // 2 - 10, SIZE // 2 + 10),) * 2
    assert np.abs(plain[centre] - 127).max() <= 3
    np.testing.assert_allclose(blended[centre].mean(axis=(0, 1)), [64, 191, 64], atol=4)  # 0.5 grey + 0.5 green
    np.testing.assert_allclose(opaque[centre].mean(axis=(0, 1)), [0, 255, 0], atol=2)


def test_the_seed_point_is_drawn_where_it_is_and_only_in_views_through_it(views):
    views.show(background=views.nodes["volume"])
    views.nodes["segmentation"].GetDisplayNode().SetVisibility(False)
    try:
        views.jumpTo(CENTRES["B"])
        for name in ("Red", "Yellow", "Green"):
            magenta = _magenta(views.render(name))
            row, col = views.rasToPixel(name, CENTRES["B"])
            rows, cols = np.nonzero(magenta)
            assert rows.size > 10 and abs(rows.mean() - row) <= 3 and abs(cols.mean() - col) <= 3, name
        views.jumpTo(CENTRES["A"])  # no view plane passes through the point now
        assert not any(_magenta(views.render(n)).any() for n in ("Red", "Yellow", "Green"))
    finally:
        views.nodes["segmentation"].GetDisplayNode().SetVisibility(True)


def test_pictures_are_written_as_pngs_of_the_requested_size(views, tmp_path):
    from PIL import Image

    views.show(background=views.nodes["volume"])
    views.jumpTo(CENTRES["A"])
    single = Image.open(views.save("Red", tmp_path / "red.png"))
    row = Image.open(views.saveRow(tmp_path / "row.png", gap=4))
    assert single.size == (SIZE, SIZE) and row.size == (3 * SIZE + 8, SIZE)
    assert np.array_equal(np.asarray(row)[:, :SIZE], np.asarray(single))


def test_a_similarity_overlay_uses_desktop_slicers_cold_to_hot_map(views):
    volume = views.nodes["volume"]
    ras = _ras_grid()
    similarity = np.clip(ras[..., 0] / 20.0, -1, 1).astype(np.float32)  # R: 1 at the patient's right … −1 at the left
    node = MRMLBridge.addVolume(views.scene, similarity, AFFINE, "similarity")
    assert MRMLBridge.setColorMap(node, views.scene, (-1.0, 1.0)) == "vtkMRMLColorTableNodeFileColdToHotRainbow.txt"
    views.nodes["segmentation"].GetDisplayNode().SetVisibility(False)
    try:
        views.show(background=volume, foreground=node, opacity=1.0)
        views.jumpTo((0.0, 0.0, 0.0))
        picture = views.render("Red").astype(int)
    finally:
        views.nodes["segmentation"].GetDisplayNode().SetVisibility(True)
        views.show(background=volume)
    left = picture[SIZE // 2, SIZE // 2 + 40]   # screen right = the patient's left: similarity −1 → blue
    right = picture[SIZE // 2, SIZE // 2 - 40]  # screen left = the patient's right: similarity 1 → red
    assert left[2] > 100 and left[0] < 30 and right[0] > 100 and right[2] < 30, (left, right)
