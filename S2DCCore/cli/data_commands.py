"""Data sub-commands: ``phantoms``, ``check``, ``preview``, ``demo``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub, common: argparse.ArgumentParser) -> None:
    """Add the data sub-commands to ``sub``."""
    p = sub.add_parser("phantoms", parents=[common], help="write a synthetic anatomy cohort (Decathlon layout)",
                       description="Write a synthetic torso cohort: images, labels and dataset.json.")
    p.add_argument("out", type=Path, help="output folder (must not exist or be empty)")
    p.add_argument("--cases", type=int, default=8, help="number of cases (default 8)")
    p.add_argument("--size", type=int, default=96, help="voxels per side (default 96)")
    p.add_argument("--modality", choices=("ct", "mr"), default="ct", help="CT in HU or MR in arbitrary units")
    p.add_argument("--seed", type=int, default=0, help="seed; the same seed gives identical files")
    p.add_argument("--anisotropic", action="store_true", help="thicker slices along z")
    p.add_argument("--preview", action="store_true", help="also write PNG montages to OUT/preview/")
    p.set_defaults(run=run_phantoms)

    p = sub.add_parser("check", parents=[common], help="validate a cohort and print a table",
                       description="Open every image and label of a cohort; name each bad file. Exit 1 if any.")
    p.add_argument("data", type=Path, help="cohort folder (dataset.json or a folder of images)")
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    p.set_defaults(run=run_check)

    p = sub.add_parser("preview", parents=[common], help="write a PNG montage of an image (and label)")
    p.add_argument("image", type=Path)
    p.add_argument("--label", type=Path, default=None, help="labelmap on the image's grid to overlay")
    p.add_argument("-o", "--output", type=Path, required=True, help="PNG to write (must not exist)")
    p.set_defaults(run=run_preview)

    p = sub.add_parser("demo", parents=[common], help="the whole story on the synthetic cohort, with a report",
                       description="Phantoms → pretrain S²DC (tiny) → linear probe with one label, pretrained vs "
                                   "random encoders → fine-tune from S²DC → evaluate → segment and embed a held-out "
                                   "case → OUT/report.html and OUT/summary.json.")
    p.add_argument("out", type=Path, help="output folder (must not exist or be empty)")
    from S2DCCore.demo import DemoConfig

    defaults = DemoConfig()
    p.add_argument("--cases", type=int, default=defaults.cases, help=f"phantoms (default {defaults.cases})")
    p.add_argument("--size", type=int, default=defaults.size, help=f"voxels per side (default {defaults.size})")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--train-cases", type=int, default=defaults.train_cases,
                   help=f"labelled cases for fine-tuning (default {defaults.train_cases})")
    p.add_argument("--pretrain-steps", type=int, default=defaults.pretrain_steps)
    p.add_argument("--finetune-steps", type=int, default=defaults.finetune_steps)
    p.add_argument("--probe-seeds", type=int, default=defaults.probe_seeds,
                   help=f"random encoders the pretrained probe is compared with (default {defaults.probe_seeds})")
    p.add_argument("--device", default="auto")
    p.set_defaults(run=run_demo)

    p = sub.add_parser("brain-cohort", parents=[common],
                       help="the real-MRI study cohort (Colin27 + AAL lobes, left → right hemisphere)",
                       description="Build the Colin27 + AAL study cohort from a cache filled by "
                                   "tools/fetch_brain_data.sh CACHE: 4 labelled left-hemisphere crops, the right "
                                   "hemisphere as the test case, other subjects (MNI152, ITK T1) as the "
                                   "pretraining pool, and the mirrored-atlas floor.")
    p.add_argument("cache", type=Path, help="folder filled by tools/fetch_brain_data.sh")
    p.add_argument("out", type=Path, help="output folder (must not exist or be empty)")
    p.add_argument("--spacing", type=float, default=2.0, help="isotropic spacing in mm (default 2)")
    p.set_defaults(run=run_brain_cohort)


def run_phantoms(args: argparse.Namespace) -> int:
    from S2DCCore.data.phantoms import PhantomConfig, write_phantom_cohort
    from S2DCCore.errors import UsageError

    if args.cases < 1 or args.size < 32:
        raise UsageError("--cases must be ≥ 1 and --size ≥ 32")
    config = PhantomConfig(size=args.size, modality=args.modality, anisotropic=args.anisotropic)
    try:
        out = write_phantom_cohort(args.out, cases=args.cases, seed=args.seed, config=config, preview=args.preview)
    except FileExistsError as exc:
        raise UsageError(str(exc)) from None
    print(f"wrote {args.cases} {args.modality.upper()} phantoms to {out}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    import json

    from S2DCCore.data.check import check_cohort
    from S2DCCore.utils.table import format_table

    report = check_cohort(args.data)
    header = ("case", "split", "shape", "spacing (mm)", "orient", "intensity range", "label values")
    rows = [
        (r.case, r.split, "×".join(map(str, r.shape)), "×".join(f"{s:.3g}" for s in r.spacing), r.orientation,
         f"{r.intensity_range[0]:.4g} .. {r.intensity_range[1]:.4g}",
         "-" if r.label_values is None else ",".join(map(str, r.label_values)))
        for r in report.rows
    ]
    if rows:
        print(format_table(header, rows))
    n_cases = len(report.cohort.cases) if report.cohort else 0
    for problem in report.problems:
        print(f"s2dc check: {problem}", file=sys.stderr)
    print(f"{n_cases} cases, {len(report.rows)} readable, {len(report.problems)} problems")
    if args.json:
        payload = {"ok": report.ok, "rows": [r.__dict__ for r in report.rows],
                   "problems": [{"path": str(p.path), "problem": p.problem} for p in report.problems]}
        args.json.write_text(json.dumps(payload, indent=2, default=list))
    return 0 if report.ok else 1


def run_preview(args: argparse.Namespace) -> int:
    from S2DCCore.data.preview import save_montage
    from S2DCCore.errors import UsageError
    from S2DCCore.io.image import read_image

    if args.output.exists():
        raise UsageError("output exists; refusing to overwrite it", args.output)
    image = read_image(args.image)
    label = read_image(args.label) if args.label else None
    save_montage(args.output, image.array, None if label is None else label.array, affine=image.affine,
                 label_names=label.label_names if label else None)
    print(f"wrote {args.output}")
    return 0


def run_brain_cohort(args: argparse.Namespace) -> int:
    from S2DCCore.data.brain import write_colin27_cohort

    out = write_colin27_cohort(args.cache, args.out, spacing=args.spacing)
    print(f"wrote the Colin27 + AAL cohort to {out}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from S2DCCore.demo import DemoConfig, run_demo as demo

    summary = demo(args.out, DemoConfig(cases=args.cases, size=args.size, seed=args.seed,
                                        train_cases=args.train_cases, pretrain_steps=args.pretrain_steps,
                                        finetune_steps=args.finetune_steps, probe_seeds=args.probe_seeds,
                                        device=args.device))
    print(f"report: {summary['report']}")
    return 0
