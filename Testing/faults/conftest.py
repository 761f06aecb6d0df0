"""Fixtures of the fault-injection suite: tiny phantoms, tiny model folders, scribbles, a small tmpfs.

The ways to break a run and the checks live in ``Testing/faultkit.py``; the cases and their outcomes are
listed in ``docs/reliability.md``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture(scope="session")
def cohort(tmp_path_factory) -> Path:
    """Three labelled phantom cases of 32³ voxels."""
    from S2DCCore.data.phantoms import PhantomConfig, write_phantom_cohort

    return write_phantom_cohort(tmp_path_factory.mktemp("faults") / "ph", cases=3, seed=3,
                                config=PhantomConfig(size=32))


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    """Random-weight tiny ``segmenter`` (3 labels) and ``encoder`` folders at the phantoms' spacing."""
    from S2DCCore.checkpoint import save_model_dir
    from S2DCCore.config import PreprocessConfig, to_dict
    from S2DCCore.models.encoders import EncoderConfig, SwinEncoder
    from S2DCCore.models.segmenter import SegmenterConfig, build_segmenter

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    encoder = EncoderConfig(feature_size=12)
    spacing = [12.5, 12.5, 12.5]
    common = {"preprocess": to_dict(PreprocessConfig(spacing=tuple(spacing))), "intensity_preset": "ct",
              "spacing": spacing, "orientation": "RAS"}
    network = build_segmenter(SegmenterConfig(encoder=encoder, out_channels=3))
    save_model_dir(root / "segmenter", network.state_dict(), {
        "kind": "segmenter", "architecture": {"encoder": to_dict(encoder), "out_channels": 3, "norm_name": "instance"},
        "labels": {"0": "background", "1": "liver", "2": "kidney_left"}, "roi": [64, 64, 64],
        "encoder_provenance": None, "validation_dice": None, **common})
    save_model_dir(root / "encoder", SwinEncoder(encoder).state_dict(), {
        "kind": "encoder", "method": "s2dc", "architecture": to_dict(encoder), "token_stage": 1, "step": 1, **common})
    return {"segmenter": root / "segmenter", "encoder": root / "encoder"}


@pytest.fixture(scope="session")
def scribbles(cohort, tmp_path_factory) -> Path:
    """Two-class scribbles on case 0's grid: a background slab and a foreground blob."""
    from S2DCCore.io.image import read_image, write_image

    image = read_image(cohort / "imagesTr" / "case_000.nii.gz")
    labels = np.zeros(image.shape, np.uint8)
    labels[:3] = 1
    labels[14:18, 14:18, 14:18] = 2
    return write_image(tmp_path_factory.mktemp("scribbles") / "scribbles.nii.gz", labels, image.affine)


@pytest.fixture
def small_fs(tmp_path):
    """``mount(size, readonly=False)`` → a fresh tmpfs folder (unmounted afterwards); skips if not permitted."""
    mounted = []

    def mount(size: str, readonly: bool = False) -> Path:
        point = tmp_path / f"fs{len(mounted)}"
        point.mkdir()
        options = f"size={size}" + (",ro" if readonly else "")
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({result.stderr.decode().strip() or 'not permitted'})")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


@pytest.fixture(autouse=True)
def fresh_fault_counts(monkeypatch):
    """In-process fault points count from zero in every test, and no fault is armed unless the test arms it."""
    from S2DCCore.utils import faults

    monkeypatch.delenv(faults.ENV, raising=False)
    faults.reset_fault_counts()
    yield
    faults.reset_fault_counts()
