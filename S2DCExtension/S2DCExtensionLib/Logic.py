"""S2DCLogic: segmentation, embeddings, propagation and training from Slicer, without the GUI (Qt-free).

Each task writes the input node to a temporary NIfTI, runs the core's CLI in a separate process
(`WorkerProcess`) and turns the files it writes into new MRML nodes (`MRMLBridge`, `Segmentations`).
``start*`` returns a `Job` at once (the widget polls it from a timer); the plain methods (``segment``,
``embed``, ...) block and return the nodes, for the Python console::

    logic = S2DCLogic()
    segmentation = logic.segment(getNode("CT"), "/models/abdomen/model")

Inputs are never modified; outputs are new nodes, or replace the content of the one node passed as
``outputNode``. Collaborators (the scene, the worker's Python and environment, the temporary folder)
are injectable, so tests run this on ``slicer-core`` with ``sys.executable``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from S2DCExtensionLib import Commands, Dependencies, MRMLBridge, Segmentations, VolumeFiles
from S2DCExtensionLib.WorkerProcess import CANCELLED, RUNNING, SUCCEEDED, WorkerProcess

log = logging.getLogger(__name__)
SIMILARITY_OPACITY = 0.5


class WorkerError(RuntimeError):
    """The worker failed; the message is one readable sentence (the full log is on the job)."""


class JobCancelled(RuntimeError):
    """The job was cancelled by the user."""


@dataclass
class EmbeddingNodes:
    """Overlays of one ``embed`` run (None where not requested)."""

    pca: Any = None
    structures: Any = None
    similarity: Any = None


class Job:
    """A running worker plus what turns its output into results.

    Args:
        name: the task (``segment``, ``finetune``, ...).
        process: the worker, not yet started.
        collect: called once the worker succeeded; returns the result (nodes or a path).
        workDir: temporary folder removed after `result` (kept when ``keepWorkDir``), or None.
    """

    def __init__(self, name: str, process: WorkerProcess, collect: Callable[[], Any], workDir: Path | None = None,
                 keepWorkDir: bool = False) -> None:
        self.name, self.process, self.collect = name, process, collect
        self.workDir, self.keepWorkDir = workDir, keepWorkDir

    def start(self) -> "Job":
        self.process.start()
        return self

    def poll(self) -> list:
        """New events (`Protocol`); call every ~100 ms from a timer."""
        return self.process.poll()

    @property
    def running(self) -> bool:
        return self.process.state == RUNNING

    def cancel(self) -> None:
        """Kill the worker's process tree and drop the temporary files."""
        self.process.cancel()
        self._cleanup()

    def wait(self, timeout: float | None = None, onEvent=None) -> str:
        return self.process.wait(timeout=timeout, onEvent=onEvent)

    def result(self):
        """The result of a finished job.

        Raises:
            WorkerError: the worker failed (one readable message).
            JobCancelled: the job was cancelled.
        """
        state = self.process.state
        try:
            if state == CANCELLED:
                raise JobCancelled(f"{self.name} was cancelled")
            if state != SUCCEEDED:
                raise WorkerError(f"{self.name} failed: {self.process.errorMessage}")
            return self.collect()
        finally:
            if state != RUNNING:
                self._cleanup()

    def run(self, onEvent=None, timeout: float | None = None):
        """Start, wait and return the result (blocking: for the console and scripts)."""
        self.start()
        if self.wait(timeout=timeout, onEvent=onEvent) == RUNNING:
            self.cancel()
            raise WorkerError(f"{self.name} did not finish within {timeout} s and was cancelled")
        return self.result()

    def _cleanup(self) -> None:
        if self.workDir is not None and not self.keepWorkDir:
            shutil.rmtree(self.workDir, ignore_errors=True)


