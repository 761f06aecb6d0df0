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
        _check_declared_size(img, path)
        array = np.asanyarray(img.dataobj)
    except DataError:
        raise
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"truncated or corrupt compressed file ({exc})", path) from None
    except Exception as exc:  # nibabel raises several types for garbage headers
        raise DataError(f"not a readable NIfTI file ({type(exc).__name__}: {exc})", path) from None
    # The sform/qform choice is nibabel's (sform if set, else qform), as in Slicer and ITK.
    return Image(array=array, affine=np.asarray(img.affine, dtype=np.float64))


def _check_declared_size(img, path: Path) -> None:
    """Refuse, before allocating, a header that declares more voxels than memory (or the file) can hold."""
    from S2DCCore.utils.memory_info import available_host_memory

    shape = tuple(int(n) for n in img.header.get_data_shape())
    dtype = np.dtype(img.header.get_data_dtype())
    needed = int(np.prod(shape, dtype=np.float64)) * max(dtype.itemsize, 4)  # scaled data come back as float32+
    available = available_host_memory()
    if available is not None and needed > available:
        raise DataError(f"header declares {'×'.join(map(str, shape))} voxels of {dtype} ({_bytes(needed)} to load), "
                        f"more than the {_bytes(available)} of memory available; is the header corrupt?", path)


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray, *, label_names=None) -> None:
    """Write with both sform and qform set to ``affine`` (code 1, scanner), as ITK readers expect."""
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    nib.save(img, str(path))
