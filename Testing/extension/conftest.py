"""Fixtures of the Slicer-extension tests: real MRML scenes on ``slicer-core``, tiny model folders,
phantom cohorts and a quiet environment for worker processes.

The module's Qt-free library is imported from ``S2DCExtension/`` (put on ``sys.path`` here), exactly as
desktop Slicer imports it from the module folder.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXTENSION_DIR = ROOT / "S2DCExtension"
if str(EXTENSION_DIR) not in sys.path:
    sys.path.insert(0, str(EXTENSION_DIR))


def make_scene():
    """A scene with what desktop Slicer always has: colour tables and the volumes and segmentations
    logics (the latter registers the segmentation converters). Recipe of trame-slicer's ``SlicerApp``."""
    import slicer

    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    app.GetColorLogic().SetMRMLScene(scene)
    app.GetColorLogic().AddDefaultColorNodes()
    volumes = slicer.vtkSlicerVolumesLogic()
    volumes.SetMRMLScene(scene)
    volumes.SetMRMLApplicationLogic(app)
    segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
    segmentations.SetMRMLScene(scene)
    segmentations.SetMRMLApplicationLogic(app)
    scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")  # one slice view's layers
    slicer.mrmlScene = scene
    # Keep the logics alive as long as the scene.
    scene._s2dcLogics = (app, volumes, segmentations)  # noqa: SLF001
    return scene


@pytest.fixture
def scene():
    """A fresh MRML scene (see `make_scene`)."""
    scene = make_scene()
    yield scene
    scene.Clear(1)


@pytest.fixture(scope="session")
def worker_env() -> dict:
    """Environment of test workers: one thread each, as the machine is small and shared."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """Random-weight tiny model folders in the core's format: ``segmenter`` (3 labels) and ``encoder``."""
    import torch

    from S2DCCore.checkpoint import save_model_dir
    from S2DCCore.config import PreprocessConfig, to_dict
    from S2DCCore.models.encoders import EncoderConfig, SwinEncoder
    from S2DCCore.models.segmenter import SegmenterConfig, build_segmenter

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    encoder = EncoderConfig(feature_size=12)
    preprocess = to_dict(PreprocessConfig(spacing=(2.0, 2.0, 2.0)))
    common = {"preprocess": preprocess, "intensity_preset": "ct", "spacing": [2.0, 2.0, 2.0], "orientation": "RAS"}
    network = build_segmenter(SegmenterConfig(encoder=encoder, out_channels=3))
    save_model_dir(root / "segmenter", network.state_dict(), {
        "kind": "segmenter", "architecture": {"encoder": to_dict(encoder), "out_channels": 3, "norm_name": "instance"},
        "labels": {"0": "background", "1": "liver", "2": "kidney_left"}, "roi": [64, 64, 64],
        "encoder_provenance": None, "validation_dice": None, **common})
    save_model_dir(root / "encoder", SwinEncoder(encoder).state_dict(), {
        "kind": "encoder", "method": "s2dc", "architecture": to_dict(encoder), "token_stage": 1, "step": 1, **common})
    return {"segmenter": root / "segmenter", "encoder": root / "encoder"}


@pytest.fixture(scope="session")
def cohort(tmp_path_factory) -> Path:
    """A two-case labelled phantom cohort of 16³ voxels (25 mm), written by the core."""
    from S2DCCore.data.phantoms import PhantomConfig, write_phantom_cohort

    return write_phantom_cohort(tmp_path_factory.mktemp("cohort") / "ph", cases=2, seed=3,
                                config=PhantomConfig(size=16))


@pytest.fixture(scope="session")
def helpers():
    """Shared helpers (conftest modules cannot be imported by tests under importlib mode)."""
    return types.SimpleNamespace(make_scene=make_scene, cone=cone_volume, live_tree=live_tree, pid_alive=pid_alive)


def cone_volume(shape, affine, centre_offset=(3.0, -2.0, 1.5), radius_mm=10.0) -> np.ndarray:
    """int16 ``radius − distance`` (×10) around a point near the grid's centre: a structured test image."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float64)
    ras = ijk @ affine[:3, :3].T + affine[:3, 3]
    centre = ras.reshape(-1, 3).mean(axis=0) + np.asarray(centre_offset)
    return (10.0 * (radius_mm - np.linalg.norm(ras - centre, axis=-1))).astype(np.int16)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process (Linux /proc)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def live_tree(root: int) -> set[int]:
    """``root`` and every live descendant (from /proc parent links)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid_alive(pid) and pid not in tree:
            tree.add(pid)
            todo += children.get(pid, [])
    return tree
