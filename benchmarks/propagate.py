"""Propagation from seeds: `s2dc propagate` (default method, ``grow``) against Slicer's Grow from seeds.

    python benchmarks/propagate.py [--cache ~/.cache/s2dc/brain] [--rows colin27,mni152,phantom_ct,phantom_mr]
                                   [--patterns random,strokes] [--seeds-per-class 20] [--out benchmarks/results]
                                   [--phantom-seed 11]

Both methods get the same seeds on the same volume, at its native grid:

* **Grow from seeds**: Slicer's ``vtkImageGrowCutSegment`` (the Segment Editor effect's filter, from
  slicer-core), seed locality 0, on the whole volume; timed around the filter only (image and seeds
  already in memory), as a user who has the volume loaded in Slicer would see it.
* **propagate**: `S2DCCore.inference.propagate` with its defaults (``grow``: the geodesic competition on
  the denoised image + per-class refinement; it loads no encoder), timed from reading the image and seed
  files to writing the labelmap (what ``s2dc propagate`` does).

Rows: Colin27 + AAL in 7 lobar classes (1 mm, 181×217×181), the MNI152 2009a T1 with tissue classes
(argmax of 1−GM−WM, GM, WM inside the brain; 1 mm, 197×233×189), CT and MR phantoms (160³, 2.5 mm).
Seed patterns: N random voxels per class (background included), and strokes: on 3 axial slices, a line
of up to 15 voxels through the eroded inside of every class present there. Dice is the mean over the
foreground classes of each row. Colin27 and MNI152 need `tools/fetch_brain_data.sh CACHE`. The phantoms are
case 0 of the cohort with seed ``--phantom-seed`` (11, the benchmark's; other seeds are other draws of the
anatomy and tissue intensities, written to ``propagate_phantom<seed>.json``). ``--method knn|linear`` runs
propagate's classifiers on the shipped default encoder's embeddings instead (``propagate_<method>.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STROKE_LENGTH = 15
STROKE_SLICES = (0.3, 0.5, 0.7)
PHANTOM_SEED = 11


def colin27_case(cache: Path):
    from S2DCCore.data.brain import CLASSES, FILES, group_aal, read_aal_codes
    from S2DCCore.io.image import read_image

    image = read_image(cache / FILES["colin27"])
    aal = read_image(cache / FILES["aal"])
    labels = group_aal(aal.array, read_aal_codes(cache / FILES["aal_table"])).astype(np.uint8)
    return image.array.astype(np.float32), labels, image.affine, CLASSES


def mni152_case(cache: Path):
    from S2DCCore.io.image import read_image

    t1 = read_image(cache / "nilearn/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    gm = read_image(cache / "nilearn/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz").array.astype(np.float32)
    wm = read_image(cache / "nilearn/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz").array.astype(np.float32)
    gm, wm = gm / max(gm.max(), 1), wm / max(wm.max(), 1)
    brain = t1.array > 0
    tissue = np.argmax(np.stack([1 - gm - wm, gm, wm]), axis=0) + 1
    labels = np.where(brain, tissue, 0).astype(np.uint8)
    return t1.array.astype(np.float32), labels, t1.affine, {0: "background", 1: "csf_other", 2: "grey_matter",
                                                             3: "white_matter"}


def phantom_case(modality: str, size: int = 160, seed: int = PHANTOM_SEED):
    from S2DCCore.data.phantoms import PhantomConfig, make_phantom

    phantom = make_phantom(0, seed, PhantomConfig(size=size, modality=modality))
    return phantom.image.astype(np.float32), phantom.label.astype(np.uint8), phantom.affine, phantom.label_names


def random_seeds(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """``per_class`` voxels of every class (background included), as a labelmap of value class + 1."""
    seeds = np.zeros(labels.shape, np.uint8)
    flat = labels.reshape(-1)
    for value in np.unique(flat):
        where = np.flatnonzero(flat == value)
        pick = rng.choice(where, size=min(per_class, len(where)), replace=False)
        seeds.reshape(-1)[pick] = value + 1
    return seeds


def stroke_seeds(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """On 3 axial slices through the labelled extent, one straight stroke per class present (inside its
    eroded area), value class + 1."""
    from scipy import ndimage

    seeds = np.zeros(labels.shape, np.uint8)
    zs = np.flatnonzero((labels > 0).any(axis=(0, 1)))
    for frac in STROKE_SLICES:
        z = int(zs[0] + frac * (zs[-1] - zs[0]))
        plane = labels[:, :, z]
        for value in np.unique(plane):
            mask = plane == value
            inner = ndimage.binary_erosion(mask, iterations=2)
            if not inner.any():
                inner = mask
            points = np.argwhere(inner)
            centre = points[rng.integers(len(points))].astype(float)
            angle = rng.uniform(0, np.pi)
            direction = np.array([np.cos(angle), np.sin(angle)])
            for t in np.arange(-STROKE_LENGTH / 2, STROKE_LENGTH / 2 + 0.5, 0.5):
                i, j = np.round(centre + t * direction).astype(int)
                if 0 <= i < plane.shape[0] and 0 <= j < plane.shape[1] and inner[i, j]:
                    seeds[i, j, z] = value + 1
    return seeds


def grow_from_seeds(image: np.ndarray, seeds: np.ndarray) -> tuple[np.ndarray, float]:
    """Slicer's Grow from seeds filter on the whole volume; returns (labels with seed values, seconds)."""
    import slicer
    from vtk.util import numpy_support

    import vtk

    def to_vtk(array: np.ndarray, vtk_type):
        data = vtk.vtkImageData()
        data.SetDimensions(*array.shape)
        flat = np.ascontiguousarray(array.transpose(2, 1, 0)).reshape(-1)  # VTK: x fastest
        data.GetPointData().SetScalars(numpy_support.numpy_to_vtk(flat, deep=True, array_type=vtk_type))
        return data

    intensity = to_vtk(image.astype(np.int16) if np.abs(image).max() < 32000 else image, vtk.VTK_SHORT
                       if np.abs(image).max() < 32000 else vtk.VTK_FLOAT)
    seed_data = to_vtk(seeds.astype(np.int16), vtk.VTK_SHORT)
    grow = slicer.vtkImageGrowCutSegment()
    grow.SetIntensityVolume(intensity)
    grow.SetSeedLabelVolume(seed_data)
    grow.SetDistancePenalty(0.0)
    start = time.perf_counter()
    grow.Update()
    seconds = time.perf_counter() - start
    out = numpy_support.vtk_to_numpy(grow.GetOutput().GetPointData().GetScalars())
    return out.reshape(image.shape[::-1]).transpose(2, 1, 0).copy(), seconds


