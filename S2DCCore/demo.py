"""``s2dc demo``: the project's main job on its embedded default, the synthetic anatomy cohort.

Today it makes a cohort, checks it and previews it, and writes ``report.html`` and ``summary.json``;
pretraining, fine-tuning, segmentation and overlays join it as they land.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from S2DCCore.config import to_dict
from S2DCCore.errors import UsageError
from S2DCCore.report import Section, write_report


@dataclass(frozen=True)
class DemoConfig:
    """Size of the demo: cases and voxels per side of the synthetic cohort, and its seed."""

    cases: int = 8
    size: int = 64
    seed: int = 0
    modality: str = "ct"


def run_demo(out: str | Path, config: DemoConfig = DemoConfig()) -> dict:
    """Run the demo into ``out`` (which must not exist or be empty); return the summary dict."""
    from S2DCCore.data.check import check_cohort
    from S2DCCore.data.phantoms import PhantomConfig, write_phantom_cohort

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UsageError("output folder exists and is not empty; choose a new one", out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    start = time.perf_counter()
    cohort_dir = write_phantom_cohort(out / "cohort", cases=config.cases, seed=config.seed,
                                      config=PhantomConfig(size=config.size, modality=config.modality), preview=True)
    timings["phantoms_s"] = time.perf_counter() - start

    start = time.perf_counter()
    report = check_cohort(cohort_dir)
    timings["check_s"] = time.perf_counter() - start
    if not report.ok:
        raise UsageError("the generated cohort failed its own check: " + "; ".join(map(str, report.problems)))

    labels = report.cohort.labels
    rows = [(r.case, "×".join(map(str, r.shape)), "×".join(f"{s:.3g}" for s in r.spacing), r.orientation,
             f"{r.intensity_range[0]:.0f} .. {r.intensity_range[1]:.0f}", len(r.label_values or ()) - 1)
            for r in report.rows]
    previews = sorted((cohort_dir / "preview").glob("*.png"))
    sections = [
        Section("Synthetic anatomy cohort",
                paragraphs=[f"{config.cases} {config.modality.upper()} phantoms of {config.size}³ voxels, seed "
                            f"{config.seed}: {', '.join(n for v, n in sorted(labels.items()) if v)}."],
                tables=[(("case", "shape", "spacing (mm)", "orientation", "intensity", "structures"), rows)],
                images=[(p, p.stem) for p in previews[:4]]),
        Section("Timings", tables=[(("stage", "seconds"), [(k, f"{v:.1f}") for k, v in timings.items()])]),
    ]
    report_path = write_report(out / "report.html", "S2DC demo", sections)
    summary = {"config": to_dict(config), "cohort": str(cohort_dir), "report": str(report_path),
               "cases": len(report.rows), "labels": {str(k): v for k, v in labels.items()}, "timings": timings}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
