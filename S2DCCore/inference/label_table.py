"""Label names and colours of a labelmap, written as a JSON sidecar next to it.

For ``OUT.nii.gz`` (or ``.nii``, ``.nrrd``, ``.seg.nrrd``) the sidecar is ``OUT.json``::

    {"format_version": 1, "labelmap": "OUT.nii.gz",
     "labels": [{"value": 0, "name": "background", "color": [0, 0, 0]},
                {"value": 1, "name": "liver", "color": [192, 104, 88]}, ...],
     ...provenance (model, image, spacing)...}

Colours are 0–255 RGB, the fixed colours of the PNG previews (`S2DCCore.data.preview.colour`; the
background is black), so a class keeps its colour across runs, previews and tools.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from S2DCCore.errors import UsageError
from S2DCCore.io.image import image_suffix, write_image
from S2DCCore.utils.faults import fault_point
from S2DCCore.utils.tempfiles import write_text_atomic


def label_color(value: int) -> tuple[int, int, int]:
    """The RGB colour of label ``value``: black for 0, else the preview montages' colour (`data.preview`)."""
    from S2DCCore.data.preview import colour

    return (0, 0, 0) if int(value) == 0 else tuple(int(c) for c in colour(int(value)))


def label_entries(names: dict[int, str]) -> list[dict]:
    """``[{"value", "name", "color"}]`` sorted by value."""
    return [{"value": int(v), "name": str(n), "color": list(label_color(int(v)))} for v, n in sorted(names.items())]


def sidecar_path(labelmap: str | Path) -> Path:
    """``OUT.json`` for ``OUT.nii.gz`` / ``OUT.nii`` / ``OUT.nrrd`` / ``OUT.seg.nrrd``."""
    labelmap = Path(labelmap)
    suffix = image_suffix(labelmap)
    stem = labelmap.name[: -len(suffix)] if suffix and labelmap.name.lower().endswith(suffix) else labelmap.stem
    return labelmap.with_name(stem + ".json")


def write_json_atomic(path: Path, payload: dict) -> Path:
    """Write ``payload`` to a temporary file beside ``path`` and rename it into place."""
    return write_text_atomic(path, json.dumps(payload, indent=2), "the label table")


def is_orphan_sidecar(labelmap: str | Path) -> bool:
    """Whether ``labelmap``'s sidecar is the leftover of a write killed before the labelmap arrived: the
    labelmap is missing and the sidecar is ours and names it (such a sidecar may be replaced)."""
    labelmap, sidecar = Path(labelmap), sidecar_path(labelmap)
    if labelmap.exists() or not sidecar.is_file():
        return False
    try:
        payload = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(payload, dict) and payload.get("format_version") == 1 and payload.get("labelmap") == labelmap.name


def write_labelmap(path: str | Path, labels: np.ndarray, affine: np.ndarray, label_names: dict[int, str],
                   provenance: dict | None = None) -> tuple[Path, Path]:
    """Write ``labels`` to ``path`` (format by suffix; names go into a ``.seg.nrrd`` header too) and the
    sidecar JSON; neither is written if either exists, and a failed labelmap removes the sidecar.

    The sidecar is written first and the labelmap, renamed into place last, marks the output finished:
    a run killed in between leaves an orphan sidecar (`is_orphan_sidecar`) that the rerun replaces.

    Returns:
        (labelmap path, sidecar path).
    """
    path = Path(path)
    sidecar = sidecar_path(path)
    for existing in (path, sidecar):
        if existing.exists() and not (existing == sidecar and is_orphan_sidecar(path)):
            raise UsageError("output exists; refusing to overwrite it", existing)
    payload = {"format_version": 1, "labelmap": path.name, "labels": label_entries(label_names),
               **(provenance or {})}
    write_json_atomic(sidecar, payload)
    try:
        fault_point("labelmap.commit", path)
        write_image(path, labels, affine, label_names=label_names)
    except BaseException:
        sidecar.unlink(missing_ok=True)
        raise
    return path, sidecar
