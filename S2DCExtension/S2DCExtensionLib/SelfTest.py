"""The module's self-test for desktop Slicer (Reload and Test, or ctest ``py_S2DCExtension``): the full
flow on a phantom (`Walkthrough`), checked for names, colours and geometry. It skips, never installs,
when torch, monai, nibabel or the bundled core are missing (e.g. on the extension build machine). Needs Qt, so pytest does not
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

        # A test never installs anything (no pip, no PyTorchUtils): without its packages it skips, saying why.
        missing = Dependencies.selfTestMissing()
        if missing:
            self.delayDisplay("Skipped: not installed: " + ", ".join(missing)
                              + " (install PyTorch with the PyTorch extension, the rest with S2DC's Install button)")
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
