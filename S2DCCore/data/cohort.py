"""Cohorts: a Decathlon-style ``dataset.json`` folder, or a plain folder of unlabeled images.

A Decathlon cohort lists ``labels`` (value → name), ``training`` (image/label pairs) and optionally
``validation`` and ``test`` (paths, or dicts with ``image`` and maybe ``label``); paths are relative to
the folder. A plain folder is every image file (and every DICOM series folder) below it, unlabeled:
what pretraining needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from S2DCCore.errors import DataError
from S2DCCore.io.image import image_suffix, is_image_path

SPLITS = ("training", "validation", "test")


@dataclass(frozen=True)
class Case:
    """One case of a cohort: an image, maybe its label, and the split it came from."""

    name: str
    image: Path
    label: Path | None = None
    split: str = "training"


@dataclass(frozen=True)
class Cohort:
    """A set of cases and the label names they share (empty when unlabeled)."""

    root: Path
    cases: tuple[Case, ...]
    labels: dict[int, str] = field(default_factory=dict)
    modality: str = ""

    def split(self, name: str) -> tuple[Case, ...]:
        """The cases of one split (``training``, ``validation``, ``test``) or ``all``."""
        return self.cases if name == "all" else tuple(c for c in self.cases if c.split == name)

    @property
    def labelled(self) -> tuple[Case, ...]:
        return tuple(c for c in self.cases if c.label is not None)


def load_cohort(root: str | Path) -> Cohort:
    """Load a cohort folder (``dataset.json`` if present, else every image below it).

    Raises:
        DataError: the folder is missing or empty, or its ``dataset.json`` is malformed.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError("not a folder (a cohort is a folder with dataset.json, or a folder of images)", root)
    manifest = root / "dataset.json"
    cohort = _from_manifest(root, manifest) if manifest.exists() else _from_folder(root)
    if not cohort.cases:
        raise DataError("no images found (expected .nii, .nii.gz, .nrrd files or DICOM folders)", root)
    return cohort


def _from_manifest(root: Path, manifest: Path) -> Cohort:
    try:
        spec = json.loads(manifest.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"not valid JSON ({exc})", manifest) from None
    if not isinstance(spec, dict):
        raise DataError("expected a JSON object with 'labels' and 'training'", manifest)
    try:
        labels = {int(k): str(v) for k, v in spec.get("labels", {}).items()}
    except (ValueError, AttributeError):
        raise DataError("'labels' must map integer values to names, e.g. {\"0\": \"background\"}", manifest) from None
    modality = spec.get("modality", {})
    modality = str(modality.get("0", "")) if isinstance(modality, dict) else str(modality)
    cases = []
    for split in SPLITS:
        entries = spec.get(split, [])
        if not isinstance(entries, list):
            raise DataError(f"'{split}' must be a list", manifest)
        for n, entry in enumerate(entries):
            if isinstance(entry, str):
                entry = {"image": entry}
            if not isinstance(entry, dict) or "image" not in entry:
                raise DataError(f"'{split}' entry {n} has no 'image'", manifest)
            image = _resolve(root, entry["image"])
            label = _resolve(root, entry["label"]) if entry.get("label") else None
            cases.append(Case(name=_case_name(image), image=image, label=label, split=split))
    return Cohort(root=root, cases=tuple(cases), labels=labels, modality=modality)


def _from_folder(root: Path) -> Cohort:
    files = sorted(p for p in root.rglob("*") if p.is_file() and is_image_path(p))
    dicom_dirs = sorted({p.parent for p in root.rglob("*.dcm")})
    cases = [Case(name=_case_name(p), image=p, split="training") for p in files + dicom_dirs]
    return Cohort(root=root, cases=tuple(cases))


def _resolve(root: Path, relative: str) -> Path:
    return (root / relative).resolve() if not Path(relative).is_absolute() else Path(relative)


def _case_name(path: Path) -> str:
    suffix = image_suffix(path) if path.suffix else ""
    return path.name[: len(path.name) - len(suffix)] if suffix else path.name
