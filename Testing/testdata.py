"""Test data makers shared by the suite: grid geometries and a DICOM series writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def make_affine(kind: str) -> np.ndarray:
    """Voxel→RAS affines: RAS, LPS (x and y flipped), oblique (rotated cosines), anisotropic."""
    affine = np.eye(4)
    if kind == "ras":
        affine[:3, :3] = np.diag([1.0, 1.0, 1.0])
        affine[:3, 3] = [-20.0, -30.0, 10.0]
    elif kind == "lps":
        affine[:3, :3] = np.diag([-1.2, -1.2, 1.5])
        affine[:3, 3] = [40.0, 35.0, -12.0]
    elif kind == "oblique":
        affine[:3, :3] = _rotation(0.2, -0.35, 0.6) @ np.diag([0.9, 1.1, 1.3])
        affine[:3, 3] = [12.5, -7.25, 3.0]
    elif kind == "anisotropic":
        affine[:3, :3] = np.diag([0.7, 0.7, 3.0])
        affine[:3, 3] = [-5.0, 8.0, 100.0]
    else:
        raise ValueError(kind)
    return affine


GEOMETRIES = ("ras", "lps", "oblique", "anisotropic")


def write_dicom_series(folder: Path, volume: np.ndarray, affine_ras: np.ndarray, *, shuffle: bool = True) -> Path:
    """Write ``volume`` ([i, j, k] = [column, row, slice]) as a CT DICOM series with the given geometry."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_ras
    col_spacing, row_spacing = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    row_dir, col_dir = lps[:3, 0] / col_spacing, lps[:3, 1] / row_spacing
    series_uid, study_uid = generate_uid(), generate_uid()
    order = np.random.default_rng(0).permutation(volume.shape[2]) if shuffle else range(volume.shape[2])
    for n, k in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = "CT", series_uid, study_uid
        ds.ImagePositionPatient = [float(v) for v in (lps @ [0, 0, k, 1])[:3]]
        ds.ImageOrientationPatient = [float(v) for v in np.concatenate([row_dir, col_dir])]
        ds.PixelSpacing = [float(row_spacing), float(col_spacing)]
        ds.SliceThickness = float(np.linalg.norm(lps[:3, 2]))
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1.0, -1024.0
        ds.PixelData = (volume[:, :, k].T + 1024).astype(np.uint16).tobytes()  # stored (rows, columns)
        ds.save_as(str(folder / f"slice_{n:03d}.dcm"), enforce_file_format=True)
    return folder
