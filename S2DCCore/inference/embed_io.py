"""Writing an `Embedding` to a folder, all or nothing.

``OUTDIR`` (which must not exist, or be empty) receives:

* ``embeddings.npz`` (no pickle): ``features`` (X', Y', Z', C) float32 on the feature grid, ``affine``
  (4, 4) feature voxel → RAS, ``stage``, ``stride`` (model voxels per token), ``model_affine`` /
  ``model_shape`` (the model grid), ``input_affine`` / ``input_shape``;
* ``pca_rgb.nii.gz``: uint8 RGB on the input grid, stored as NIfTI shape (X, Y, Z, 1, 3) with intent
  VECTOR, i.e. dim[5] = 3 components. ITK and 3D Slicer load it as a 3-component vector (RGB) volume;
  a plain 4-D (X, Y, Z, 3) file would be read as a 3-frame sequence instead. ``np.squeeze(axis=3)`` of the
  nibabel array gives (X, Y, Z, 3);
* ``structures.nii.gz`` (uint8 labels 1..K) with its ``structures.json`` label table;
* ``similarity.nii.gz`` (float32, cosine similarity in [−1, 1]);
* ``embedding.json``: what was computed from what (stage, stride, grids, point, clusters, model, image).

Everything is written into a hidden temporary folder beside ``OUTDIR`` and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from S2DCCore.errors import UsageError
from S2DCCore.inference.embed import Embedding
from S2DCCore.inference.label_table import label_entries
from S2DCCore.io.image import write_image
from S2DCCore.utils.disk import storage_errors
from S2DCCore.utils.faults import fault_point
from S2DCCore.utils.tempfiles import make_temp_dir, sweep_stale

NIFTI_INTENT_VECTOR = "vector"


def check_output_dir(path: str | Path) -> Path:
    """``path`` if it does not exist or is an empty folder, else a `UsageError`."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError("output folder exists and is not empty; refusing to write into it", path)
    return path


def write_embedding(outdir: str | Path, result: Embedding, *,
                    preview_image: np.ndarray | None = None) -> dict[str, Path]:
    """Write ``result`` into ``outdir`` (see the module docstring); return the files written by name.

    Args:
        outdir: a new or empty folder.
        result: from `S2DCCore.inference.embed.embed`.
        preview_image: the input's array (X, Y, Z); when given, ``preview_pca.png``,
            ``preview_structures.png`` and ``preview_similarity.png`` show the overlays on it.
    """
    outdir = check_output_dir(outdir)
    with storage_errors(outdir, "the embedding folder", result.features.nbytes):
        outdir.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(outdir)  # the temporary folder of a writer killed before its rename
        tmp = make_temp_dir(outdir)
        try:
            names = _write_all(tmp, result)
            if preview_image is not None:
                names += _write_previews(tmp, result, preview_image)
            fault_point("embed.write", tmp)
            check_output_dir(outdir)
            if outdir.exists():
                outdir.rmdir()
            os.replace(tmp, outdir)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return {name: outdir / name for name in names}


def write_rgb_nifti(path: Path, rgb: np.ndarray, affine: np.ndarray) -> Path:
    """(X, Y, Z, 3) uint8 → NIfTI vector volume (X, Y, Z, 1, 3), intent VECTOR, sform = qform = ``affine``."""
    import nibabel as nib

    image = nib.Nifti1Image(np.ascontiguousarray(rgb, dtype=np.uint8)[:, :, :, None, :], affine)
    image.header.set_intent(NIFTI_INTENT_VECTOR)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    nib.save(image, str(path))
    return path


def _write_all(folder: Path, result: Embedding) -> list[str]:
    np.savez_compressed(
        folder / "embeddings.npz", features=result.features.astype(np.float32, copy=False),
        affine=result.feature_grid.affine, stage=np.int64(result.stage), stride=np.int64(result.stride),
        model_affine=result.model_grid.affine, model_shape=np.asarray(result.model_grid.shape),
        input_affine=result.input_grid.affine, input_shape=np.asarray(result.input_grid.shape))
    names = ["embeddings.npz"]
    affine = result.input_grid.affine
    if result.pca_rgb is not None:
        write_rgb_nifti(folder / "pca_rgb.nii.gz", result.pca_rgb, affine)
        names.append("pca_rgb.nii.gz")
    structures = {}
    if result.structures is not None:
        write_image(folder / "structures.nii.gz", result.structures, affine)
        k = result.clusters or int(result.structures.max())
        structures = {v: f"structure {v}" for v in range(1, k + 1)}
        (folder / "structures.json").write_text(json.dumps(
            {"format_version": 1, "labelmap": "structures.nii.gz", "labels": label_entries(structures)}, indent=2))
        names += ["structures.nii.gz", "structures.json"]
    if result.similarity is not None:
        write_image(folder / "similarity.nii.gz", result.similarity.astype(np.float32), affine)
        names.append("similarity.nii.gz")
    manifest = {
        "format_version": 1, "image": result.source, "model": result.model_source, "stage": result.stage,
        "stride": result.stride, "channels": int(result.features.shape[-1]),
        "feature_grid": {"shape": list(result.feature_grid.shape), "affine": result.feature_grid.affine.tolist()},
        "model_grid": {"shape": list(result.model_grid.shape), "affine": result.model_grid.affine.tolist()},
        "input_grid": {"shape": list(result.input_grid.shape), "affine": affine.tolist()},
        "clusters": len(structures) or None, "point_ras_mm": None if result.point is None else list(result.point),
        "files": names + ["embedding.json"],
    }
    (folder / "embedding.json").write_text(json.dumps(manifest, indent=2))
    return names + ["embedding.json"]


def _write_previews(folder: Path, result: Embedding, image: np.ndarray) -> list[str]:
    from S2DCCore.inference.previews import save_label_preview, save_rgb_montage, similarity_colours

    affine = result.input_grid.affine
    names = []
    if result.pca_rgb is not None:
        save_rgb_montage(folder / "preview_pca.png", image, result.pca_rgb, affine)
        names.append("preview_pca.png")
    if result.structures is not None:
        save_label_preview(folder / "preview_structures.png", image, result.structures, affine)
        names.append("preview_structures.png")
    if result.similarity is not None:
        save_rgb_montage(folder / "preview_similarity.png", image, similarity_colours(result.similarity), affine)
        names.append("preview_similarity.png")
    return names
