"""Terminology tags for segments: a label name → Slicer's ``TerminologyEntry`` string (pure Python).

Slicer stores a segment's meaning as one string of seven ``~``-separated parts
(``Docs/developer_guide/modules/segmentations.md``)::

    context ~ category ~ type ~ typeModifier ~ anatomicContext ~ anatomicRegion ~ anatomicRegionModifier

where each code is ``scheme^value^meaning`` (``^^`` when empty). The codes of known names come from
``Resources/Terminology/S2DCTerminology.json`` (codes that exist in Slicer's General Anatomy list);
``kidney_left`` is *Kidney* with the *Left* modifier (only types Slicer lists with sides take one).
Unknown names get the generic *Tissue* entry, and every segment keeps the model's own name.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

TABLE_PATH = Path(__file__).resolve().parent.parent / "Resources" / "Terminology" / "S2DCTerminology.json"
EMPTY_CODE = ("", "", "")


def normalizeName(name: str) -> str:
    """``"Kidney Left"`` / ``"kidney-left"`` → ``"kidney_left"``."""
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def splitLaterality(name: str) -> tuple[str, str | None]:
    """(``"kidney"``, ``"left"``) for ``kidney_left`` / ``left_kidney``; (name, None) without a side."""
    parts = normalizeName(name).split("_")
    for side in ("left", "right"):
        if len(parts) > 1 and side in (parts[0], parts[-1]):
            rest = parts[1:] if parts[0] == side else parts[:-1]
            return "_".join(rest), side
    return "_".join(parts), None


def formatCode(code) -> str:
    """``("SCT", "10200004", "Liver")`` → ``"SCT^10200004^Liver"``."""
    return "^".join(str(part) for part in (code or EMPTY_CODE))


@lru_cache(maxsize=None)
def loadTable(path: str = str(TABLE_PATH)) -> dict:
    """The terminology table (JSON, see the module docstring)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def terminologyEntry(name: str, table: dict | None = None) -> str:
    """Slicer ``TerminologyEntry`` tag value for a label called ``name``.

    Examples:
        >>> terminologyEntry("liver").split("~")[2]
        'SCT^10200004^Liver'
    """
    table = table or loadTable()
    base, side = splitLaterality(name)
    known = table["types"].get(base)
    spec = known or table["generic"]
    category = table["categories"][spec["category"]]
    modifier = table["modifiers"][side] if (known and side and known.get("sided")) else EMPTY_CODE
    return "~".join([table["context"], formatCode(category), formatCode(spec["type"]), formatCode(modifier),
                     table["anatomicContext"], formatCode(EMPTY_CODE), formatCode(EMPTY_CODE)])
