"""S2DC: structure-aware self-supervised learning for 3D medical images, as a 3D Slicer module.

A thin shell over the S2DC core library: the panel (`S2DCExtensionLib.Widget`) edits a parameter node,
the logic (`S2DCExtensionLib.Logic.S2DCLogic`) runs the core's command line in a separate process and
brings its results into the scene. Nothing heavy is imported here; dependencies are installed on the
first Apply (or with the Install button), never when the module loads.
"""

import logging

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleWidget

from S2DCExtensionLib import forgetModules
from S2DCExtensionLib.Logic import S2DCLogic
from S2DCExtensionLib.SelfTest import S2DCExtensionTest  # noqa: F401  (found by name by Slicer's test runner)

log = logging.getLogger(__name__)


class S2DCExtension(ScriptedLoadableModule):
    """Module description shown by Slicer (help, contributors, acknowledgement)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("S2DC")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["S2DC contributors"]
        self.parent.helpText = _(
            "Segment images with fine-tuned SwinUNETR models, show what a self-supervised encoder learned "
            "(PCA colours, k-means structures, a similarity map from a point), grow a segmentation from a few "
            "scribbles, and pretrain or fine-tune on your own cohort.<br>"
            "Choose a model folder (model.json + model.safetensors), a task and an input, then press Apply. "
            "Work runs in a separate process: Apply turns into Cancel while it runs. PyTorch comes from the "
            "PyTorch extension; the other Python packages are installed on first use after you confirm. "
            "Nothing is downloaded besides those packages.<br>"
            "From the Python console: <code>from S2DCExtensionLib import S2DCLogic; "
            "S2DCLogic().segment(volumeNode, modelFolder)</code>.")
        self.parent.acknowledgementText = _(
            "If you use S2DC, please cite the methods it implements:<br>"
            "Pan et al., <i>S\u00b2DC: Structure-aware Semantic Discrepancy and Consistency for 3D Medical "
            "Image Self-supervised Learning</i>, ICCV 2025, "
            "<a href='https://arxiv.org/abs/2507.02581'>arXiv:2507.02581</a>.<br>"
            "Jiang et al., <i>Anatomical Invariance Modeling and Semantic Alignment for Self-supervised "
            "Learning in 3D Medical Image Analysis</i> (Alice), ICCV 2023, "
            "<a href='https://arxiv.org/abs/2302.05615'>arXiv:2302.05615</a>.<br>"
            "Built on MONAI, PyTorch and POT.")


class S2DCExtensionLogic(ScriptedLoadableModuleLogic, S2DCLogic):
    """The module's logic: its parameter node, plus every task of `S2DCLogic` (usable without the GUI)."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        S2DCLogic.__init__(self)

    def getParameterNode(self):
        from S2DCExtensionLib.Parameters import S2DCParameterNode

        return S2DCParameterNode(super().getParameterNode())


class S2DCExtensionWidget(ScriptedLoadableModuleWidget):
    """The module panel: loads the .ui and hands it to `S2DCExtensionLib.Widget.S2DCPanel`."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        self.panel = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from S2DCExtensionLib.Widget import S2DCPanel

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/S2DCExtension.ui"))
        self.layout.addWidget(uiWidget)
        self.panel = S2DCPanel(uiWidget, S2DCExtensionLogic())

    def enter(self):
        if self.panel:
            self.panel.enter()

    def exit(self):
        if self.panel:
            self.panel.exit()

    def cleanup(self):
        if self.panel:
            self.panel.cleanup()

    def onReload(self):
        """Reload the library too (Python 3.12: importlib semantics, no ``imp``)."""
        if self.panel:
            self.panel.cleanup()
        log.debug("reloading %s", ", ".join(forgetModules("S2DCExtensionLib")))
        ScriptedLoadableModuleWidget.onReload(self)
