"""NIfTI files for the worker: core arrays in, core arrays out (nibabel, imported on use).

The worker (the core's CLI) reads and writes NIfTI with nibabel, so this side does the same: the
geometry is the same 4×4 voxel → RAS affine on both sides, with no LPS/RAS conversion in between.
Inputs are written uncompressed (``.nii``): writing is on the user's wait path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# NIfTI sform/qform code 1: "scanner" (world) coordinates.
NIFTI_SCANNER = 1


def writeVolumeFile(path: str | Path, array: np.ndarray, affine: np.ndarray) -> Path:
    """Write (X, Y, Z) ``array`` with its voxel → RAS ``affine`` to ``path`` (NIfTI)."""
    import nibabel as nib

    image = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    image.set_sform(affine, code=NIFTI_SCANNER)
    image.set_qform(affine, code=NIFTI_SCANNER)
    nib.save(image, str(path))
    return Path(path)


def readVolumeFile(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(array, affine) of a NIfTI file; vector files stored as (X, Y, Z, 1, C) come back as (X, Y, Z, C)."""
    import nibabel as nib

    image = nib.load(str(path))
    array = np.asanyarray(image.dataobj)
    if array.ndim == 5 and array.shape[3] == 1:
        array = array[:, :, :, 0, :]
    return np.asarray(array), np.asarray(image.affine, dtype=np.float64)
