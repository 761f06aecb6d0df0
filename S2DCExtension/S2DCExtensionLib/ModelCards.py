"""Model folders: the card (``model.json``) as text for the GUI, and the recent-models list (pure Python).

A model folder holds ``model.safetensors`` and ``model.json`` (`S2DCCore.checkpoint`). Only the JSON is
read here: showing a card never imports torch. Nothing is ever downloaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

CARD, WEIGHTS = "model.json", "model.safetensors"
RECENT_LIMIT = 8


class ModelCardError(ValueError):
    """The folder is not a readable model folder (the message names the file and the problem)."""


def readCard(modelDir: str | Path) -> dict:
    """The model card of ``modelDir``.

    Raises:
        ModelCardError: not a folder, a missing file, or a card that is not a JSON object.
    """
    modelDir = Path(modelDir)
    if not modelDir.is_dir():
        raise ModelCardError(f"{modelDir}: not a folder")
    for name in (CARD, WEIGHTS):
        if not (modelDir / name).is_file():
            raise ModelCardError(f"{modelDir / name}: missing (a model folder holds {CARD} and {WEIGHTS})")
    try:
        card = json.loads((modelDir / CARD).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelCardError(f"{modelDir / CARD}: unreadable ({exc})") from None
    if not isinstance(card, dict):
        raise ModelCardError(f"{modelDir / CARD}: expected a JSON object")
    return card


def cardLabels(card: dict) -> dict[int, str]:
    """Label value → name (segmenters), sorted by value; empty for encoders."""
    labels = card.get("labels") or {}
    return {int(k): str(v) for k, v in sorted(labels.items(), key=lambda kv: int(kv[0]))}


def isSegmenter(card: dict) -> bool:
    return card.get("kind") == "segmenter"


def _method(card: dict) -> str | None:
    provenance = card.get("encoder_provenance") or {}
    return card.get("method") or (provenance.get("method") if isinstance(provenance, dict) else None)


def cardSummary(card: dict) -> str:
    """A few lines for the GUI: kind, method, labels, spacing, orientation, intensity preset, Dice, origin."""
    kind = card.get("kind", "unknown kind")
    lines = [f"Kind: {kind}" + (" (segments images)" if kind == "segmenter" else
                                 " (embeddings, structures, propagation)" if kind == "encoder" else "")]
    method = _method(card)
    if method:
        lines.append(f"Pretraining method: {method}")
    labels = cardLabels(card)
    if labels:
        lines.append("Labels: " + ", ".join(f"{v} {n}" for v, n in labels.items() if v != 0))
    spacing = card.get("spacing")
    lines.append("Spacing: " + ("native" if not spacing else " × ".join(f"{float(s):g}" for s in spacing) + " mm"))
    if card.get("orientation"):
        lines.append(f"Orientation: {card['orientation']}")
    preset = card.get("intensity_preset") or (card.get("preprocess") or {}).get("preset")
    if preset:
        lines.append(f"Intensity preset: {preset}")
    mean = card.get("validation_mean_dice")
    dice = card.get("validation_dice")
    if mean is not None:
        lines.append(f"Validation Dice: {float(mean):.3f} (mean)")
    if isinstance(dice, dict) and dice:
        per = ", ".join(f"{labels.get(int(k), k) if str(k).isdigit() else k} {float(v):.3f}" for k, v in dice.items())
        lines.append(f"Dice per label: {per}")
    origin = [f"step {card['step']}" if card.get("step") is not None else "",
              f"trained on {card['trained_on']}" if card.get("trained_on") else "",
              f"created {card['created']}" if card.get("created") else ""]
    if any(origin):
        lines.append("Provenance: " + ", ".join(o for o in origin if o))
    return "\n".join(lines)


def updateRecent(recent: list[str], path: str | Path, limit: int = RECENT_LIMIT) -> list[str]:
    """``path`` first, then the other entries of ``recent`` (duplicates dropped), at most ``limit``."""
    first = os.path.normpath(str(path))
    rest = [os.path.normpath(p) for p in recent if p and os.path.normpath(p) != first]
    unique = list(dict.fromkeys([first, *rest]))
    return unique[:limit]


def existingRecent(recent: list[str], isDir=os.path.isdir) -> list[str]:
    """The entries of ``recent`` that are still model folders (order kept)."""
    return [p for p in recent if p and isDir(p)]
