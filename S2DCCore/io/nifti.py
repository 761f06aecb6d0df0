"""NIfTI-1 reading and writing through nibabel (RAS on disk, like the core)."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from S2DCCore.errors import DataError
from S2DCCore.io.image import Image


def read_nifti(path: Path) -> Image:
    """Read a ``.nii`` / ``.nii.gz``; the data is loaded eagerly so truncation is caught here."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise DataError(f"not a NIfTI image (nibabel read it as {type(img).__name__})", path)
        array = np.asanyarray(img.dataobj)
    except DataError:
        raise
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"truncated or corrupt compressed file ({exc})", path) from None
    except Exception as exc:  # nibabel raises several types for garbage headers
        raise DataError(f"not a readable NIfTI file ({type(exc).__name__}: {exc})", path) from None
    # The sform/qform choice is nibabel's (sform if set, else qform), as in Slicer and ITK.
    return Image(array=array, affine=np.asarray(img.affine, dtype=np.float64))


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray, *, label_names=None) -> None:
    """Write with both sform and qform set to ``affine`` (code 1, scanner), as ITK readers expect."""
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    nib.save(img, str(path))
