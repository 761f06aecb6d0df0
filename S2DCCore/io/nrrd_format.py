"""NRRD reading and writing through pynrrd, including Slicer's ``.seg.nrrd`` labelmaps.

NRRD stores ``space directions`` (one row per axis) and ``space origin`` in a named space; Slicer
writes ``left-posterior-superior``. We read any of the 3-D anatomical spaces and always write LPS.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from S2DCCore.errors import DataError
from S2DCCore.io.image import RAS_TO_LPS, Image

# Sign flips that take a named NRRD space to RAS.
_SPACE_TO_RAS = {
    "right-anterior-superior": (1, 1, 1),
    "ras": (1, 1, 1),
    "left-anterior-superior": (-1, 1, 1),
    "las": (-1, 1, 1),
    "left-posterior-superior": (-1, -1, 1),
    "lps": (-1, -1, 1),
}
_DOMAIN_KINDS = {"domain", "space", "time"}


def read_nrrd(path: Path) -> Image:
    """Read a scalar 3-D NRRD, or a ``.seg.nrrd`` (single- or multi-layer) as one labelmap."""
    import nrrd

    try:
        data, header = nrrd.read(str(path), index_order="F")
    except Exception as exc:  # pynrrd raises NRRDError, ValueError, zlib/gzip errors...
        raise DataError(f"not a readable NRRD file ({type(exc).__name__}: {exc})", path) from None
    kinds = [str(k).lower() for k in header.get("kinds", ["domain"] * data.ndim)]
    domain_axes = [i for i, k in enumerate(kinds) if k in _DOMAIN_KINDS]
    label_names = _segment_names(header)
    if data.ndim == 4 and len(domain_axes) == 3 and label_names:
        data = _merge_layers(data, domain_axes, header, path)
        domain_axes = [0, 1, 2]
    affine = _affine_from_header(header, data.ndim, domain_axes, path)
    if data.ndim == 3 and label_names:
        values = _segment_values(header)
        label_names = {values.get(key, key): name for key, name in label_names.items()}
    return Image(array=data, affine=affine, label_names=label_names)


def _affine_from_header(header: dict, ndim: int, domain_axes: list[int], path: Path) -> np.ndarray:
    space = str(header.get("space", "")).lower()
    directions = header.get("space directions")
    affine = np.eye(4)
    if directions is not None:
        rows = [np.asarray(r, dtype=np.float64) for r in directions]
        rows = [r for r in rows if r is not None and r.size == 3 and np.all(np.isfinite(r))]
        if len(rows) != 3:
            # Non-spatial axes carry "none"; a 2-D or 4-D file is reported by validation later.
            return _fallback_affine(header, min(ndim, 3))
        affine[:3, :3] = np.stack(rows, axis=1)  # columns = axis direction vectors
        origin = header.get("space origin")
        if origin is not None:
            affine[:3, 3] = np.asarray(origin, dtype=np.float64)
    else:
        return _fallback_affine(header, min(ndim, 3))
    if space:
        if space not in _SPACE_TO_RAS:
            raise DataError(f"unsupported NRRD space {space!r}", path)
        affine = np.diag(list(_SPACE_TO_RAS[space]) + [1.0]) @ affine
    return affine


def _fallback_affine(header: dict, n: int) -> np.ndarray:
    spacings = header.get("spacings")
    affine = np.eye(4)
    if spacings is not None:
        for i, s in enumerate(list(spacings)[:n]):
            if s is not None and np.isfinite(s):
                affine[i, i] = float(s)
    return affine


def _segment_names(header: dict) -> dict[int, str]:
    """Segment index → name from Slicer's ``SegmentN_Name`` keys."""
    names = {}
    for key, value in header.items():
        match = re.fullmatch(r"Segment(\d+)_Name", key)
        if match:
            names[int(match.group(1))] = str(value)
    return names


def _segment_values(header: dict) -> dict[int, int]:
    values = {}
    for key, value in header.items():
        match = re.fullmatch(r"Segment(\d+)_LabelValue", key)
        if match:
            values[int(match.group(1))] = int(value)
    return values


def _merge_layers(data: np.ndarray, domain_axes: list[int], header: dict, path: Path) -> np.ndarray:
    """Flatten a multi-layer ``.seg.nrrd`` (layer axis first) into one labelmap; later segments win overlaps."""
    layer_axis = next(i for i in range(4) if i not in domain_axes)
    layers = np.moveaxis(data, layer_axis, 0)
    merged = np.zeros(layers.shape[1:], dtype=np.uint16)
    values = _segment_values(header)
    for key in sorted(_segment_names(header)):
        layer = int(header.get(f"Segment{key}_Layer", 0))
        if layer >= layers.shape[0]:
            raise DataError(f"segment {key} refers to missing layer {layer}", path)
        merged[layers[layer] == values.get(key, key + 1)] = values.get(key, key + 1)
    return merged


def write_nrrd(path: Path, array: np.ndarray, affine: np.ndarray, *, label_names=None) -> None:
    """Write a 3-D scalar NRRD in LPS space, gzip-encoded (Slicer's defaults)."""
    import nrrd

    lps = RAS_TO_LPS @ affine
    header = {
        "space": "left-posterior-superior",
        "space directions": lps[:3, :3].T,  # one row per axis
        "space origin": lps[:3, 3],
        "kinds": ["domain"] * 3,
        "encoding": "gzip",
    }
    if label_names:
        for n, (value, name) in enumerate(sorted(label_names.items())):
            header[f"Segment{n}_Name"] = name
            header[f"Segment{n}_LabelValue"] = str(int(value))
            header[f"Segment{n}_Layer"] = "0"
            header[f"Segment{n}_ID"] = f"Segment_{int(value)}"
    nrrd.write(str(path), np.asarray(array), header, index_order="F")