class S2DCLogic:
    """Run S2DC tasks on MRML nodes (see the module docstring).

    Args:
        scene: the MRML scene (default ``slicer.mrmlScene`` at call time).
        python: the worker's interpreter (default `Commands.pythonExecutable`).
        env: the worker's environment (default: this process's); the bundled core is put first on its
            PYTHONPATH either way.
        tempRoot: where temporary folders go (default the system's).
        keepWorkDirs: keep the temporary folders (inputs, outputs, sidecars) for inspection.
    """

    def __init__(self, scene=None, python: str | None = None, env: dict | None = None,
                 tempRoot: str | Path | None = None, keepWorkDirs: bool = False) -> None:
        self._scene, self.python, self.env = scene, python, env
        self.tempRoot, self.keepWorkDirs = tempRoot, keepWorkDirs

    @property
    def scene(self):
        if self._scene is not None:
            return self._scene
        import slicer

        return slicer.mrmlScene

    # ---- non-blocking: return a Job ------------------------------------------------------------------

    def startSegment(self, volumeNode, modelDir, outputNode=None, device: str = "auto",
                     overlap: float | None = None, options: tuple[str, ...] = ()) -> Job:
        """Segment ``volumeNode`` with the segmenter in ``modelDir``; the job's result is a segmentation node.

        ``options`` are extra CLI arguments, e.g. ``("--roi", "64", "--memory-budget", "6G")``."""
        with self._workDirectory() as work:
            image, _ = self._writeInput(volumeNode, work)
            output = work / "segmentation.nii"
            args = Commands.segmentArgs(image, Path(modelDir), output, device=device, overlap=overlap) + list(options)

            def collect():
                return self._importLabelmap(output, volumeNode, outputNode, f"{volumeNode.GetName()} segmentation")

            return self._job("segment", args, collect, work)

    def startEmbed(self, volumeNode, modelDir=None, pca: bool = True, clusters: int | None = None, seed=None,
                   device: str = "auto", options: tuple[str, ...] = ()) -> Job:
        """Embedding overlays of ``volumeNode``; ``seed`` is a markups node (its first point) or an RAS point
        in mm (world frame) for the similarity map. The job's result is an `EmbeddingNodes`."""
        point = None
        if seed is not None:
            point = tuple(float(v) for v in seed) if isinstance(seed, (tuple, list, np.ndarray)) \
                else MRMLBridge.pointWorld(seed)
        with self._workDirectory() as work:
            image, _ = self._writeInput(volumeNode, work)
            outdir = work / "embedding"
            args = Commands.embedArgs(image, None if modelDir is None else Path(modelDir), outdir, pca=pca, clusters=clusters, point=point,
                                      device=device) + list(options)
            return self._job("embed", args, lambda: self._importEmbedding(outdir, volumeNode), work)

    def startPropagate(self, volumeNode, modelDir, scribbles, method: str = "grow", outputNode=None,
                       device: str = "auto", options: tuple[str, ...] = ()) -> Job:
        """Grow the segments of ``scribbles`` (one per class, background included) over ``volumeNode``."""
        info = Segmentations.segmentInfo(scribbles)
        if len(info) < 2:
            raise MRMLBridge.BridgeError("scribbles need at least two segments (one per class, background included)")
        labels = Segmentations.segmentsToLabels(self.scene, scribbles, volumeNode, [sid for sid, _, _ in info])
        if len(np.unique(labels[labels > 0])) < 2:
            raise MRMLBridge.BridgeError("at least two segments must contain scribbled voxels")
        entries = [Segmentations.LabelEntry(n + 1, name, color) for n, (_, name, color) in enumerate(info)]
        with self._workDirectory() as work:
            image, affine = self._writeInput(volumeNode, work)
            scribbleFile = VolumeFiles.writeVolumeFile(work / "scribbles.nii", labels, affine)
            output = work / "propagated.nii"
            args = Commands.propagateArgs(image, None if modelDir is None else Path(modelDir), scribbleFile, output,
                                          method=method,
                                          device=device) + list(options)

            def collect():
                return self._importLabelmap(output, volumeNode, outputNode, f"{volumeNode.GetName()} propagated",
                                            entries=entries)

            return self._job("propagate", args, collect, work)

    def startTraining(self, command: str, cohortDir, runDir, preset: str = "tiny", steps: int | None = None,
                      device: str = "auto", init=None, resume: bool = False, overrides: tuple[str, ...] = ()) -> Job:
        """``pretrain`` or ``finetune`` on a cohort folder; the job's result is the model folder written."""
        args = Commands.trainArgs(command, Path(cohortDir), Path(runDir), preset=preset, steps=steps, device=device,
                                  init=None if init is None else Path(init), resume=resume, overrides=overrides)
        subdir = "encoder" if command == "pretrain" else "model"
        job = self._job(command, args, None, None)
        # The final JSON event names the folder written ({"event": "done", "encoder": ...}).
        job.collect = lambda: Path((job.process.doneInfo or {}).get(subdir) or Path(runDir) / subdir)
        return job

    # ---- blocking: for the Python console --------------------------------------------------------------

    def segment(self, volumeNode, modelDir, outputNode=None, device: str = "auto", **kwargs):
        """Segment and return the segmentation node (blocks until done)."""
        return self.startSegment(volumeNode, modelDir, outputNode=outputNode, device=device, **kwargs).run()

    def embed(self, volumeNode, modelDir=None, pca: bool = True, clusters: int | None = None, seed=None,
              device: str = "auto", **kwargs) -> EmbeddingNodes:
        """Embedding overlays as new nodes (blocks until done)."""
        return self.startEmbed(volumeNode, modelDir, pca=pca, clusters=clusters, seed=seed, device=device,
                               **kwargs).run()

    def propagate(self, volumeNode, modelDir, scribbles, method: str = "grow", outputNode=None, device: str = "auto",
                  **kwargs):
        """Segmentation grown from scribbles (blocks until done)."""
        return self.startPropagate(volumeNode, modelDir, scribbles, method=method, outputNode=outputNode,
                                   device=device, **kwargs).run()

    def finetune(self, cohortDir, runDir, init=None, **kwargs) -> Path:
        """Fine-tune a segmenter; returns ``RUN/model`` (blocks until done)."""
        return self.startTraining("finetune", cohortDir, runDir, init=init, **kwargs).run()

    def pretrain(self, cohortDir, runDir, **kwargs) -> Path:
        """Pretrain an encoder; returns ``RUN/encoder`` (blocks until done)."""
        return self.startTraining("pretrain", cohortDir, runDir, **kwargs).run()

    # ---- helpers -------------------------------------------------------------------------------------

    def _job(self, name: str, args: list[str], collect, work: Path | None) -> Job:
        Dependencies.checkSlicerPython()  # Slicer 5.6/5.8 (Python 3.9): one clear message, no worker
        python = self.python or Commands.pythonExecutable()
        env = Dependencies.workerEnvironment(self.env)  # the bundled core on PYTHONPATH (never pip-installed)
        process = WorkerProcess([python, *Commands.cliPrefix(), *args], env=env, phase=name)
        return Job(name, process, collect, work, keepWorkDir=self.keepWorkDirs)

    @contextlib.contextmanager
    def _workDirectory(self):
        """A new temporary folder, removed again if starting the job fails."""
        work = Path(tempfile.mkdtemp(prefix="S2DC-", dir=self.tempRoot))
        try:
            yield work
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise

    def _writeInput(self, volumeNode, work: Path) -> tuple[Path, np.ndarray]:
        """(the input written to ``work`` as NIfTI, its world affine)."""
        if volumeNode is None or not volumeNode.IsA("vtkMRMLScalarVolumeNode"):
            raise MRMLBridge.BridgeError("select a scalar volume as input")
        array, affine = MRMLBridge.volumeToArray(volumeNode)
        if array.ndim != 3:
            raise MRMLBridge.BridgeError("the input must be a scalar (single-component) volume")
        if array.dtype == bool:
            array = array.astype(np.uint8)
        return VolumeFiles.writeVolumeFile(work / "input.nii", array, affine), affine

    def _readOnGrid(self, path: Path, volumeNode, what: str) -> np.ndarray:
        array, affine = VolumeFiles.readVolumeFile(path)
        MRMLBridge.checkSameGrid(array.shape, affine, volumeNode, what)
        return array

    def _importLabelmap(self, path: Path, volumeNode, outputNode, name: str, entries=None):
        labels = self._readOnGrid(path, volumeNode, "the labelmap").astype(np.int32)
        if entries is None:
            sidecar = path.with_name(path.name.split(".")[0] + ".json")
            entries = Segmentations.labelEntriesFromSidecar(json.loads(sidecar.read_text()))
        return Segmentations.labelmapToSegmentation(self.scene, labels, entries, volumeNode,
                                                    segmentationNode=outputNode, name=name)

    def _importEmbedding(self, outdir: Path, volumeNode) -> EmbeddingNodes:
        scene, base, nodes = self.scene, volumeNode.GetName(), EmbeddingNodes()
        if (outdir / "pca_rgb.nii.gz").is_file():
            rgb = self._readOnGrid(outdir / "pca_rgb.nii.gz", volumeNode, "the PCA overlay").astype(np.uint8)
            nodes.pca = MRMLBridge.addVolumeLike(scene, rgb, volumeNode, f"{base} PCA", "vtkMRMLVectorVolumeNode")
        if (outdir / "structures.nii.gz").is_file():
            labels = self._readOnGrid(outdir / "structures.nii.gz", volumeNode, "the structures").astype(np.int32)
            entries = Segmentations.labelEntriesFromSidecar(json.loads((outdir / "structures.json").read_text()))
            nodes.structures = Segmentations.labelmapToSegmentation(scene, labels, entries, volumeNode,
                                                                    name=f"{base} structures")
        if (outdir / "similarity.nii.gz").is_file():
            similarity = self._readOnGrid(outdir / "similarity.nii.gz", volumeNode, "the similarity map")
            nodes.similarity = MRMLBridge.addVolumeLike(scene, similarity.astype(np.float32), volumeNode,
                                                        f"{base} similarity")
            low = float(np.percentile(similarity, 1)) if similarity.size else -1.0
            MRMLBridge.setColorMap(nodes.similarity, scene, (max(-1.0, min(low, 0.99)), 1.0))
        overlay = nodes.similarity or nodes.pca
        if overlay is not None:
            MRMLBridge.showInSliceViews(scene, background=volumeNode, foreground=overlay, opacity=SIMILARITY_OPACITY)
        return nodes