def run_propagate(image_path: Path, seeds_path: Path, out_path: Path, **options) -> tuple[np.ndarray, float]:
    """`s2dc propagate` as a user runs it (defaults), timed from reading to writing."""
    from S2DCCore.inference.propagate import propagate_image
    from S2DCCore.io.image import read_image, write_image

    start = time.perf_counter()
    result = propagate_image(image_path, None, seeds_path, **options)
    write_image(out_path, result.labels, result.affine)
    seconds = time.perf_counter() - start
    return read_image(out_path).array, seconds


def mean_dice(pred: np.ndarray, ref: np.ndarray, values) -> float:
    scores = []
    for v in values:
        a, b = pred == v, ref == v
        total = a.sum() + b.sum()
        scores.append(2.0 * (a & b).sum() / total if total else 1.0)
    return float(np.mean(scores))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache/s2dc/brain")
    parser.add_argument("--rows", default="colin27,mni152,phantom_ct,phantom_mr")
    parser.add_argument("--patterns", default="random,strokes")
    parser.add_argument("--seeds-per-class", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--phantom-seed", type=int, default=PHANTOM_SEED)
    parser.add_argument("--method", default="grow", choices=("grow", "knn", "linear"),
                        help="propagate's method; knn and linear use the shipped default encoder (no --model)")
    args = parser.parse_args(argv)

    import torch

    from S2DCCore.io.image import write_image

    torch.set_num_threads(args.threads)
    makers = {"colin27": lambda: colin27_case(args.cache), "mni152": lambda: mni152_case(args.cache),
              "phantom_ct": lambda: phantom_case("ct", seed=args.phantom_seed),
              "phantom_mr": lambda: phantom_case("mr", seed=args.phantom_seed)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.rows.split(","):
            image, labels, affine, classes = makers[name]()
            image_path = tmp / f"{name}.nii.gz"
            write_image(image_path, image, affine)
            values = [v for v in sorted(classes) if v]
            for pattern in args.patterns.split(","):
                rng = np.random.default_rng(args.seed)
                seeds = (random_seeds(labels, args.seeds_per_class, rng) if pattern == "random"
                         else stroke_seeds(labels, rng))
                seeds_path = tmp / f"{name}_{pattern}_seeds.nii.gz"
                write_image(seeds_path, seeds, affine)
                grown, t_grow = grow_from_seeds(image, seeds)
                ours, t_ours = run_propagate(image_path, seeds_path, tmp / f"{name}_{pattern}_out.nii.gz",
                                             method=args.method)
                row = {"row": name, "pattern": pattern, "voxels": int(labels.size), "seeded": int((seeds > 0).sum()),
                       "grow_dice": mean_dice(grown.astype(np.int64) - 1, labels, values), "grow_s": t_grow,
                       "propagate_dice": mean_dice(ours.astype(np.int64) - 1, labels, values), "propagate_s": t_ours}
                row["delta"] = row["propagate_dice"] - row["grow_dice"]
                rows.append(row)
                print(f"{name:11s} {pattern:8s} grow {row['grow_dice']:.3f} ({t_grow:.1f} s)  "
                      f"propagate {row['propagate_dice']:.3f} ({t_ours:.1f} s)  Δ {row['delta']:+.3f}", flush=True)
    print()
    print("| row | seeds | voxels | seeded | Grow from seeds Dice | s | propagate Dice | s (read→write) | Δ Dice |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['row']} | {r['pattern']} | {r['voxels'] / 1e6:.1f} M | {r['seeded']} | {r['grow_dice']:.3f} | "
              f"{r['grow_s']:.1f} | {r['propagate_dice']:.3f} | {r['propagate_s']:.1f} | {r['delta']:+.3f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    name = "propagate" + ("" if args.method == "grow" else f"_{args.method}") + (
        "" if args.phantom_seed == PHANTOM_SEED else f"_phantom{args.phantom_seed}") + ".json"
    (args.out / name).write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
