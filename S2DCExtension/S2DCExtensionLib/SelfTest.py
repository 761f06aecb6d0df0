"""The module's self-test for desktop Slicer (Reload and Test, or ctest ``py_S2DCExtension``): the full
flow on a phantom (`Walkthrough`), checked for names, colours and geometry. Needs Qt, so pytest does not
import it; pytest runs the same flow through ``Testing/extension``."""

import shutil
import tempfile

import numpy as np
import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from S2DCExtensionLib import MRMLBridge, Segmentations


class S2DCExtensionTest(ScriptedLoadableModuleTest):
    """Full flow: phantom → pretrain → fine-tune → segment → overlays → propagate (CPU, about a minute)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_FullFlowOnPhantom()

    def test_FullFlowOnPhantom(self):
        from S2DCExtensionLib import Dependencies, Walkthrough

        try:
            Dependencies.ensureAll()
        except Dependencies.DependencyError as exc:
            self.delayDisplay(f"Skipped: {exc}")
            return
        if Dependencies.installedVersion("torch") is None:  # pip_ensure does not install in testing mode
            self.delayDisplay("Skipped: PyTorch is not installed (install it with the PyTorch extension)")
            return
        work = tempfile.mkdtemp(prefix="S2DCSelfTest-")
        try:
            result = Walkthrough.runWalkthrough(slicer.mrmlScene, work, device="cpu", say=self.delayDisplay)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        volume = result["volume"]
        names = [name for _, name, _ in Segmentations.segmentInfo(result["segmentation"])]
        self.assertIn("liver", names)
        labels = Segmentations.segmentsToLabels(slicer.mrmlScene, result["segmentation"], volume)
        self.assertEqual(labels.shape, tuple(volume.GetImageData().GetDimensions()))
        pca = result["embedding"].pca
        self.assertEqual(pca.GetImageData().GetNumberOfScalarComponents(), 3)
        np.testing.assert_allclose(MRMLBridge.ijkToRas(pca), MRMLBridge.ijkToRas(volume))
        propagated = [name for _, name, _ in Segmentations.segmentInfo(result["propagated"])]
        self.assertEqual(propagated, ["background", "liver"])
        self.delayDisplay("Test passed")
