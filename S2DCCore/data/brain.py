"""The real-MRI study cohort: Colin27 T1 + the AAL atlas drawn on it, left hemisphere → right hemisphere.

One labelled subject, so the split is spatial and the protocol is built to stay honest:

* labels: AAL's 116 parcels grouped by the first digit of their AAL code into 7 classes (frontal,
  insula + limbic, occipital, parietal, deep grey matter, temporal, cerebellum + vermis);
* training: K fixed crops of the **left** hemisphere (world x < −4 mm), the full hemisphere width and
  64 × 64 voxels in y, z, ordered so the first K are the K-shot set (crop 0 central);
* test: the **right** hemisphere (x > +4 mm), never seen by any training step;
* pretraining pool (``pretrain/``): other subjects only, the MNI152 2009a template (nilearn) and the ITK
  example T1 head (skull-stripped with its mask), never Colin27;
* floor (``floors/``): the left hemisphere's labels mirrored (x → −x) onto the right: the mirrored atlas.

`tools/fetch_brain_data.sh CACHE` fills the cache from Debian packages and the nilearn wheel; nothing is
downloaded here, and no data file is part of the repository (docs/data.md: provenance and licences).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from S2DCCore.errors import DataError, UsageError
from S2DCCore.geometry import Grid, index_map, model_grid, resample, slab_points

CLASSES = {0: "background", 1: "frontal", 2: "insula_limbic", 3: "occipital", 4: "parietal",
           5: "deep_grey_matter", 6: "temporal", 7: "cerebellum"}
# First digit of the AAL code → class (codes 2xxx frontal, 3xxx insula, 4xxx limbic, ..., 9xxx cerebellum/vermis).
CODE_CLASS = {2: 1, 3: 2, 4: 2, 5: 3, 6: 4, 7: 5, 8: 6, 9: 7}
GAP_MM = 4.0     # excluded either side of the mid-sagittal plane (2 voxels at 2 mm)
CROP = 64        # crop side in y and z (voxels)
TEMPLATES = "root/usr/share/mricron/templates"
ITK_DATA = "root/usr/share/doc/insighttoolkit5-examples/examples/Data"
FILES = {
    "colin27": f"{TEMPLATES}/ch2bet.nii.gz",
    "aal": f"{TEMPLATES}/aal.nii.gz",
    "aal_table": f"{TEMPLATES}/aal.nii.txt",
    "mni152": "nilearn/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "itk_t1": f"{ITK_DATA}/KmeansTest_T1UCharRaw.nii.gz",
    "itk_mask": f"{ITK_DATA}/KmeansTest_T1RawSkullStrip.nii.gz",
}


def read_aal_codes(path: Path) -> dict[int, int]:
    """AAL index → AAL code from ``aal.nii.txt`` (lines ``index name code``; blank lines skipped)."""
    codes = {}
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3:
            codes[int(parts[0])] = int(parts[-1])
    if not codes:
        raise DataError("no 'index name code' lines", path)
    return codes


def group_aal(aal: np.ndarray, codes: dict[int, int]) -> np.ndarray:
    """Map AAL parcel indices to the 7 classes of `CLASSES` (0 stays background)."""
    lookup = np.zeros(max(max(codes), int(aal.max())) + 1, dtype=np.uint8)
    for index, code in codes.items():
        first = int(str(code)[0])
        if first not in CODE_CLASS:
            raise ValueError(f"AAL code {code} (index {index}) has no class")
        lookup[index] = CODE_CLASS[first]
    return lookup[aal.astype(np.int64)]


def nearest_resample(labels: np.ndarray, src: Grid, dst: Grid) -> np.ndarray:
    """Labels of ``src`` at the voxel centres of ``dst`` (nearest neighbour, clamped at the edges)."""
    out = np.zeros(dst.shape, dtype=labels.dtype)
    for k0, k1, points in slab_points(index_map(src, dst), dst.shape, labels.shape):
        idx = np.rint(points).astype(np.int64)
        out[:, :, k0:k1] = labels[idx[..., 0], idx[..., 1], idx[..., 2]]
    return out


def hemisphere_slices(grid: Grid, gap_mm: float = GAP_MM) -> tuple[slice, slice]:
    """Index ranges along the first axis of the left (x < −gap) and right (x > +gap) hemispheres.

    The grid must be RAS-aligned (first axis along +x), as `model_grid` makes it.
    """
    direction = grid.affine[:3, :3]
    if not (np.allclose(direction - np.diag(np.diag(direction)), 0) and (np.diag(direction) > 0).all()):
        raise ValueError("hemisphere_slices needs an axis-aligned RAS grid")
    x = grid.affine[0, 3] + grid.affine[0, 0] * np.arange(grid.shape[0])
    left, right = np.flatnonzero(x < -gap_mm), np.flatnonzero(x > gap_mm)
    return slice(int(left[0]), int(left[-1]) + 1), slice(int(right[0]), int(right[-1]) + 1)


def sub_grid(grid: Grid, slices: tuple[slice, slice, slice]) -> Grid:
    """The grid of ``array[slices]``: same spacing and directions, origin at the first kept voxel."""
    start = np.array([s.start or 0 for s in slices] + [1], dtype=np.float64)
    affine = grid.affine.copy()
    affine[:3, 3] = (grid.affine @ start)[:3]
    shape = tuple(len(range(*s.indices(n))) for s, n in zip(slices, grid.shape))
    return Grid(shape, affine)


def crop_starts(labels: np.ndarray, size: int = CROP) -> list[tuple[int, int]]:
    """(y, z) starts of the 4 crops over the labelled bounding box: central, anterior-superior,
    posterior-inferior, anterior-inferior (the first K are the K-shot set)."""
    ys, zs = np.flatnonzero(labels.any(axis=(0, 2))), np.flatnonzero(labels.any(axis=(0, 1)))
    ny, nz = labels.shape[1], labels.shape[2]

    def place(lo, hi, n, where):
        start = {"low": lo, "high": hi - size + 1, "centre": (lo + hi + 1) // 2 - size // 2}[where]
        return int(np.clip(start, 0, max(n - size, 0)))

    order = (("centre", "centre"), ("high", "high"), ("low", "low"), ("high", "low"))
    return [(place(ys[0], ys[-1], ny, a), place(zs[0], zs[-1], nz, b)) for a, b in order]


def mirror_labels(labels: np.ndarray, grid: Grid, target: Grid) -> np.ndarray:
    """The mirrored atlas: for every voxel of ``target``, the label of ``grid`` at world (−x, y, z)."""
    mirror = np.diag([-1.0, 1.0, 1.0, 1.0])
    return nearest_resample(labels, grid, Grid(target.shape, mirror @ target.affine))


def class_counts(labels: np.ndarray) -> dict[str, int]:
    counts = np.bincount(labels.ravel(), minlength=len(CLASSES))
    return {CLASSES[v]: int(counts[v]) for v in CLASSES if v}


def write_colin27_cohort(cache: str | Path, out: str | Path, *, spacing: float = 2.0) -> Path:
    """Build the study cohort in ``out`` from the fetched ``cache`` (see the module docstring).

    Raises:
        UsageError: ``out`` exists and is not empty.
        DataError: a cache file is missing (run ``tools/fetch_brain_data.sh CACHE``).
    """
    from S2DCCore.io.image import read_image

    cache, out = Path(cache), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError("exists and is not an empty folder; refusing to write a cohort into it", out)
    paths = {key: cache / rel for key, rel in FILES.items()}
    for path in paths.values():
        if not path.is_file():
            raise DataError(f"missing from the cache; run tools/fetch_brain_data.sh {cache} first", path)
    colin, aal = read_image(paths["colin27"]), read_image(paths["aal"])
    grid = Grid(colin.shape, colin.affine)
    target = model_grid(grid, (spacing,) * 3, "RAS")
    image = resample(colin.array.astype(np.float32), grid, target)
    labels = nearest_resample(group_aal(aal.array, read_aal_codes(paths["aal_table"])), grid, target)
    left, right = hemisphere_slices(target)
    full = (slice(None), slice(None))
    left_labels = labels[left]
    crops = [(left, slice(y, y + CROP), slice(z, z + CROP)) for y, z in crop_starts(left_labels)]

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        training, crop_info = [], []
        for n, slices in enumerate(crops):
            name = f"colin27_left_crop{n}"
            training.append(_write_pair(tmp, name, image[slices], labels[slices], sub_grid(target, slices)))
            crop_info.append({"case": name, "voxels": [[s.start, s.stop] for s in slices],
                              "class_voxels": class_counts(labels[slices])})
        right_slices = (right,) + full
        right_grid = sub_grid(target, right_slices)
        test = [_write_pair(tmp, "colin27_right", image[right_slices], labels[right_slices], right_grid)]
        left_grid = sub_grid(target, (left,) + full)
        mirrored = mirror_labels(left_labels, left_grid, right_grid)
        _write(tmp / "floors" / "colin27_right_mirrored_atlas.nii.gz", mirrored, right_grid)
        pool = _write_pool(tmp / "pretrain", paths, spacing)
        manifest = _manifest(training, test, crop_info, labels[right_slices], pool, target, cache)
        (tmp / "dataset.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_pool(folder: Path, paths: dict[str, Path], spacing: float) -> list[str]:
    """Other subjects for pretraining, at the study spacing: the MNI152 template and the ITK T1 (masked)."""
    from S2DCCore.io.image import read_image

    mni = read_image(paths["mni152"])
    itk, mask = read_image(paths["itk_t1"]), read_image(paths["itk_mask"])
    written = []
    for name, array, affine in (("mni152_t1", mni.array, mni.affine),
                                ("itk_t1", itk.array * (mask.array > 0), itk.affine)):
        grid = Grid(array.shape, affine)
        target = model_grid(grid, (spacing,) * 3, "RAS")
        _write(folder / f"{name}.nii.gz", resample(array.astype(np.float32), grid, target), target)
        written.append(name)
    return written


def _write_pair(root: Path, name: str, image: np.ndarray, labels: np.ndarray, grid: Grid) -> dict:
    _write(root / "imagesTr" / f"{name}.nii.gz", image.astype(np.float32), grid)
    _write(root / "labelsTr" / f"{name}.nii.gz", labels.astype(np.uint8), grid)
    return {"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"}


def _write(path: Path, array: np.ndarray, grid: Grid) -> None:
    from S2DCCore.io.image import write_image

    write_image(path, np.ascontiguousarray(array), grid.affine)


def _manifest(training, test, crop_info, test_labels, pool, grid: Grid, cache: Path) -> dict:
    return {
        "name": "Colin27 + AAL lobes, left → right hemisphere",
        "description": "Colin27 T1 (ch2bet) and the AAL atlas grouped into 7 classes, resampled to "
                       f"{grid.spacing[0]:g} mm; training crops from the left hemisphere, test = right hemisphere; "
                       "pretraining pool = other subjects (MNI152 2009a, ITK example T1).",
        "reference": "Holmes et al. 1998 (Colin27); Tzourio-Mazoyer et al. 2002 (AAL); Fonov et al. 2011 (MNI152)",
        "licence": "see docs/data.md: Debian mricron-data (BSD-3-clause), atlas authors' terms",
        "tensorImageSize": "3D",
        "modality": {"0": "MR"},
        "labels": {str(k): v for k, v in CLASSES.items()},
        "numTraining": len(training),
        "numTest": len(test),
        "training": training,
        "test": test,
        "study": {"pretrain": "pretrain",
                  "floors": {"mirrored atlas": {"colin27_right": "floors/colin27_right_mirrored_atlas.nii.gz"}},
                  # The classes merge left and right parcels, so a left-right mirror keeps every label valid.
                  "probe_flip_axes": [0],
                  "crops": crop_info, "test_class_voxels": class_counts(test_labels), "pretrain_images": pool,
                  "grid": {"shape": list(grid.shape), "spacing_mm": list(grid.spacing), "gap_mm": GAP_MM},
                  "provenance": {"cache": str(cache), "files": dict(FILES),
                                 "packages": ["mricron-data 1.2.20211006+dfsg-4 (Debian)",
                                              "insighttoolkit5-examples 5.2.1 (Debian)",
                                              "nilearn 0.14.1 wheel (PyPI), MNI152 files only"]}},
    }
