"""Which images a study pretrains on, which labelled cases it learns from, which it evaluates on.

The honest split, decided once from the cohort:

* **test**: the labelled ``test`` split, or else the last ``test_cases`` labelled training cases;
* **labelled**: the other labelled training cases, in cohort order; K-shot uses the first K;
* **pretraining pool**: the folder named by ``dataset.json``'s ``study.pretrain`` (e.g. other subjects),
  or else every training-split image that is not a test case. The pool never holds a test image
  (checked by resolved path), so pretraining never sees an evaluated volume.
* **floors**: prediction files named by ``study.floors`` (e.g. a mirrored atlas), scored like the models.
* **probe flips**: ``study.probe_flip_axes`` names axes along which a mirrored labelled case is still a
  valid example (bilateral classes, e.g. left-right for merged-hemisphere brain labels); the linear probe
  then also trains on those mirrored copies, as fine-tuning's random flips do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from S2DCCore.data.cohort import Case, load_cohort
from S2DCCore.errors import DataError
from S2DCCore.study.config import StudyConfig


@dataclass(frozen=True)
class StudyData:
    """The resolved split of a study cohort (see the module docstring)."""

    root: Path
    labels: dict[int, str]
    modality: str
    intensity: str
    labelled: tuple[Case, ...]
    test: tuple[Case, ...]
    pretrain_images: tuple[Path, ...]
    floors: dict[str, dict[str, Path]] = field(default_factory=dict)
    probe_flip_axes: tuple[int, ...] = ()

    def summary(self) -> dict:
        return {"root": str(self.root), "modality": self.modality, "intensity": self.intensity,
                "labels": {str(k): v for k, v in self.labels.items()},
                "labelled": [c.name for c in self.labelled], "test": [c.name for c in self.test],
                "pretrain_images": [str(p) for p in self.pretrain_images],
                "floors": {k: {c: str(p) for c, p in v.items()} for k, v in self.floors.items()},
                "probe_flip_axes": list(self.probe_flip_axes)}


def plan_study(data: str | Path, config: StudyConfig) -> StudyData:
    """Split the cohort at ``data`` for ``config``.

    Raises:
        DataError: no labels, too few labelled cases, or a pretraining image that is also a test image.
    """
    root = Path(data)
    cohort = load_cohort(root)
    manifest = root / "dataset.json"
    if not cohort.labels:
        raise DataError("a study needs a labelled cohort (dataset.json with 'labels')", manifest)
    extra = _study_section(manifest)
    training = [c for c in cohort.split("training") if c.label is not None]
    test = [c for c in cohort.split("test") if c.label is not None]
    if not test:
        if len(training) <= config.test_cases:
            raise DataError(f"{len(training)} labelled training cases: too few to hold out {config.test_cases} "
                            "as test cases (or add a labelled 'test' split)", manifest)
        training, test = training[:-config.test_cases], training[-config.test_cases:]
    need = max(config.label_counts)
    if len(training) < need:
        raise DataError(f"{len(training)} labelled training cases, but label count {need} was asked for", manifest)
    if "pretrain" in extra:
        pool_root = (root / extra["pretrain"]).resolve()
        pool = [c.image for c in load_cohort(pool_root).cases]
    else:
        test_images = {c.image.resolve() for c in test}
        pool = [c.image for c in cohort.split("training") if c.image.resolve() not in test_images]
    overlap = {p.resolve() for p in pool} & {c.image.resolve() for c in test}
    if overlap:
        raise DataError(f"the pretraining pool holds test image(s) {sorted(map(str, overlap))}", manifest)
    if not pool:
        raise DataError("no images left to pretrain on", manifest)
    floors = {name: {case: (root / path).resolve() for case, path in cases.items()}
              for name, cases in (extra.get("floors") or {}).items()}
    flips = extra.get("probe_flip_axes") or []
    if not isinstance(flips, list) or any(a not in (0, 1, 2) for a in flips):
        raise DataError(f"'study.probe_flip_axes' must list axes 0, 1 or 2, not {flips!r}", manifest)
    return StudyData(root=root.resolve(), labels=dict(cohort.labels), modality=cohort.modality,
                     intensity=intensity_preset(cohort.modality), labelled=tuple(training), test=tuple(test),
                     pretrain_images=tuple(pool), floors=floors, probe_flip_axes=tuple(flips))


def intensity_preset(modality: str) -> str:
    """``ct`` for CT cohorts, ``mr`` for everything else (MR, T1, …: z-scored, no HU window)."""
    return "ct" if modality.strip().upper() == "CT" else "mr"


def write_cohorts(data: StudyData, out: Path, label_counts) -> dict[str, Path]:
    """Write ``out/pretrain/`` (unlabelled pool) and ``out/k{K}/`` (first K labelled + test) manifests.

    Paths inside are absolute, so the manifests point at the user's files without copying them.
    """
    manifests = {"pretrain": {"modality": {"0": data.modality}, "training": [str(p) for p in data.pretrain_images]}}
    labels = {str(k): v for k, v in sorted(data.labels.items())}
    test = [{"image": str(c.image), "label": str(c.label)} for c in data.test]
    for k in label_counts:
        manifests[f"k{k}"] = {"labels": labels, "modality": {"0": data.modality}, "test": test,
                              "training": [{"image": str(c.image), "label": str(c.label)} for c in data.labelled[:k]]}
    paths = {}
    for name, manifest in manifests.items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "dataset.json").write_text(json.dumps(manifest, indent=2) + "\n")
        paths[name] = folder
    return paths


def _study_section(manifest: Path) -> dict:
    if not manifest.exists():
        return {}
    section = json.loads(manifest.read_text()).get("study") or {}
    if not isinstance(section, dict):
        raise DataError("'study' must be an object (keys 'pretrain', 'floors')", manifest)
    return section
