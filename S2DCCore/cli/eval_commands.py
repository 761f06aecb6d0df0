"""Evaluation sub-command: ``evaluate``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub, common: argparse.ArgumentParser) -> None:
    """Add ``evaluate`` to ``sub``."""
    p = sub.add_parser("evaluate", parents=[common], help="Dice and HD95 of a model on a labelled cohort",
                       description="Segment every selected case, score Dice and HD95 per structure, write "
                                   "JSON + CSV + PNG bar plot and print a summary table.")
    p.add_argument("--model", type=Path, required=True, help="segmenter directory (RUN/model)")
    p.add_argument("--data", type=Path, required=True, help="labelled cohort folder")
    p.add_argument("--split", default="heldout",
                   help="heldout (cases the model never saw in training or validation; default), validation, test, "
                        "training, all")
    p.add_argument("-o", "--output", type=Path, required=True, help="metrics JSON (CSV and PNG beside it)")
    p.add_argument("--device", default="auto")
    p.set_defaults(run=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from S2DCCore.errors import UsageError
    from S2DCCore.evaluation import evaluate, write_outputs
    from S2DCCore.utils.runtime import resolve_device
    from S2DCCore.utils.table import format_table

    for path in (args.output, args.output.with_suffix(".csv"), args.output.with_suffix(".png")):
        if path.exists():
            raise UsageError("output exists; refusing to overwrite it", path)
    result = evaluate(args.model, args.data, split=args.split, device=resolve_device(args.device))
    paths = write_outputs(result, args.output)
    rows = [(name, f"{s['dice_mean']:.3f} ± {s['dice_std']:.3f}" if s["dice_mean"] is not None else "-",
             f"{s['hd95_mean_mm']:.1f}" if s["hd95_mean_mm"] is not None else "-", s["n"])
            for name, s in result["summary"]["structures"].items()]
    print(format_table(("structure", "Dice", "HD95 (mm)", "cases"), rows))
    mean = result["summary"]["mean_dice"]
    print(f"mean Dice {mean:.3f} over {len(rows)} structures" if mean is not None else "no structure scored")
    print(f"wrote {paths['json']}, {paths['csv']}, {paths['png']}")
    return 0
