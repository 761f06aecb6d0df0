"""Training sub-commands: ``pretrain``, ``finetune``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub, common: argparse.ArgumentParser) -> None:
    """Add the training sub-commands to ``sub``."""
    p = sub.add_parser(
        "pretrain", parents=[common], help="self-supervised pretraining of an encoder",
        description="Pretrain an encoder on a cohort (labels are ignored). Run under torchrun for several GPUs. "
                    "Extra key=value arguments override any config field, e.g. optim.lr=1e-4 views.mode=volume.")
    p.add_argument("--method", default=None, help="s2dc (default), alice or swinssl")
    p.add_argument("--matcher", default=None,
                   help="alice: encoder directory whose embeddings match anatomy across volumes (alice.matcher)")
    p.add_argument("--data", type=Path, required=True, help="cohort folder")
    p.add_argument("--out", type=Path, required=True, help="run folder (new, or existing with --resume)")
    p.add_argument("--preset", default=None, help="tiny (CPU), small, base (paper) or a YAML file (default base)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="volumes per step and process")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N, mps")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--progress", choices=("bar", "json", "none"), default=None,
                   help="progress on stderr (bar), JSON lines on stdout (json) or none")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(run=run_pretrain)

    p = sub.add_parser(
        "finetune", parents=[common], help="fine-tune SwinUNETR for segmentation (from an encoder or scratch)",
        description="Fine-tune a SwinUNETR on a labelled cohort; the best model by validation Dice goes to OUT/model.")
    p.add_argument("--data", type=Path, required=True, help="labelled cohort folder (dataset.json)")
    p.add_argument("--out", type=Path, required=True, help="run folder (new, or existing with --resume)")
    p.add_argument("--init", type=Path, default=None, help="encoder (or model) directory; omitted = from scratch")
    p.add_argument("--train-cases", type=int, default=None, help="train on the first K labelled cases")
    p.add_argument("--preset", default=None, help="tiny (CPU), small, base or a YAML file (default base)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--progress", choices=("bar", "json", "none"), default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(run=run_finetune)


def _config(cls, section: str, args: argparse.Namespace, flags: dict):
    """Preset ← flags ← key=value overrides; on --resume the run's saved config ← what this line says."""
    from S2DCCore.config import apply_overrides, from_dict, load_config

    flags = {**flags, "steps": args.steps, "batch_size": args.batch_size, "runtime.device": args.device,
             "runtime.seed": args.seed, "progress": args.progress}
    overrides = [f"{k}={v}" for k, v in flags.items() if v is not None] + list(args.overrides)
    saved = args.out / "config.json"
    if args.resume and saved.is_file():
        return apply_overrides(from_dict(cls, json.loads(saved.read_text())), overrides)
    return load_config(cls, args.preset or "base", overrides, section=section)


def run_pretrain(args: argparse.Namespace) -> int:
    from S2DCCore.training.config import PretrainConfig
    from S2DCCore.training.pretrain import pretrain

    config = _config(PretrainConfig, "pretrain", args, {"method": args.method, "alice.matcher": args.matcher})
    encoder = pretrain(args.data, args.out, config, resume=args.resume)
    print(f"encoder: {encoder}")
    return 0


def run_finetune(args: argparse.Namespace) -> int:
    from S2DCCore.training.config import FinetuneConfig
    from S2DCCore.training.finetune import finetune

    config = _config(FinetuneConfig, "finetune", args, {"train_cases": args.train_cases})
    model = finetune(args.data, args.out, config, init=args.init, resume=args.resume)
    print(f"model: {model}")
    return 0
