"""Fine-tuning recipes side by side: validation Dice against wall time, steps per second, held-out Dice.

    python benchmarks/finetune.py [--cases 10] [--train-cases 4] [--steps 400] [--old-steps 400]
                                  [--val-every 50] [--out benchmarks/results] [--work DIR]

Both recipes train from scratch on the same fresh ``s2dc phantoms`` cohort (default size, 96³) with the
same 4 labelled cases, validate on the same 4 cases every ``--val-every`` steps, and the best checkpoint
is scored on the held-out cases by ``s2dc evaluate``. Wall time is the sum of the steps' own times plus
the validations (read from ``metrics.jsonl``), so the two runs compare without counting start-up.

* **new**: the tiny preset as shipped (light head, 2 foreground-balanced crops, batch Dice, class weights ∝ frequency^−½, poly, no flips).
* **old**: the previous tiny recipe through the same code: SwinUNETR decoder, 1 crop per step, per-crop
  Dice, cosine schedule, lr 1e-3, random flips on every axis. (The old code cropped with MONAI's
  RandCropByPosNegLabeld at pos:neg 1:1 and flipped each axis with p = 0.2; here the crop is centred on
  foreground half the time and each axis flips with p = 0.5.)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPES = {
    "new (tiny preset)": [],
    "old": ["decoder=swinunetr", "batch_size=1", "crops_per_volume=1", "optim.lr=1e-3", "optim.schedule=cosine",
            "batch_dice=false", "class_weights=none", "sampling.flip_axes=[0,1,2]", "head_warmup_steps=0"],
}


def run(cohort: Path, out: Path, steps: int, val_every: int, train_cases: int, overrides: list[str]) -> dict:
    from S2DCCore.config import load_config
    from S2DCCore.evaluation import evaluate
    from S2DCCore.training.config import FinetuneConfig
    from S2DCCore.training.finetune import finetune

    config = load_config(FinetuneConfig, "tiny", [f"steps={steps}", f"train_cases={train_cases}", "val_cases=4",
                                                  f"val_every={val_every}", f"save_every={steps}", "progress=none",
                                                  "log_every=1", "runtime.device=cpu", *overrides], section="finetune")
    start = time.perf_counter()
    model = finetune(cohort, out, config)
    total = time.perf_counter() - start
    curve, clock = [], 0.0
    for line in (out / "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        clock += m.get("step_s", 0.0)
        if "val_mean_dice" in m:
            curve.append({"step": m["step"], "train_s": round(clock, 1), "val_dice": m["val_mean_dice"]})
    heldout = evaluate(model, cohort, device="cpu")["summary"]["mean_dice"]
    step_time = clock / steps
    return {"overrides": overrides, "steps": steps, "wall_s": round(total, 1), "train_s": round(clock, 1),
            "steps_per_s": round(1.0 / step_time, 3), "curve": curve, "heldout_mean_dice": heldout}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--train-cases", type=int, default=4)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--old-steps", type=int, default=400)
    parser.add_argument("--val-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)

    from S2DCCore.data.phantoms import write_phantom_cohort

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        cohort = write_phantom_cohort(work / "cohort", cases=args.cases, seed=args.seed)
        results = {}
        for name, overrides in RECIPES.items():
            steps = args.steps if name.startswith("new") else args.old_steps
            results[name] = run(cohort, work / name.split()[0], steps, args.val_every, args.train_cases, overrides)
            print(f"{name}: held-out {results[name]['heldout_mean_dice']:.3f}, {results[name]['steps_per_s']} steps/s, "
                  f"{results[name]['wall_s']} s", flush=True)
    print()
    print("| recipe | steps | steps/s | train s | wall s | held-out mean Dice | validation Dice at (step, train s) |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        curve = ", ".join(f"{c['val_dice']:.3f} ({c['step']}, {c['train_s']:.0f} s)" for c in r["curve"])
        print(f"| {name} | {r['steps']} | {r['steps_per_s']} | {r['train_s']} | {r['wall_s']} | "
              f"{r['heldout_mean_dice']:.3f} | {curve} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "finetune.json").write_text(json.dumps({"command": " ".join(sys.argv), "results": results},
                                                       indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
