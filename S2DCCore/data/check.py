"""``s2dc check``: validate every case of a cohort and summarise it, naming each bad file.

Every file is opened and fully decoded (a truncated gzip only shows up when the data is read), each
problem is recorded against its file, and nothing raises past `check_cohort`: one bad case never
hides the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from S2DCCore.data.cohort import Case, Cohort, load_cohort
from S2DCCore.errors import DataError
from S2DCCore.io.image import Image, read_image

# Image and label grids must agree to this many mm (origin and direction columns).
AFFINE_TOLERANCE_MM = 1e-3


@dataclass(frozen=True)
class CaseSummary:
    """One row of the check table."""

    case: str
    split: str
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    orientation: str
    intensity_range: tuple[float, float]
    label_values: tuple[int, ...] | None


@dataclass(frozen=True)
class Problem:
    """A file that cannot be used, and why."""

    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


@dataclass
class CheckReport:
    """What `check_cohort` found: rows for the good cases, problems for the bad files."""

    cohort: Cohort | None
    rows: list[CaseSummary] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_cohort(root: str | Path) -> CheckReport:
    """Check every case of the cohort at ``root``; never raises for bad cases."""
    try:
        cohort = load_cohort(root)
    except DataError as exc:
        return CheckReport(cohort=None, problems=[Problem(exc.path or Path(root), exc.problem)])
    report = CheckReport(cohort=cohort)
    report.problems.extend(_image_named_folders(Path(root)))
    for case in cohort.cases:
        row, problems = check_case(case, cohort.labels)
        report.problems.extend(problems)
        if row is not None:
            report.rows.append(row)
    return report


def _image_named_folders(root: Path) -> list[Problem]:
    """Folders whose name looks like an image file (``x.nii.gz/``): a cohort walk would skip them silently."""
    from S2DCCore.io.image import is_image_path

    if not root.is_dir():
        return []
    return [Problem(p, "is a folder named like an image file (an unpacked archive?); move its image out or "
                       "rename it") for p in sorted(root.rglob("*")) if p.is_dir() and is_image_path(p)
            and p.suffix.lower() != ".dcm"]


def check_case(case: Case, labels: dict[int, str]) -> tuple[CaseSummary | None, list[Problem]]:
    """Check one case's image and label; return its summary row (None if the image is bad)."""
    problems: list[Problem] = []
    image = _read(case.image, problems)
    label = _read(case.label, problems) if case.label is not None else None
    if label is not None and image is not None:
        _compare_grids(case.label, image, label, problems)
    if label is not None:
        _check_label_values(case.label, label, labels, problems)
    if image is None:
        return None, problems
    finite = image.array
    row = CaseSummary(
        case=case.name,
        split=case.split,
        shape=image.shape,
        spacing=image.spacing,
        orientation=image.orientation,
        intensity_range=(float(np.min(finite)), float(np.max(finite))),
        label_values=None if label is None else tuple(int(v) for v in np.unique(label.array)),
    )
    return row, problems


def _read(path: Path, problems: list[Problem]) -> Image | None:
    try:
        return read_image(path)
    except DataError as exc:
        problems.append(Problem(path, exc.problem))
    except Exception as exc:  # a reader bug must not stop the check of other files
        problems.append(Problem(path, f"unreadable ({type(exc).__name__}: {exc})"))
    return None


def _compare_grids(path: Path, image: Image, label: Image, problems: list[Problem]) -> None:
    if label.shape != image.shape:
        problems.append(Problem(path, f"label shape {label.shape} differs from image shape {image.shape}"))
    elif not np.allclose(label.affine, image.affine, atol=AFFINE_TOLERANCE_MM):
        problems.append(Problem(path, "label grid (affine) differs from its image's"))


def _check_label_values(path: Path, label: Image, labels: dict[int, str], problems: list[Problem]) -> None:
    values = np.unique(label.array)
    if np.issubdtype(values.dtype, np.floating) and not np.all(values == np.round(values)):
        problems.append(Problem(path, "label has non-integer values"))
        return
    if labels:
        unknown = sorted(int(v) for v in values if int(v) not in labels)
        if unknown:
            problems.append(Problem(path, f"label values {unknown} are not in dataset.json 'labels'"))
