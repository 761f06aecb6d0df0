"""The core's image type, and reading / writing it in any supported format with its geometry.

Every image in the core is an array indexed ``[i, j, k]`` plus its 4×4 voxel-to-RAS affine in mm
(nibabel's convention). NIfTI is RAS on disk; NRRD and DICOM are LPS on disk and are converted on the
way in and out, so a read → write → read round trip keeps the affine (to float precision) and shape.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from S2DCCore.errors import DataError, UsageError
from S2DCCore.utils.disk import storage_errors
from S2DCCore.utils.faults import fault_point
from S2DCCore.utils.tempfiles import make_temp_file, sweep_stale

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
IMAGE_SUFFIXES = NIFTI_SUFFIXES + NRRD_SUFFIXES
# Flips RAS <-> LPS (its own inverse).
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Image:
    """A 3-D (or, before validation, any-D) array on a physical grid.

    Attributes:
        array: voxel values indexed ``[i, j, k]`` (extra trailing axes only before validation).
        affine: (4, 4) float64 voxel-index → RAS (mm) matrix.
        label_names: label value → name, when the file carries them (``.seg.nrrd``); else empty.
    """

    array: np.ndarray
    affine: np.ndarray
    label_names: dict[int, str] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def orientation(self) -> str:
        """Closest axis codes, e.g. ``"RAS"`` or ``"LPS"``."""
        import nibabel as nib

        return "".join(nib.aff2axcodes(self.affine))


def image_suffix(path: str | Path) -> str:
    """The format suffix of ``path`` (``.nii.gz`` counts as one suffix), lower-case."""
    name = Path(path).name.lower()
    for suffix in (".nii.gz", ".seg.nrrd") + IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return Path(path).suffix.lower()


def is_image_path(path: str | Path) -> bool:
    """Whether ``path`` names a file this module reads by its suffix (DICOM folders are separate)."""
    return image_suffix(path) in IMAGE_SUFFIXES + (".seg.nrrd",)


def read_image(path: str | Path, *, validate: bool = True) -> Image:
    """Read a NIfTI, NRRD (incl. ``.seg.nrrd``) file or a DICOM series folder.

    Args:
        path: the file, or a folder holding one DICOM series.
        validate: check that the result is one finite 3-D volume (see `validate_volume`).

    Raises:
        DataError: naming ``path`` and the problem (missing, unreadable, not 3-D, non-finite, ...).
    """
    path = Path(path)
    if not path.exists():
        raise DataError("no such file or folder", path)
    if path.is_dir():
        from S2DCCore.io.dicom import read_dicom_series

        image = read_dicom_series(path)
    else:
        suffix = image_suffix(path)
        if suffix in NIFTI_SUFFIXES:
            from S2DCCore.io.nifti import read_nifti

            image = read_nifti(path)
        elif suffix in NRRD_SUFFIXES + (".seg.nrrd",):
            from S2DCCore.io.nrrd_format import read_nrrd

            image = read_nrrd(path)
        else:
            raise DataError(
                f"unsupported format {suffix or '(no suffix)'}; expected .nii, .nii.gz, .nrrd, "
                ".seg.nrrd or a DICOM series folder",
                path,
            )
    if validate:
        image = validate_volume(image, path)
    return image


def validate_volume(image: Image, path: str | Path, *, allow_nonfinite: bool = False) -> Image:
    """Return ``image`` as one 3-D volume, or raise a `DataError` naming the problem.

    Trailing singleton axes (NIfTI's ``(X, Y, Z, 1)``) are squeezed; anything else that is not 3-D,
    a singular affine and (unless allowed) NaN or infinite voxels are refused.
    """
    array = image.array
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        kind = f"{array.ndim}-D"
        raise DataError(f"{kind} image of shape {tuple(array.shape)}; expected one 3-D volume", path)
    if 1 in array.shape:
        raise DataError(f"2-D image of shape {tuple(array.shape)} (a single slice); expected a 3-D volume", path)
    affine = np.asarray(image.affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DataError("invalid voxel-to-world matrix (singular or non-finite)", path)
    if not allow_nonfinite and np.issubdtype(array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            what = "all voxels are" if bad == array.size else f"{bad} of {array.size} voxels are"
            raise DataError(f"{what} NaN or infinite", path)
    return Image(array=array, affine=affine, label_names=dict(image.label_names))


def write_image(
    path: str | Path,
    array: np.ndarray,
    affine: np.ndarray,
    *,
    overwrite: bool = False,
    label_names: dict[int, str] | None = None,
) -> Path:
    """Write ``array`` (indexed ``[i, j, k]``) on the grid ``affine`` (voxel → RAS) to ``path``.

    The format follows the suffix (.nii, .nii.gz, .nrrd, .seg.nrrd). The file is written to a temporary
    name in the same folder and renamed, so a failure never leaves a partial file, and an existing
    file is only replaced with ``overwrite=True``.

    Raises:
        UsageError: if ``path`` exists and ``overwrite`` is false, or the suffix is unsupported.
        StorageError: the disk is full, or the folder read-only or not writable.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise UsageError("output exists; refusing to overwrite it", path)
    suffix = image_suffix(path)
    affine = np.asarray(affine, dtype=np.float64)
    if suffix in NIFTI_SUFFIXES:
        from S2DCCore.io.nifti import write_nifti as writer
    elif suffix in (".nrrd", ".seg.nrrd"):
        from S2DCCore.io.nrrd_format import write_nrrd as writer
    else:
        raise UsageError(f"cannot write {suffix or '(no suffix)'}; use .nii.gz, .nii, .nrrd or .seg.nrrd", path)
    array = np.asarray(array)
    with storage_errors(path, "the image", array.nbytes):
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(path)  # temporaries of a writer killed before its rename
        tmp = make_temp_file(path, suffix)
        try:
            writer(tmp, array, affine, label_names=label_names)
            fault_point("image.write", tmp)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
    return path
