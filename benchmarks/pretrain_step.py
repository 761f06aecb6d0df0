"""Where a pretraining step's time goes, per method and preset: data, networks, and each loss.

    python benchmarks/pretrain_step.py [--methods s2dc,alice,swinssl] [--presets tiny,small] [--reps 5]
                                       [--threads 2] [--out benchmarks/results/pretrain_step.json]

Each part is timed on its own (forward + backward where it trains), median over ``--reps`` after one
warm-up, on random data (the data parts include view generation at the preset's sizes; Alice's pairs
are cut from random 96³ volumes, matched by the volume itself or by the EMA teacher's dense
embeddings). For S²DC the loss share is ``(p2p + p2s + global) / step``; ``step`` is always a whole
``train_step`` (forward, backward, clip, AdamW, EMA). Prints one table per method and writes JSON.
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
from S2DCCore.data.views.correspondence import region_slices
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
    """S²DC parts for ``preset`` (the rows of the original benchmark)."""
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


def _whole_step(method, batch, reps: int) -> float:
    optimizer = torch.optim.AdamW(method.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    return timed(lambda: train_step(method, batch, optimizer, scaler, torch.device("cpu"), "fp32", 1.0, 0), reps)


def bench_alice(preset: str, reps: int) -> dict:
    """Alice parts for ``preset``: pairs (self / teacher matcher), student, teacher, CASA, loss, whole step."""
    from S2DCCore.data.views.alice import collate_pairs, make_alice_pair
    from S2DCCore.data.views.matching import EmbeddingMatcher, SelfMatcher
    from S2DCCore.training.methods import alice

    config = load_config(PretrainConfig, preset, ["runtime.device=cpu", "method=alice"], section="pretrain")
    a = config.alice
    method = alice.build_method(config).train()
    rng = np.random.default_rng(0)
    volumes = [torch.rand(1, 96, 96, 96) for _ in range(2)]
    teacher_matcher = EmbeddingMatcher(method.teacher.encoder_features, a.matcher_stages, a.matcher_roi)
    options = dict(roi=a.roi, threshold=a.matcher_threshold, tries=a.matcher_tries, margin=a.point_margin,
                   mask_patch=a.mask_patch, mask_ratio=a.mask_ratio, augment=a.augment,
                   rotate_degrees=a.rotate_degrees, noise_std=a.noise_std)
    batch = collate_pairs([make_alice_pair(volumes, rng, SelfMatcher(), **options)])
    crops = torch.cat([batch["query"], batch["key"]])
    student, teacher = method.student, method.teacher

    def student_pass():
        out = student(crops)
        (out.cls.sum() + out.query.sum() + out.kv.sum() + out.reconstruction.sum()).backward()

    def teacher_pass():
        with torch.no_grad():
            teacher(crops, query=False, reconstruct=False)

    with torch.no_grad():
        s_out, t_out = student(crops), teacher(crops, query=False, reconstruct=False)

    def casa_pass():
        q, kv = s_out.query.clone().requires_grad_(), s_out.kv.clone().requires_grad_()
        with torch.no_grad():
            method.casa(q, t_out.kv)
        method.casa(q, kv).sum().backward()

    def loss_pass():
        s_cls = s_out.cls.clone().requires_grad_()
        s_patch = method.casa(s_out.query, s_out.kv).detach().requires_grad_()
        with torch.no_grad():
            t_patch = method.casa(s_out.query, t_out.kv)
        method.criterion(step=0, student_cls=s_cls, teacher_cls=t_out.cls, student_patch=s_patch, teacher_patch=t_patch,
                         reconstruction=s_out.reconstruction.clone().requires_grad_(), target=crops).total.backward()

    parts = {
        "data: pair, self matcher": timed(lambda: make_alice_pair(volumes, rng, SelfMatcher(), **options), reps),
        "data: pair, teacher matcher": timed(lambda: make_alice_pair(volumes, rng, teacher_matcher, **options), reps),
        "student SwinUNETR+head fwd+bwd": timed(student_pass, reps),
        "teacher fwd (to decoder level)": timed(teacher_pass, reps),
        "CASA S fwd+bwd, T fwd": timed(casa_pass, reps),
        "loss (cls+patch+rec) fwd+bwd": timed(loss_pass, reps),
        "whole train_step": _whole_step(method, batch, reps),
    }
    return {"method": "alice", "preset": preset, "crops": int(crops.shape[0]), "crop": list(a.roi),
            "tokens": [int(s_out.query.shape[1]), int(s_out.kv.shape[1])], "seconds": parts,
            "step_with_data_s": parts["whole train_step"] + parts["data: pair, self matcher"],
            "step_with_teacher_matcher_s": parts["whole train_step"] + parts["data: pair, teacher matcher"]}


def bench_swinssl(preset: str, reps: int) -> dict:
    """SwinUNETR-SSL parts for ``preset``: views, encoder + heads, loss, whole step."""
    from S2DCCore.training.methods import swinssl

    config = load_config(PretrainConfig, preset, ["runtime.device=cpu", "method=swinssl"], section="pretrain")
    method = swinssl.build_method(config).train()
    rng = np.random.default_rng(0)
    volumes = [torch.rand(1, 96, 96, 96)]
    batches = swinssl.make_batches(volumes, rng, config)
    batch = next(batches)
    views = torch.cat([batch["view1"], batch["view2"]])

    def network_pass():
        rot, con, rec = method.heads(method.encoder.forward_features(views)[-1])
        (rot.sum() + con.sum() + rec.sum()).backward()

    with torch.no_grad():
        rot, con, rec = method.heads(method.encoder.forward_features(views)[-1])

    def loss_pass():
        c1, c2 = con.clone().requires_grad_().chunk(2)
        method.criterion(rotation_logits=rot.clone().requires_grad_(),
                         rotation_labels=torch.cat([batch["rot1"], batch["rot2"]]), contrast_1=c1, contrast_2=c2,
                         reconstruction=rec.clone().requires_grad_(),
                         target=torch.cat([batch["target1"], batch["target2"]])).total.backward()

    parts = {
        "data (crops → 2 views)": timed(lambda: next(batches), reps),
        "encoder+heads fwd+bwd": timed(network_pass, reps),
        "loss (rot+contrast+rec) fwd+bwd": timed(loss_pass, reps),
        "whole train_step": _whole_step(method, batch, reps),
    }
    return {"method": "swinssl", "preset": preset, "crops": int(views.shape[0]), "crop": list(config.swinssl.roi),
            "seconds": parts, "step_with_data_s": parts["whole train_step"] + parts["data (crops → 2 views)"]}


BENCHES = {"s2dc": bench_preset, "alice": bench_alice, "swinssl": bench_swinssl}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="s2dc,alice,swinssl")
    parser.add_argument("--presets", default="tiny,small")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/pretrain_step.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    all_results = []
    for method in args.methods.split(","):
        results = [BENCHES[method](p, args.reps) for p in args.presets.split(",")]
        for r in results:
            r.setdefault("method", method)
        all_results += results
        print(f"\n{method}")
        print(f"{'part':34s}" + "".join(f"{r['preset']:>12s}" for r in results))
        for name in results[0]["seconds"]:
            print(f"{name:34s}" + "".join(f"{r['seconds'][name]:12.3f}" for r in results))
        if method == "s2dc":
            print(f"{'loss share of the step':34s}" + "".join(f"{r['loss_share_of_step']:12.1%}" for r in results))
        print(f"{'step + data (s)':34s}" + "".join(f"{r['step_with_data_s']:12.3f}" for r in results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "python benchmarks/pretrain_step.py " + " ".join(
        f"--{k}={v}" for k, v in vars(args).items() if k != "out"), "threads": args.threads,
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__, "results": all_results},
        indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
