"""What the S2DC module shows in Slicer's slice views, as PNGs, without desktop Slicer (``tools/screenshots.sh``).

phantom cohort (``s2dc phantoms``) → a tiny encoder (``s2dc pretrain``) and segmenter (``s2dc finetune``)
trained for a few steps → the module's logic (`S2DCLogic`, each task in its worker process, results as MRML
nodes) → segment, embed (PCA colours, k-means structures, similarity to a seed point) and propagate from
scribbles → Slicer's red/yellow/green slice views rendered offscreen (`slice_views.SliceViews`):

    OUT/segmentation.png   the phantom with the segmenter's segments (fill + outline)
    OUT/pca.png            PCA colours as the foreground layer (opacity 0.5) over the phantom
    OUT/structures.png     k-means structures as a segmentation
    OUT/similarity.png     similarity to the seed point (foreground, colour map) and the seed point itself
    OUT/propagate.png      the segmentation grown from scribbles of three classes (scribbles shown as points)
    OUT/truth.png          the phantom's true labels, for comparison
    OUT/overview.png       similarity over propagate (Resources/Screenshots/S2DC-slice-views.png)

Each PNG is the three views side by side (Red axial | Yellow sagittal | Green coronal), ``--size`` pixels
each. The similarity map uses desktop Slicer's ColdToHotRainbow table (blue: dissimilar, red: similar to
the seed). The models are trained for seconds, so the segmentation is rough; the point is what Slicer shows
and where (geometry, colours, layers), checked by ``Testing/extension/test_slice_views.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "S2DCExtension"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from slice_views import SliceViews  # noqa: E402  (sets the offscreen window class before VTK renders)

from S2DCExtensionLib import MRMLBridge, Segmentations, VolumeFiles  # noqa: E402
from S2DCExtensionLib.Logic import S2DCLogic  # noqa: E402
from S2DCExtensionLib.Walkthrough import makePhantomCohort, scribblesFromLabels  # noqa: E402

log = logging.getLogger("screenshots")
FOV_MM = 400.0  # the phantoms' field of view
SCRIBBLE_CLASSES = ("background", "liver", "fat")


def _labels(cohort: Path) -> dict[str, int]:
    return {str(v): int(k) for k, v in json.loads((cohort / "dataset.json").read_text())["labels"].items()}


def _stack(path: Path, *rows: Path, gap: int = 4) -> Path:
    """PNG rows one above the other (the README picture: similarity over propagation)."""
    from PIL import Image

    arrays = [np.asarray(Image.open(row).convert("RGB")) for row in rows]
    parts = []
    for n, array in enumerate(arrays):
        parts += [array] + ([np.zeros((gap, array.shape[1], 3), np.uint8)] if n < len(arrays) - 1 else [])
    Image.fromarray(np.concatenate(parts, axis=0)).save(path, optimize=True)
    return path


def run(out: Path, size: int = 256, phantomSize: int = 48, pretrainSteps: int = 10, finetuneSteps: int = 20,
        work: Path | None = None, device: str = "cpu", threads: int = 1) -> dict[str, Path]:
    """Make every picture (see the module docstring); returns name → PNG path."""
    out.mkdir(parents=True, exist_ok=True)
    work = work or Path(tempfile.mkdtemp(prefix="s2dc-screenshots-"))
    views = SliceViews(size=size)
    scene = views.scene
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    logic = S2DCLogic(scene=scene, python=sys.executable, env=env)
    spacing = FOV_MM / phantomSize
    # The phantom at its own spacing (the tiny preset resamples to 1.5 mm); torch threads per worker (on a
    # shared machine one thread is much faster than two oversubscribed ones).
    overrides = (f"preprocess.spacing=[{spacing},{spacing},{spacing}]", f"runtime.threads={threads}")
    started = time.monotonic()

    def step(message: str) -> None:
        log.info("[%5.1f s] %s", time.monotonic() - started, message)

    step(f"phantom cohort ({phantomSize}³ voxels, 3 cases)")
    cohort = work / "cohort"
    makePhantomCohort(cohort, sys.executable, env, cases=3, size=phantomSize)
    image, affine = VolumeFiles.readVolumeFile(cohort / "imagesTr" / "case_000.nii.gz")
    truth, _ = VolumeFiles.readVolumeFile(cohort / "labelsTr" / "case_000.nii.gz")
    truth = truth.astype(np.int32)
    volume = MRMLBridge.addVolume(scene, image, affine, "phantom")
    display = volume.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevel(400.0, 40.0)  # CT abdomen window, as Slicer's "Abdomen" preset

    step(f"pretrain an encoder (tiny, {pretrainSteps} steps)")
    encoder = logic.pretrain(cohort, work / "pretrain", preset="tiny", steps=pretrainSteps, device=device,
                             overrides=overrides)
    step(f"fine-tune a segmenter from it (tiny, {finetuneSteps} steps, 2 training cases)")
    model = logic.finetune(cohort, work / "finetune", init=encoder, preset="tiny", steps=finetuneSteps,
                           device=device, overrides=(*overrides, "train_cases=2", f"val_every={finetuneSteps}"))

    step("segment, embed and propagate through the module's logic")
    segmentation = logic.segment(volume, model, device=device)
    centre = np.array(image.shape) // 2
    names = _labels(cohort)
    liverVoxels = np.argwhere(truth == names["liver"])
    seedIjk = liverVoxels[np.argmin(np.abs(liverVoxels - liverVoxels.mean(axis=0)).sum(axis=1))]
    seedRas = tuple((affine @ np.array([*seedIjk, 1.0]))[:3])
    seed = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "seed")
    seed.CreateDefaultDisplayNodes()
    seed.GetDisplayNode().SetPointLabelsVisibility(False)  # (labels render mirrored offscreen here)
    seed.AddControlPoint(*seedRas)
    embedding = logic.embed(volume, encoder, pca=True, clusters=6, seed=seed, device=device)
    scribbleLabels = scribblesFromLabels(truth, tuple(names.get(n, 0) for n in SCRIBBLE_CLASSES), 40, seed=1)
    palette = {"background": (60, 60, 60), "liver": (221, 130, 101), "fat": (230, 220, 70)}
    scribbles = Segmentations.labelmapToSegmentation(
        scene, scribbleLabels, [Segmentations.LabelEntry(n + 1, name, palette[name])
                                for n, name in enumerate(SCRIBBLE_CLASSES)], volume, name="scribbles")
    propagated = logic.propagate(volume, encoder, scribbles, device=device)
    reference = Segmentations.labelmapToSegmentation(
        scene, truth, Segmentations.labelEntriesFromSidecar(
            {"labels": [{"value": v, "name": n} for n, v in names.items()]}), volume, name="truth")

    step("render the slice views")
    segmentationNodes = [segmentation, embedding.structures, propagated, reference, scribbles]

    def only(*visible):
        for node in segmentationNodes:
            node.GetDisplayNode().SetVisibility(node in visible)
        seed.GetDisplayNode().SetVisibility(seed in visible)

    jump = tuple((affine @ np.array([*centre, 1.0]))[:3])
    pictures = {}
    for name, visible, foreground, opacity in (
            ("segmentation", (segmentation,), None, 0.0),
            ("pca", (), embedding.pca, 0.5),
            ("structures", (embedding.structures,), None, 0.0),
            ("similarity", (seed,), embedding.similarity, 0.5),
            ("propagate", (propagated,), None, 0.0),
            ("truth", (reference,), None, 0.0)):
        only(*visible)
        views.show(background=volume, foreground=foreground, opacity=opacity)
        views.jumpTo(seedRas if name == "similarity" else jump)
        pictures[name] = views.saveRow(out / f"{name}.png")
    pictures["overview"] = _stack(out / "overview.png", pictures["similarity"], pictures["propagate"])
    step(f"wrote {len(pictures)} pictures to {out}")
    return pictures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="folder for the PNGs")
    parser.add_argument("--size", type=int, default=256, help="pixels per view (default 256)")
    parser.add_argument("--phantom-size", type=int, default=48, help="phantom voxels per side (default 48)")
    parser.add_argument("--pretrain-steps", type=int, default=10)
    parser.add_argument("--finetune-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    parser.add_argument("--keep-work", action="store_true", help="keep the cohort and runs (in OUT/work)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.size < 64:
        parser.error("--size must be at least 64 pixels")
    work = args.out / "work" if args.keep_work else Path(tempfile.mkdtemp(prefix="s2dc-screenshots-"))
    if args.keep_work and work.exists():
        shutil.rmtree(work)
    try:
        run(args.out, size=args.size, phantomSize=args.phantom_size, pretrainSteps=args.pretrain_steps,
            finetuneSteps=args.finetune_steps, work=work, threads=args.threads)
    except Exception as exc:  # one line for the user; the log above has the steps
        print(f"screenshots: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
