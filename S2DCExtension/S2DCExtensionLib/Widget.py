"""The module panel (desktop Slicer only: Qt). It knows the logic; the logic never knows it.

Binds ``Resources/UI/S2DCExtension.ui`` to the parameter node, shows the model card, remembers recent
models (``QSettings``), installs dependencies on the first Apply, runs the job in a worker process and
polls it from a ``QTimer``: the progress bar and log follow the worker, Apply turns into Cancel.
"""

from __future__ import annotations

import logging
from pathlib import Path

import ctk  # noqa: F401  (registers the ctk widgets of the .ui)
import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.util import VTKObservationMixin

from S2DCExtensionLib import Dependencies, ModelCards
from S2DCExtensionLib.Commands import TASK_ROWS, checkInputs
from S2DCExtensionLib.Logic import JobCancelled, WorkerError
from S2DCExtensionLib.MRMLBridge import BridgeError
from S2DCExtensionLib.Protocol import DoneEvent, LogEvent, ProgressEvent, formatProgress

log = logging.getLogger(__name__)
RECENT_KEY = "S2DC/RecentModels"
POLL_MS = 200
LOG_LINES = 5000  # the log pane keeps the last lines only


class S2DCPanel(VTKObservationMixin):
    """Controller of the module's loaded UI.

    Args:
        uiWidget: the widget loaded from the .ui file.
        logic: the module logic (``S2DCExtensionLogic``: parameter node + `S2DCLogic`).
    """

    def __init__(self, uiWidget, logic) -> None:
        VTKObservationMixin.__init__(self)
        self.uiWidget, self.logic = uiWidget, logic
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.job = None
        try:  # Slicer 5.6/5.8 (Python 3.9) load the panel but cannot run the core: say so once, up front
            Dependencies.checkSlicerPython()
            self._unsupported = None
        except Dependencies.DependencyError as exc:
            self._unsupported = str(exc)
        self._shownModel = None
        self._parameterNode = None
        self._guiTag = None
        self._fields = {w.property("SlicerParameterName"): w for w in uiWidget.findChildren(qt.QWidget)
                        if w.property("SlicerParameterName")}
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_MS)
        self.timer.connect("timeout()", self.onTimer)
        self.ui.logTextEdit.setMaximumBlockCount(LOG_LINES)
        self.ui.progressBar.setRange(0, 100)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.installButton.connect("clicked(bool)", self.onInstallButton)
        self.ui.recentModelsComboBox.connect("activated(int)", self.onRecentModelActivated)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.refreshRecentModels()
        self.initializeParameterNode()

    # ---- lifecycle -------------------------------------------------------------------------------------

    def cleanup(self) -> None:
        """The module is being destroyed: stop the worker, the timer and the observers."""
        self.cancelJob()
        self.timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._guiTag)
            self._guiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)

    def onSceneStartClose(self, caller, event) -> None:
        self.cancelJob()  # its results would refer to nodes that are going away
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.uiWidget.isVisible():
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._guiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)
        self._parameterNode = parameterNode
        if self._parameterNode:
            # Widgets with a "SlicerParameterName" dynamic property in the .ui are bound to the fields.
            self._guiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)
            self.onParameterChanged()

    # ---- GUI state -------------------------------------------------------------------------------------

    def onParameterChanged(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p is None:
            return
        visible = TASK_ROWS[p.task]
        for name in {row for rows in TASK_ROWS.values() for row in rows}:
            for widget in (self._fields.get(name), getattr(self.ui, f"{name}Label", None)):
                if widget is not None:
                    widget.setVisible(name in visible)
        self.showModelCard(p.modelPath)
        if self.job is None:
            reason = self._unsupported or checkInputs(p.task, volume=p.inputVolume, modelDir=p.modelPath,
                                                      scribbles=p.scribbles, cohortDir=p.cohortPath, runDir=p.runPath)
            if self._unsupported:
                self.ui.statusLabel.text = self._unsupported
            self.ui.applyButton.enabled = reason is None
            self.ui.applyButton.toolTip = reason or _("Run the task. While it runs, this button cancels it.")

    def showModelCard(self, modelPath) -> None:
        if modelPath == self._shownModel:
            return  # parameter changes are frequent; the card is read once per folder
        self._shownModel = modelPath
        text = _("No model selected: embed and propagate use the encoder shipped with S2DC.")
        if modelPath and str(modelPath) not in ("", "."):
            try:
                text = ModelCards.cardSummary(ModelCards.readCard(modelPath))
                self.rememberModel(modelPath)
            except ModelCards.ModelCardError as exc:
                text = str(exc)
        self.ui.modelCardLabel.text = text

    def recentModels(self) -> list[str]:
        value = qt.QSettings().value(RECENT_KEY)
        recent = [value] if isinstance(value, str) else list(value or [])
        return ModelCards.existingRecent(recent)

    def rememberModel(self, modelPath) -> None:
        recent = self.recentModels()
        updated = ModelCards.updateRecent(recent, str(modelPath))
        if updated != recent:
            qt.QSettings().setValue(RECENT_KEY, updated)
            self.refreshRecentModels()

    def refreshRecentModels(self) -> None:
        combo = self.ui.recentModelsComboBox
        combo.blockSignals(True)
        combo.clear()
        combo.addItem(_("(choose a recent model)"))
        for path in self.recentModels():
            combo.addItem(path)
        combo.blockSignals(False)

    def onRecentModelActivated(self, index: int) -> None:
        if index > 0 and self._parameterNode:
            self._parameterNode.modelPath = Path(self.ui.recentModelsComboBox.itemText(index))

    # ---- running ---------------------------------------------------------------------------------------

    def onInstallButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Installing the dependencies failed."), waitCursor=True):
            Dependencies.ensureAll()
            self.ui.statusLabel.text = _("Dependencies are installed.")

    def onApplyButton(self) -> None:
        if self.job is not None:
            self.cancelJob()
            return
        with slicer.util.tryWithErrorDisplay(_("S2DC could not start."), waitCursor=True):
            Dependencies.ensureAll()
            self.job = self.createJob(self._parameterNode)
            self.ui.logTextEdit.clear()
            self.ui.logTextEdit.appendPlainText(" ".join(self.job.process.args))
            if self.job.workDir is not None:
                self.ui.logTextEdit.appendPlainText(f"temporary files: {self.job.workDir}")
            self.job.start()
            self.setRunning(True)
            self.ui.statusLabel.text = _("Starting {task}…").format(task=self.job.name)
            self.timer.start()

    def createJob(self, p):
        """The `Job` for the parameter node's task (not started)."""
        logic = self.logic
        logic.keepWorkDirs = p.keepWorkFiles
        if p.task == "segment":
            return logic.startSegment(p.inputVolume, p.modelPath, outputNode=p.outputSegmentation, device=p.device)
        if p.task == "embed":
            return logic.startEmbed(p.inputVolume, p.modelPath, pca=p.pca, clusters=p.clusters or None,
                                    seed=p.seedPoint, device=p.device)
        if p.task == "propagate":
            return logic.startPropagate(p.inputVolume, p.modelPath, p.scribbles, method=p.propagateMethod,
                                        outputNode=p.outputSegmentation, device=p.device)
        init = p.modelPath if (p.task == "finetune" and p.initFromModel
                               and (Path(p.modelPath) / ModelCards.CARD).is_file()) else None
        return logic.startTraining(p.task, p.cohortPath, p.runPath, preset=p.preset, steps=p.steps,
                                   device=p.device, init=init)

    def onTimer(self) -> None:
        if self.job is None:
            self.timer.stop()
            return
        for event in self.job.poll():
            if isinstance(event, ProgressEvent):
                percent, text = formatProgress(event)
                self.ui.progressBar.value = percent
                self.ui.statusLabel.text = text
            elif isinstance(event, LogEvent):
                self.ui.logTextEdit.appendPlainText(event.text)
            elif isinstance(event, DoneEvent):
                self.ui.logTextEdit.appendPlainText(f"done: {event.info}")
        if not self.job.running:
            self.finishJob()

    def finishJob(self) -> None:
        self.timer.stop()
        job, self.job = self.job, None
        try:
            result = job.result()
        except JobCancelled:
            self.ui.statusLabel.text = _("Cancelled.")
        except Exception as exc:  # WorkerError, BridgeError: one readable message; the log has the rest
            self.ui.statusLabel.text = _("Failed.")
            message = str(exc) if isinstance(exc, (WorkerError, BridgeError)) else f"{type(exc).__name__}: {exc}"
            slicer.util.errorDisplay(message, detailedText="\n".join(job.process.lines))
        else:
            self.ui.progressBar.value = 100
            self.ui.statusLabel.text = _("Done.")
            if isinstance(result, Path) and self._parameterNode:
                self._parameterNode.modelPath = result  # ready to segment/embed with what was trained
        finally:
            self.setRunning(False)

    def cancelJob(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.finishJob()

    def setRunning(self, running: bool) -> None:
        self.ui.applyButton.text = _("Cancel") if running else _("Apply")
        self.ui.applyButton.enabled = True
        for name in ("modelCollapsibleButton", "taskCollapsibleButton", "installButton"):
            getattr(self.ui, name).enabled = not running
        if running:
            self.ui.progressBar.value = 0
        else:
            self.onParameterChanged()
