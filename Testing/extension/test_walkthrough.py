"""The module self-test's full flow (phantom → pretrain → fine-tune → segment → overlays → propagate) on
slicer-core. About a minute on two busy cores, so opt-in: ``S2DC_WALKTHROUGH=1 pytest Testing/extension``."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from S2DCExtensionLib import MRMLBridge, Segmentations, Walkthrough
from S2DCExtensionLib.Logic import S2DCLogic


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("S2DC_WALKTHROUGH") != "1", reason="opt-in (about a minute): set S2DC_WALKTHROUGH=1")
def test_full_flow_on_a_phantom(scene, tmp_path, worker_env):
    result = Walkthrough.runWalkthrough(scene, tmp_path, S2DCLogic(scene=scene, python=sys.executable, env=worker_env))
    volume = result["volume"]
    names = [name for _, name, _ in Segmentations.segmentInfo(result["segmentation"])]
    assert "liver" in names and "kidney_left" in names  # every label of the fine-tuned model's card
    labels = Segmentations.segmentsToLabels(scene, result["segmentation"], volume)
    assert labels.shape == result["truth"].shape
    nodes = result["embedding"]
    assert nodes.pca.GetImageData().GetNumberOfScalarComponents() == 3
    assert len(Segmentations.segmentInfo(nodes.structures)) == 4
    np.testing.assert_allclose(MRMLBridge.ijkToRas(nodes.similarity), MRMLBridge.ijkToRas(volume))
    assert [name for _, name, _ in Segmentations.segmentInfo(result["propagated"])] == ["background", "liver"]
    assert (result["model"] / "model.json").is_file() and (result["encoder"] / "model.json").is_file()
