"""The whole flow on a synthetic phantom, as a user would run it (Qt-free; the module's self-test).

phantom cohort → load a case as a volume node → pretrain an encoder → fine-tune a segmenter from it →
segment the volume → embedding overlays (PCA, structures, similarity at a point) → propagate two
scribbled classes. Every heavy step runs in a worker process through `S2DCLogic`; the settings are
CPU-sized (a 32³ phantom at its native 12.5 mm, two training steps) so it finishes in about a minute.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from S2DCExtensionLib import Commands, Dependencies, MRMLBridge, Segmentations, VolumeFiles
from S2DCExtensionLib.Logic import S2DCLogic
from S2DCExtensionLib.WorkerProcess import SUCCEEDED, WorkerProcess

log = logging.getLogger(__name__)
PHANTOM_SIZE = 32
FOV_MM = 400.0  # the phantoms' field of view (S2DCCore.data.phantoms.PhantomConfig)
TRAINING_STEPS = 2
SCRIBBLES_PER_CLASS = 30


def makePhantomCohort(folder: Path, python: str, env: dict | None = None, cases: int = 3,
                      size: int = PHANTOM_SIZE) -> Path:
    """``s2dc phantoms`` into ``folder`` (a labelled Decathlon-style cohort of ``size``³ voxels)."""
    worker = WorkerProcess([python, *Commands.cliPrefix(), "phantoms", str(folder), "--cases", str(cases),
                            "--size", str(size), "--seed", "1"], env=Dependencies.workerEnvironment(env),
                           phase="phantoms")
    if worker.start().wait() != SUCCEEDED:
        raise RuntimeError(f"making the phantom cohort failed: {worker.errorMessage}")
    return folder


def scribblesFromLabels(labels: np.ndarray, values: tuple[int, ...], count: int, seed: int = 0) -> np.ndarray:
    """``count`` random voxels of each label value in ``values`` (background 0 becomes class value 1, the
    others keep their order: class n + 1 for ``values[n]``); 0 elsewhere."""
    rng = np.random.default_rng(seed)
    scribbles = np.zeros(labels.shape, dtype=np.int32)
    for n, value in enumerate(values):
        where = np.flatnonzero(labels.reshape(-1) == value)
        if where.size == 0:
            raise ValueError(f"label {value} is absent from the phantom")
        pick = rng.choice(where, size=min(count, where.size), replace=False)
        scribbles.reshape(-1)[pick] = n + 1
    return scribbles


def runWalkthrough(scene, workDir: str | Path, logic: S2DCLogic | None = None, device: str = "cpu",
                   say=log.info) -> dict:
    """Run the flow; returns the nodes and folders it made (see the module docstring).

    Args:
        scene: the MRML scene.
        workDir: an empty folder for the cohort and the runs.
        logic: the logic to use (default ``S2DCLogic(scene)``).
        device: the workers' device.
        say: called with a short message before each step.
    """
    workDir = Path(workDir)
    logic = logic or S2DCLogic(scene=scene)
    python = logic.python or Commands.pythonExecutable()
    env = logic.env
    spacing = FOV_MM / PHANTOM_SIZE
    # The tiny presets resample to 1.5 mm; at the phantom's own spacing the model grid stays 32³.
    overrides = (f"preprocess.spacing=[{spacing},{spacing},{spacing}]", "runtime.threads=1")

    say("Making a phantom cohort")
    cohort = makePhantomCohort(workDir / "cohort", python, env)
    image, affine = VolumeFiles.readVolumeFile(cohort / "imagesTr" / "case_000.nii.gz")
    truth, _ = VolumeFiles.readVolumeFile(cohort / "labelsTr" / "case_000.nii.gz")
    volume = MRMLBridge.addVolume(scene, image, affine, "S2DC phantom")

    say("Pretraining an encoder (S2DC, tiny preset)")
    encoder = logic.pretrain(cohort, workDir / "pretrain", preset="tiny", steps=TRAINING_STEPS, device=device,
                             overrides=overrides)
    say("Fine-tuning a segmenter from it")
    model = logic.finetune(cohort, workDir / "finetune", init=encoder, preset="tiny", steps=TRAINING_STEPS,
                           device=device, overrides=(*overrides, "val_every=2"))
    say("Segmenting the phantom")
    segmentation = logic.segment(volume, model, device=device)
    say("Embedding overlays: PCA colours, 4 structures, similarity to the volume centre")
    centre = tuple((affine @ np.array([*(np.array(image.shape) - 1) / 2.0, 1.0]))[:3])
    embedding = logic.embed(volume, encoder, pca=True, clusters=4, seed=centre, device=device)
    say("Propagating scribbles of background and liver")
    liver = next(v for v, name in _labelNames(cohort).items() if name == "liver")
    scribbleLabels = scribblesFromLabels(truth.astype(np.int32), (0, liver), SCRIBBLES_PER_CLASS)
    scribbles = Segmentations.labelmapToSegmentation(
        scene, scribbleLabels, [Segmentations.LabelEntry(1, "background", (40, 40, 40)),
                                Segmentations.LabelEntry(2, "liver", (192, 104, 88))], volume, name="scribbles")
    propagated = logic.propagate(volume, encoder, scribbles, device=device)
    return {"volume": volume, "truth": truth, "encoder": encoder, "model": model, "segmentation": segmentation,
            "embedding": embedding, "scribbles": scribbles, "propagated": propagated, "cohort": cohort}


def _labelNames(cohort: Path) -> dict[int, str]:
    import json

    labels = json.loads((cohort / "dataset.json").read_text())["labels"]
    return {int(k): str(v) for k, v in labels.items()}
