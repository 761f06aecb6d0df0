"""``s2dc evaluate``: Dice and HD95 per structure and case, on each case's own grid.

Each case is segmented exactly as a user would (`S2DCCore.inference.segment`, output on the input grid)
and compared with its label file. Dice is computed here (two lines of numpy); HD95 is MONAI's
``compute_hausdorff_distance`` in mm with the case's voxel spacing. A structure absent from both the
prediction and the reference is skipped (NaN), not counted as perfect.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from S2DCCore.data.cohort import Case, load_cohort
from S2DCCore.errors import UsageError
from S2DCCore.io.image import read_image

log = logging.getLogger(__name__)
SPLITS = ("heldout", "validation", "test", "training", "all")


@dataclass
class CaseScore:
    """One case × structure."""

    case: str
    structure: str
    value: int
    dice: float
    hd95_mm: float


def dice_score(pred: np.ndarray, ref: np.ndarray) -> float:
    """2|P∩R| / (|P| + |R|) of two boolean masks; NaN when both are empty."""
    total = int(pred.sum()) + int(ref.sum())
    return float("nan") if total == 0 else 2.0 * int(np.logical_and(pred, ref).sum()) / total


def hd95_mm(pred: np.ndarray, ref: np.ndarray, spacing) -> float:
    """95th-percentile symmetric Hausdorff distance in mm (MONAI); NaN if either mask is empty."""
    if not pred.any() or not ref.any():
        return float("nan")
    import torch
    from monai.metrics import compute_hausdorff_distance

    y_pred = torch.as_tensor(pred[None, None])
    y = torch.as_tensor(ref[None, None])
    return float(compute_hausdorff_distance(y_pred, y, percentile=95, spacing=list(spacing))[0, 0])


def select_cases(cases: tuple[Case, ...], split: str, used_names: list[str]) -> list[Case]:
    """Labelled cases of ``split``; ``heldout`` = every labelled case the model never saw (``used_names``:
    its training and validation cases — validation chose the checkpoint, so it is not held out)."""
    if split not in SPLITS:
        raise UsageError(f"--split must be one of {', '.join(SPLITS)}, not {split!r}")
    labelled = [c for c in cases if c.label is not None]
    if split == "heldout":
        return [c for c in labelled if c.name not in set(used_names)]
    return labelled if split == "all" else [c for c in labelled if c.split == split]


def evaluate(model: str | Path, data: str | Path, *, split: str = "heldout", device=None) -> dict:
    """Segment every selected case and score it; return ``{"cases": [...], "summary": {...}}``."""
    from S2DCCore.inference.model_io import as_model
    from S2DCCore.inference.segment import segment_image

    loaded = as_model(model)
    cohort = load_cohort(data)
    used = list(loaded.card.get("train_cases", [])) + list(loaded.card.get("validation_cases", []))
    cases = select_cases(cohort.cases, split, used)
    if not cases:
        raise UsageError(f"no labelled cases in split {split!r} of {data}")
    names = {int(k): v for k, v in (loaded.card.get("labels") or {}).items() if int(k) != 0}
    scores: list[CaseScore] = []
    for case in cases:
        result = segment_image(case.image, loaded, device=device)
        ref = read_image(case.label)
        spacing = ref.spacing
        for value, name in sorted(names.items()):
            pred_mask, ref_mask = result.labels == value, ref.array == value
            scores.append(CaseScore(case.name, name, value, dice_score(pred_mask, ref_mask),
                                    hd95_mm(pred_mask, ref_mask, spacing)))
        log.info("evaluated %s", case.name)
    return {"model": str(model), "data": str(data), "split": split, "cases": [s.__dict__ for s in scores],
            "summary": summarize(scores)}


def summarize(scores: list[CaseScore]) -> dict:
    """Per structure: mean/std Dice and HD95 over cases (NaNs skipped), plus the mean over structures."""
    out: dict = {"structures": {}}
    for name in dict.fromkeys(s.structure for s in scores):
        dice = np.array([s.dice for s in scores if s.structure == name], dtype=float)
        hd = np.array([s.hd95_mm for s in scores if s.structure == name], dtype=float)
        out["structures"][name] = {"dice_mean": _nan(np.nanmean, dice), "dice_std": _nan(np.nanstd, dice),
                                   "hd95_mean_mm": _nan(np.nanmean, hd), "n": int(np.isfinite(dice).sum())}
    means = [v["dice_mean"] for v in out["structures"].values() if v["dice_mean"] is not None]
    out["mean_dice"] = float(np.mean(means)) if means else None
    return out


def _nan(fn, values: np.ndarray):
    return None if not np.isfinite(values).any() else float(fn(values))


def write_outputs(result: dict, json_path: Path) -> dict[str, Path]:
    """``metrics.json`` + ``metrics.csv`` (one row per case × structure) + ``metrics.png`` (Dice bar plot)."""
    for path in (json_path, json_path.with_suffix(".csv"), json_path.with_suffix(".png")):
        if path.exists():
            raise UsageError("output exists; refusing to overwrite it", path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2))
    csv_path = json_path.with_suffix(".csv")
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["case", "structure", "value", "dice", "hd95_mm"])
        writer.writeheader()
        writer.writerows(result["cases"])
    png = bar_plot(result["summary"], json_path.with_suffix(".png"), title=f"{result['split']} cases")
    return {"json": json_path, "csv": csv_path, "png": png}


def bar_plot(summary: dict, path: Path, title: str = "") -> Path:
    """Mean Dice ± std per structure as a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["structures"])
    means = [summary["structures"][n]["dice_mean"] or 0.0 for n in names]
    stds = [summary["structures"][n]["dice_std"] or 0.0 for n in names]
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(names) + 1), 3.2), dpi=100)
    ax.bar(range(len(names)), means, yerr=stds, color="#4a7ab5", capsize=3)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("Dice")
    ax.set_title(f"{title} — mean Dice {summary['mean_dice'] or 0:.3f}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
