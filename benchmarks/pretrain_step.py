"""Where a pretraining step's time goes, per preset: data, encoders, heads, and each S²DC loss.

    python benchmarks/pretrain_step.py [--presets tiny,small] [--reps 5] [--threads 2] [--out benchmarks/results/pretrain_step.json]

Each part is timed on its own (forward + backward where it trains), median over ``--reps`` after one
warm-up, on random regions (the data part includes view generation on a region of the preset's size).
The loss share is ``(p2p + p2s + global) / step``; ``step`` is a whole ``train_step`` (forward,
backward, clip, AdamW, EMA). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from S2DCCore.config import load_config
from S2DCCore.data.correspondence import region_slices
from S2DCCore.losses.s2dc import global_contrastive_loss, patch_to_patch_loss, patch_to_structure_loss, select_global_pairs
from S2DCCore.training.config import PretrainConfig
from S2DCCore.training.loop import train_step
from S2DCCore.training.methods import s2dc


def timed(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_preset(preset: str, reps: int) -> dict:
    config = load_config(PretrainConfig, preset, ["runtime.device=cpu"], section="pretrain")
    method = s2dc.build_method(config)
    rng = np.random.default_rng(0)
    region_shape = tuple(g * r for g, r in zip(config.views.grid, config.views.roi))
    region = torch.rand(1, *region_shape)
    batch = s2dc.make_batch([region], rng, config)
    grid, tokens = method.grid, method.tokens_per_crop
    student, teacher = method.student, method.teacher

    def student_pass():
        q, g = student(batch["student"], grid, tokens)
        (q.sum() + g.sum()).backward()

    def encoder_only():
        sum(s.mean() for s in student.encoder.forward_features(batch["student"])).backward()

    def teacher_passes():
        with torch.no_grad():
            teacher(batch["teacher"], grid, tokens, pooled=False)
            teacher(batch["teacher_aug"], grid, tokens, tokens=False)
            teacher(batch["student"], grid, tokens, tokens=False)

    with torch.no_grad():
        q, qg = student(batch["student"], grid, tokens)
        k, _ = teacher(batch["teacher"], grid, tokens, pooled=False)
    q, k = region_slices(q, grid, tokens), region_slices(k, grid, tokens)
    matches = batch["matches"].repeat_interleave(q.shape[0] // batch["matches"].shape[0], dim=0)
    qg = qg.reshape(1, -1, qg.shape[-1])
    loss_cfg = config.s2dc

    def p2p():
        qq = q.clone().requires_grad_()
        patch_to_patch_loss(qq, k, matches, loss_cfg.sinkhorn_iters, loss_cfg.bin_score).backward()

    def p2s():
        qq = q.clone().requires_grad_()
        patch_to_structure_loss(qq, k, matches).backward()

    def global_term():
        qq = qg.clone().requires_grad_()
        query, pos, negs, _ = select_global_pairs(qq, qg.detach())
        negs = torch.cat([negs, method.queue.features()])
        global_contrastive_loss(query, pos, negs, loss_cfg.temperature).backward()

    optimizer = torch.optim.AdamW(method.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=False)

    def whole_step():
        train_step(method, batch, optimizer, scaler, torch.device("cpu"), "fp32", 1.0, 0)

    parts = {
        "data (region → views)": timed(lambda: s2dc.make_batch([region], rng, config), reps),
        "student encoder fwd+bwd": timed(encoder_only, reps),
        "student encoder+heads fwd+bwd": timed(student_pass, reps),
        "teacher 3 forwards": timed(teacher_passes, reps),
        "L_p2p fwd+bwd": timed(p2p, reps),
        "L_p2s fwd+bwd": timed(p2s, reps),
        "L_g fwd+bwd": timed(global_term, reps),
        "whole train_step": timed(whole_step, reps),
    }
    losses = parts["L_p2p fwd+bwd"] + parts["L_p2s fwd+bwd"] + parts["L_g fwd+bwd"]
    return {"preset": preset, "crops": int(batch["student"].shape[0]), "crop": list(config.views.roi),
            "token_sets": list(q.shape[:2]), "seconds": parts,
            "loss_share_of_step": losses / parts["whole train_step"],
            "step_with_data_s": parts["whole train_step"] + parts["data (region → views)"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,small")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/pretrain_step.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = [bench_preset(p, args.reps) for p in args.presets.split(",")]
    names = list(results[0]["seconds"])
    print(f"{'part':32s}" + "".join(f"{r['preset']:>12s}" for r in results))
    for name in names:
        print(f"{name:32s}" + "".join(f"{r['seconds'][name]:12.3f}" for r in results))
    print(f"{'loss share of the step':32s}" + "".join(f"{r['loss_share_of_step']:12.1%}" for r in results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "python benchmarks/pretrain_step.py " + " ".join(
        f"--{k}={v}" for k, v in vars(args).items() if k != "out"), "threads": args.threads,
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__, "results": results},
        indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
