"""The project's embedded default data: a seeded cohort of synthetic torso CT or MR volumes with labels.

Each case is a canonical torso (`phantom_anatomy`: body wall and fat, lungs, a lobed liver, spleen,
two kidneys, vertebrae, aorta, bowel with gas, heart) placed by a random global affine and a smooth
elastic warp (`phantom_geometry`), then given intensities: CT in Hounsfield units (fixed tissue values
with small per-subject shifts, per-tissue textures, partial-volume blur, Gaussian noise) or MR in
arbitrary positive units (tissue means drawn per subject, a multiplicative bias field, Rician noise).
Intensity alone does not give the label (see `phantom_anatomy`); an intensity-only classifier scores a
mean foreground Dice well below 0.5 (``Testing/data/test_phantoms.py``).

Geometry: arrays are indexed ``[i, j, k]`` with i → R, j → A, k → S (nibabel's convention) and the affine
maps voxels to RAS mm. The field of view is ``fov_mm`` (400 mm) on every axis, so the spacing is
``fov_mm / size`` (4.17 mm at 96); ``anisotropic=True`` makes slices ``z_factor`` (2.5) times thicker with
proportionally fewer of them. The world origin is random but seeded.

Correspondence: `voxel_to_canonical` and `canonical_to_voxel` (re-exported from `phantom_geometry`)
map a case's voxels to canonical body millimetres and back, using ``Phantom.geometry``; the first is
exact, the second converges to ~1e-6 voxel. The same canonical point is the same anatomy in every
case, up to each case's own organ jitter (a few mm to cm, drawn in `sample_anatomy`).

Determinism: case ``n`` of seed ``s`` draws everything from ``np.random.default_rng([s, n])``, so the
same seed gives identical arrays and byte-identical ``.nii.gz`` files (nibabel writes gzip with mtime 0
and no file name) on the same machine and library versions; BLAS differences between machines may move
a boundary voxel. A 96³ case takes about 0.2–0.3 s on 2 cores (writing it as .nii.gz another ~0.5 s).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from S2DCCore.data.phantoms.anatomy import STRUCTURES, TISSUES, Frame, paint_anatomy, sample_anatomy
from S2DCCore.data.phantoms.geometry import (PhantomGeometry, canonical_grid, canonical_to_voxel, sample_geometry,
                                            smooth_field, voxel_to_canonical)

__all__ = ["STRUCTURES", "PhantomConfig", "Phantom", "make_phantom", "write_phantom_cohort",
           "voxel_to_canonical", "canonical_to_voxel", "canonical_grid", "PhantomGeometry"]

logger = logging.getLogger(__name__)

# CT: (mean HU, per-subject s.d. of the mean, texture amplitude HU), in the order of TISSUES.
_CT = {
    "air": (-1000, 0, 0), "fat": (-100, 8, 10), "muscle": (50, 5, 8), "lung": (-860, 25, 35),
    "liver": (60, 6, 8), "spleen": (48, 5, 6), "kidney_cortex": (38, 5, 6), "kidney_medulla": (28, 5, 6),
    "marrow": (230, 40, 40), "cortical_bone": (650, 80, 60), "blood": (42, 4, 5), "bowel_wall": (45, 5, 8),
    "bowel_content": (15, 8, 10), "csf": (10, 3, 3), "disc": (80, 8, 8),
}
# MR: range of the per-subject mean (fraction of 1000 a.u.) and texture amplitude (same units).
_MR = {
    "air": (0.0, 0.0, 0.0), "fat": (0.55, 1.0, 0.04), "lung": (0.02, 0.08, 0.02), "cortical_bone": (0.02, 0.1, 0.01),
    "marrow": (0.35, 0.9, 0.05), "csf": (0.05, 0.9, 0.02),
}
_MR_SOFT = (0.15, 0.75, 0.03)  # every other tissue: soft tissues drawn independently from one range


@dataclass(frozen=True)
class PhantomConfig:
    """How to make phantoms.

    Attributes:
        size: voxels per side in-plane (and along z unless anisotropic).
        modality: ``"ct"`` (Hounsfield units) or ``"mr"`` (arbitrary units, positive).
        anisotropic: slices ``z_factor`` times thicker, with proportionally fewer of them.
        fov_mm: field of view along every axis (mm).
        z_factor: slice-thickness factor when anisotropic.
        warp_mm: s.d. of the elastic warp's control displacements (mm).
    """

    size: int = 96
    modality: str = "ct"
    anisotropic: bool = False
    fov_mm: float = 400.0
    z_factor: float = 2.5
    warp_mm: float = 8.0

    def __post_init__(self) -> None:
        if self.modality not in ("ct", "mr"):
            raise ValueError(f"modality must be 'ct' or 'mr', not {self.modality!r}")
        if self.size < 16:
            raise ValueError(f"size must be at least 16 voxels, not {self.size}")

    @property
    def shape(self) -> tuple[int, int, int]:
        nz = max(4, round(self.size / self.z_factor)) if self.anisotropic else self.size
        return (self.size, self.size, nz)

    @property
    def spacing(self) -> tuple[float, float, float]:
        step = self.fov_mm / self.size
        return (step, step, step * self.z_factor if self.anisotropic else step)


@dataclass(frozen=True, eq=False)
class Phantom:
    """One synthetic case.

    Attributes:
        image: float32 [i, j, k], HU (CT) or arbitrary units (MR).
        label: uint8 [i, j, k], values of `STRUCTURES`.
        affine: (4, 4) float64 voxel → RAS (mm).
        label_names: label value → name (`STRUCTURES`).
        geometry: the case's placement of the canonical body (for `voxel_to_canonical` and back).
        anatomy: the drawn anatomical variation (`sample_anatomy`), for the record.
    """

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    label_names: dict[int, str]
    geometry: PhantomGeometry
    anatomy: dict = field(default_factory=dict)


def make_phantom(case_index: int, seed: int, config: PhantomConfig = PhantomConfig()) -> Phantom:
    """Make case ``case_index`` of the cohort with seed ``seed`` (deterministic)."""
    rng = np.random.default_rng([int(seed), int(case_index)])
    geometry = sample_geometry(rng, config.shape, config.spacing, warp_mm=config.warp_mm)
    anatomy = sample_anatomy(rng)
    label, tissue = paint_anatomy(Frame(canonical_grid(geometry), geometry), anatomy, rng)
    image = _render(rng, tissue, geometry, config)
    return Phantom(image=image, label=label, affine=geometry.affine.copy(), label_names=dict(STRUCTURES),
                   geometry=geometry, anatomy=anatomy)


def _render(rng: np.random.Generator, tissue: np.ndarray, geometry: PhantomGeometry, config: PhantomConfig):
    """Tissue map → image: per-tissue means and textures, partial-volume blur, bias field, noise."""
    n = len(TISSUES)
    if config.modality == "ct":
        table = np.array([_CT[t] for t in TISSUES], np.float64)
        means = table[:, 0] + rng.normal(0.0, 1.0, n).clip(-2.0, 2.0) * table[:, 1]
        amps = table[:, 2]
    else:
        table = np.array([_MR.get(t, _MR_SOFT) for t in TISSUES], np.float64)
        means = rng.uniform(table[:, 0], table[:, 1]) * 1000.0
        amps = table[:, 2] * 1000.0
    # Each tissue mixes three texture scales with its own per-subject weights.
    weights = rng.dirichlet(np.ones(3), n)
    extent = np.asarray(geometry.shape) * geometry.spacing
    shape = geometry.shape
    image = means.astype(np.float32)[tissue]
    for k, length in enumerate((6.0, 15.0, 40.0)):
        cells = np.clip(np.round(extent / length), 1, np.maximum(np.asarray(shape) // 2, 1)).astype(int)
        image += (amps * np.sqrt(weights[:, k])).astype(np.float32)[tissue] * smooth_field(rng, shape, tuple(cells))
    # Partial-volume blur: about half a voxel, like a reconstruction kernel.
    image = ndimage.gaussian_filter(image, sigma=0.6, mode="nearest")
    if config.modality == "ct":
        image += rng.normal(0.0, rng.uniform(10.0, 22.0), shape).astype(np.float32)
        return np.clip(image, -1024.0, 3071.0).astype(np.float32)
    cells = np.clip(np.round(extent / 150.0), 1, None).astype(int)
    image *= np.exp(np.float32(rng.uniform(0.15, 0.35)) * smooth_field(rng, shape, tuple(cells)))
    sigma = np.float32(rng.uniform(10.0, 30.0))
    real = image + sigma * rng.standard_normal(shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(shape, dtype=np.float32)
    return np.sqrt(real * real + imag * imag).astype(np.float32)  # Rician magnitude


def write_phantom_cohort(
    out_dir: str | Path, cases: int, seed: int = 0, config: PhantomConfig = PhantomConfig(), preview: bool = False
) -> Path:
    """Write a Decathlon-style cohort: ``imagesTr/``, ``labelsTr/``, ``dataset.json`` (+ ``preview/``).

    The cohort is written into a temporary folder beside ``out_dir`` and renamed at the end, so a
    failure leaves nothing behind.

    Args:
        out_dir: folder to create; it may exist only if empty.
        cases: number of cases (≥ 1).
        seed: the cohort's seed; case ``n`` uses ``default_rng([seed, n])``.
        config: size, modality and spacing of the phantoms.
        preview: also write ``preview/case_NNN.png`` montages.

    Returns:
        ``out_dir``.

    Raises:
        FileExistsError: ``out_dir`` exists and is not an empty folder.
        ValueError: ``cases`` < 1.
    """
    from S2DCCore.io.image import write_image

    out_dir = Path(out_dir)
    if cases < 1:
        raise ValueError(f"cases must be at least 1, not {cases}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir}: exists and is not an empty folder; refusing to write a cohort into it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        training = []
        for n in range(cases):
            phantom = make_phantom(n, seed, config)
            name = f"case_{n:03d}"
            write_image(tmp / "imagesTr" / f"{name}.nii.gz", phantom.image, phantom.affine)
            write_image(tmp / "labelsTr" / f"{name}.nii.gz", phantom.label, phantom.affine)
            training.append({"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"})
            if preview:
                from S2DCCore.data.preview import save_montage

                (tmp / "preview").mkdir(exist_ok=True)
                save_montage(tmp / "preview" / f"{name}.png", phantom.image, phantom.label, affine=phantom.affine,
                             label_names=phantom.label_names)
            logger.debug("phantom %s written (%d of %d)", name, n + 1, cases)
        manifest = _manifest(training, seed, config)
        (tmp / "dataset.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _manifest(training: list[dict], seed: int, config: PhantomConfig) -> dict:
    modality = "CT" if config.modality == "ct" else "MR"
    units = "Hounsfield units" if modality == "CT" else "arbitrary units"
    return {
        "name": f"S2DC synthetic torso ({modality})",
        "description": f"Procedural torso phantoms ({units}) made by S2DCCore.data.phantoms; labels name "
                       "anatomical structures; intensity alone does not determine the label.",
        "reference": "S2DCCore.data.phantoms",
        "licence": "CC0-1.0",
        "tensorImageSize": "3D",
        "modality": {"0": modality},
        "labels": {str(k): v for k, v in STRUCTURES.items()},
        "numTraining": len(training),
        "numTest": 0,
        "training": training,
        "test": [],
        "s2dc": {"generator": "S2DCCore.data.phantoms", "seed": int(seed), "size": config.size,
                 "modality": config.modality, "config": asdict(config),
                 "shape": list(config.shape), "spacing_mm": list(config.spacing)},
    }
