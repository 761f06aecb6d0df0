"""MONAI's fused window attention (``use_flash_attention``) against its plain attention, side by side.

    python benchmarks/attention.py [--presets tiny,small] [--reps 5] [--threads 2]
                                   [--out benchmarks/results/attention.json]

Every Swin network of S2DC asks MONAI (≥ 1.6) for the fused kernel (`S2DCCore.models.encoders.swin_kwargs`);
MONAI takes it only when no gradient is recorded. This times, for each preset, the same network with the
flag on and off (alternating, median over ``--reps`` after a warm-up) on:

* ``teacher``: the encoder's no-grad pass over one S²DC step's crops (the EMA teacher runs three);
* ``inference 96³`` and ``inference 128³``: one no-grad pass (embed, probe, segment, the LP phase);
* ``student``: a forward + backward (training: the plain attention either way, as a control);
* ``S²DC train_step``: a whole pretraining step (student, three teacher passes, losses, AdamW, EMA).

The largest absolute difference of the no-grad outputs is recorded beside each row.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _attentions(module):
    from monai.networks.nets.swin_unetr import WindowAttention

    return [m for m in module.modules() if isinstance(m, WindowAttention)]


def _set_fused(module, fused: bool) -> None:
    for attention in _attentions(module):
        attention.use_flash_attention = fused


def side_by_side(module, fn, reps: int) -> dict:
    """Median seconds of ``fn()`` with the fused and the plain attention, runs alternating."""
    times = {True: [], False: []}
    outputs = {}
    for fused in (True, False):  # warm-up, and the outputs to compare
        _set_fused(module, fused)
        outputs[fused] = fn()
    for _ in range(reps):
        for fused in (True, False):
            _set_fused(module, fused)
            start = time.perf_counter()
            fn()
            times[fused].append(time.perf_counter() - start)
    _set_fused(module, True)
    fused_s, plain_s = statistics.median(times[True]), statistics.median(times[False])
    diff = None
    if outputs[True] is not None:
        diff = max(float((a - b).abs().max()) for a, b in zip(outputs[True], outputs[False]))
    return {"fused_s": fused_s, "plain_s": plain_s, "speedup": plain_s / fused_s, "max_abs_diff": diff}


def bench_preset(preset: str, reps: int) -> dict:
    from S2DCCore.config import load_config
    from S2DCCore.training.config import PretrainConfig
    from S2DCCore.training.loop import train_step
    from S2DCCore.training.methods import s2dc

    config = load_config(PretrainConfig, preset, ["runtime.device=cpu"], section="pretrain")
    method = s2dc.build_method(config)
    rng = np.random.default_rng(0)
    region_shape = tuple(g * r for g, r in zip(config.views.grid, config.views.roi))
    batch = s2dc.make_batch([torch.rand(1, *region_shape)], rng, config)
    encoder = method.teacher.encoder
    rows = {}

    def no_grad(x):
        def run():
            with torch.no_grad():
                return encoder.forward_features(x)
        return run

    rows[f"teacher: {tuple(batch['teacher'].shape)}"] = side_by_side(encoder, no_grad(batch["teacher"]), reps)
    for side in (96, 128):
        rows[f"inference {side}³"] = side_by_side(encoder, no_grad(torch.rand(1, 1, side, side, side)), reps)
    student = method.student.encoder

    def train_pass():
        sum(s.mean() for s in student.forward_features(batch["student"])).backward()

    rows[f"student fwd+bwd: {tuple(batch['student'].shape)}"] = side_by_side(student, train_pass, reps)
    optimizer = torch.optim.AdamW(method.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=False)

    def whole_step():
        train_step(method, batch, optimizer, scaler, torch.device("cpu"), "fp32", 1.0, 0)

    rows["S²DC train_step"] = side_by_side(method, whole_step, reps)
    return {"preset": preset, "window": config.encoder.window_size, "feature_size": config.encoder.feature_size,
            "rows": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,small")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "attention.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = [bench_preset(p, args.reps) for p in args.presets.split(",")]
    print("| preset | pass | plain s | fused s | plain / fused | max |Δ| |")
    print("|---|---|---|---|---|---|")
    for r in results:
        for name, row in r["rows"].items():
            diff = "–" if row["max_abs_diff"] is None else f"{row['max_abs_diff']:.1e}"
            print(f"| {r['preset']} | {name} | {row['plain_s']:.3f} | {row['fused_s']:.3f} | "
                  f"{row['speedup']:.2f}× | {diff} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": " ".join(["python", "benchmarks/attention.py"] + sys.argv[1:]),
                                    "threads": args.threads, "machine": platform.machine(),
                                    "torch": torch.__version__, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
