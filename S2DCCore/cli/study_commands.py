"""``s2dc study``: the pretraining study (`S2DCCore.study.runner`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from S2DCCore.errors import UsageError


def register(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("study", parents=[common],
                       help="pretrain each method, linear-probe and fine-tune with K labels, tabulate (resumable)",
                       description="Pretrain each method on the unlabelled images, then linear-probe its frozen "
                                   "encoder and fine-tune it with K labelled cases, evaluate on held-out test "
                                   "cases, and write OUT/results/ (table.md, results.csv, learning_curve.png, "
                                   "report.html, summary.json). Rerun the same command to continue a stopped "
                                   "study: finished cells are never recomputed.")
    p.add_argument("--data", type=Path, required=True, help="labelled cohort folder (dataset.json)")
    p.add_argument("--out", type=Path, required=True, help="study folder (new, or a stopped study to continue)")
    p.add_argument("--methods", default="scratch,swinssl,alice,s2dc",
                   help="comma-separated (default: all four); 'default' adds the shipped encoder")
    p.add_argument("--label-counts", default="1,2,4", help="K values of the linear probe (default 1,2,4)")
    p.add_argument("--finetune-label-counts", default=None,
                   help="K values also fine-tuned (default: every label count; \"\" for a probe-only study)")
    p.add_argument("--seeds", default="0,1,2", help="seeds of probing and fine-tuning (default 0,1,2)")
    p.add_argument("--preset", default="tiny", help="model preset (default tiny)")
    p.add_argument("--pretrain-steps", type=int, default=300)
    p.add_argument("--finetune-steps", type=int, default=400)
    p.add_argument("--test-cases", type=int, default=4,
                   help="held out from the end of the training split when the cohort has no labelled test split")
    p.add_argument("--device", default="auto")
    p.set_defaults(run=run_study)


def run_study(args: argparse.Namespace) -> int:
    from S2DCCore.study.config import StudyConfig
    from S2DCCore.study.runner import run_study as study
    from S2DCCore.utils.table import format_table

    config = StudyConfig(
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
        label_counts=_ints(args.label_counts, "--label-counts"),
        finetune_label_counts=None if args.finetune_label_counts is None else _ints(args.finetune_label_counts,
                                                                                     "--finetune-label-counts"),
        seeds=_ints(args.seeds, "--seeds"), preset=args.preset, pretrain_steps=args.pretrain_steps,
        finetune_steps=args.finetune_steps, test_cases=args.test_cases, device=args.device)
    summary = study(args.data, args.out, config)
    for kind in ("probe", "finetune"):
        rows = [[m] + [_cell(t[k]) for k in t] for m, t in summary[kind].items()]
        if rows:
            counts = next(iter(summary[kind].values()))
            print(f"{kind} (mean foreground Dice, mean ± std over seeds)")
            print(format_table(["method"] + [f"K={k}" for k in counts], rows))
    print(f"results: {args.out / 'results'}")
    return 0


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"{flag} takes comma-separated integers, not {text!r}") from None


def _cell(stats: dict) -> str:
    return "-" if stats["mean"] is None else f"{stats['mean']:.3f} ± {stats['std']:.3f}"
