"""DICOM series folders through pydicom.

Why pydicom: it is the maintained, pure-Python DICOM parser (no compiled ITK in Slicer's Python or on
a cluster), and the geometry of a single-frame series needs only three tags per slice
(ImagePositionPatient, ImageOrientationPatient, PixelSpacing), so the affine is computed here in a few
lines that are tested against known geometry. Compressed transfer syntaxes need pydicom's optional
pixel handlers (pylibjpeg, gdcm); without them the error says so.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from S2DCCore.errors import DataError
from S2DCCore.io.image import RAS_TO_LPS, Image

# Largest relative deviation between slice gaps that still counts as one regular grid.
_SLICE_GAP_TOLERANCE = 0.01


def read_dicom_series(folder: Path) -> Image:
    """Read the single DICOM series in ``folder`` (files at any depth, any names)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    series: dict[str, list] = defaultdict(list)
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(str(file))
        except (InvalidDicomError, EOFError, OSError, ValueError):
            continue  # not DICOM (a README, a thumbnail...): ignored, like every DICOM browser does
        if "ImagePositionPatient" in ds and "PixelData" in ds:
            series[str(ds.get("SeriesInstanceUID", ""))].append(ds)
    if not series:
        raise DataError("folder holds no DICOM image slices", folder)
    if len(series) > 1:
        raise DataError(f"folder holds {len(series)} DICOM series; give the folder of one series", folder)
    return _stack(next(iter(series.values())), folder)


def _stack(slices: list, folder: Path) -> Image:
    iop = np.asarray(slices[0].ImageOrientationPatient, dtype=np.float64)
    row_dir, col_dir = iop[:3], iop[3:]  # LPS directions of increasing column / row index
    normal = np.cross(row_dir, col_dir)
    slices = sorted(slices, key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float))))
    positions = np.array([np.asarray(ds.ImagePositionPatient, dtype=np.float64) for ds in slices])
    row_spacing, col_spacing = (float(v) for v in slices[0].PixelSpacing)
    if len(slices) > 1:
        gaps = np.diff(positions @ normal)
        if np.any(gaps <= 0):
            raise DataError("two slices share one position (duplicate or multi-echo series)", folder)
        if np.ptp(gaps) > _SLICE_GAP_TOLERANCE * float(np.mean(gaps)):
            raise DataError(f"irregular slice spacing ({gaps.min():.3g}–{gaps.max():.3g} mm)", folder)
        step = (positions[-1] - positions[0]) / (len(slices) - 1)
    else:
        thickness = float(slices[0].get("SpacingBetweenSlices", slices[0].get("SliceThickness", 1.0)))
        step = normal * thickness
    lps = np.eye(4)
    # Array index [i, j, k] = [column, row, slice]: i moves along row_dir, j along col_dir.
    lps[:3, 0] = row_dir * col_spacing
    lps[:3, 1] = col_dir * row_spacing
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    try:
        planes = [_rescaled(ds) for ds in slices]
    except Exception as exc:
        raise DataError(f"cannot decode DICOM pixel data ({type(exc).__name__}: {exc})", folder) from None
    if len({p.shape for p in planes}) > 1:
        raise DataError("slices of different sizes in one series", folder)
    volume = np.stack([p.T for p in planes], axis=-1)  # (columns, rows, slices) = [i, j, k]
    return Image(array=volume, affine=RAS_TO_LPS @ lps)


def _rescaled(ds) -> np.ndarray:
    pixels = ds.pixel_array
    slope = float(ds.get("RescaleSlope", 1.0))
    intercept = float(ds.get("RescaleIntercept", 0.0))
    if slope != 1.0 or intercept != 0.0:
        return pixels.astype(np.float32) * slope + intercept
    return pixels
