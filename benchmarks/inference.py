"""Wall time and peak memory of ``segment`` and ``embed`` against plain MONAI sliding-window inference.

    python benchmarks/inference.py [--quick] [--presets tiny,small] [--threads 1]
                                   [--out benchmarks/results/inference.json]

A 256×256×128 CT-like volume (LPS, 1 mm; ``--quick``: 128×128×64) is segmented and embedded on the CPU with
random-weight networks of the ``tiny`` and ``small`` presets (their fine-tuning window, 64³; model spacing
2.5 mm, so the model grid is 103×103×52 and 2×2×1 windows cover it; the labels and overlays are mapped
back to all 8.4 M input voxels). The baseline is MONAI's ``sliding_window_inference``
on the *same* network and the already resampled, normalised model-grid tensor, with the same window,
overlap (0.25) and Gaussian blending; for segmentation it ends with the argmax on the model grid. The
S2DC runs include reading the file, resampling to the model grid and back, and the overlays (embed: PCA,
8 k-means structures and a similarity map), i.e. everything a user waits for.

Each configuration runs in a fresh subprocess; CPU time (``getrusage``, user + system) is reported next to
wall time because it is less disturbed by other work on a shared machine. Peak memory is that process's
``VmHWM`` (reset through ``/proc/self/clear_refs`` just before the timed call, so it is the peak *of the
call*, above the process's resident size then: torch, the weights and the input). ``estimate`` is S2DC's
own memory estimate for the run (`S2DCCore.inference.memory`), to check its calibration. Prints a table
and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N_CLASSES = 14  # BTCV's 13 organs + background
MODEL_SPACING = (2.5, 2.5, 2.5)
CLUSTERS = 8


def _status(key: str) -> int:
    return int(re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE).group(1)) * 1024


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux ≥ 4.0: VmHWM := VmRSS
        return True
    except OSError:
        return False


def _preset(preset: str) -> dict:
    import yaml

    from S2DCCore.config import PRESET_DIR

    values = yaml.safe_load((PRESET_DIR / f"{preset}.yaml").read_text())
    return {"encoder": values["finetune"].get("encoder", {}), "roi": values["finetune"]["roi"],
            "token_stage": values["pretrain"]["s2dc_model"]["token_stage"]}


def _model(preset: str, task: str):
    """A random-weight LoadedModel of ``preset`` (segmenter, or encoder at the preset's token stage)."""
    import torch

    from S2DCCore.config import PreprocessConfig, to_dict
    from S2DCCore.inference.model_io import LoadedModel
    from S2DCCore.models.encoders import EncoderConfig, SwinEncoder
    from S2DCCore.models.segmenter import SegmenterConfig, build_segmenter

    spec = _preset(preset)
    encoder = EncoderConfig(**spec["encoder"])
    torch.manual_seed(0)
    card = {"kind": "segmenter" if task == "segment" else "encoder", "roi": spec["roi"], "spacing": list(MODEL_SPACING),
            "preprocess": to_dict(PreprocessConfig(spacing=MODEL_SPACING)), "orientation": "RAS"}
    if task == "segment":
        network = build_segmenter(SegmenterConfig(encoder=encoder, out_channels=N_CLASSES)).eval()
        card.update(architecture={"encoder": to_dict(encoder), "out_channels": N_CLASSES, "norm_name": "instance"},
                    labels={str(c): f"class {c}" for c in range(N_CLASSES)})
        return LoadedModel(card=card, segmenter=network, module=network), network
    network = SwinEncoder(encoder).eval()
    card.update(architecture=to_dict(encoder), token_stage=spec["token_stage"])
    return LoadedModel(card=card, encoder=network.forward_features, module=network), network


def worker(spec: dict) -> dict:
    """One timed configuration, in this (fresh) process."""
    import torch
    from monai.inferers import sliding_window_inference

    from S2DCCore.inference.embed import embed
    from S2DCCore.inference.model_input import prepare_input
    from S2DCCore.inference.segment import segment_image
    from S2DCCore.io.image import read_image

    torch.set_num_threads(spec["threads"])
    model, network = _model(spec["preset"], spec["task"])
    roi = model.roi
    estimate = None
    if spec["impl"] == "monai":
        image = read_image(spec["image"])
        volume = prepare_input(image, model.preprocess, model.spacing, model.orientation).volume
        x = torch.from_numpy(volume)[None, None]
        stage = model.embed_stage

        def predictor(window):
            return network(window) if spec["task"] == "segment" else network.forward_features(window)[stage]
    reset = _reset_peak()
    before = _status("VmRSS")
    cpu_before = _cpu_seconds()
    start = time.perf_counter()
    if spec["impl"] == "monai":
        with torch.inference_mode():
            out = sliding_window_inference(x, roi, 1, predictor, overlap=0.25, mode="gaussian")
            if spec["task"] == "segment":
                out = out.argmax(1)
    elif spec["task"] == "segment":
        estimate = segment_image(spec["image"], model, device="cpu").estimate
    else:
        centre = tuple(float(v) for v in read_image(spec["image"]).affine @ [*(np.array(spec["shape"]) / 2), 1])[:3]
        estimate = embed(spec["image"], model, pca=True, clusters=CLUSTERS, point=centre, device="cpu").estimate
    wall = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu_before
    peak = _status("VmHWM")
    return {**{k: spec[k] for k in ("preset", "task", "impl")}, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "peak_rss_mib": round(peak / 2**20), "call_peak_mib": round((peak - before) / 2**20) if reset else None,
            "estimate_mib": None if estimate is None else round((estimate.host + estimate.device) / 2**20)}


def _volume(path: Path, shape: tuple[int, int, int]) -> Path:
    """A CT-like volume: an elliptic body of soft tissue with brighter blobs, in air, with noise (HU)."""
    from S2DCCore.io.image import write_image

    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij"))
    body = (grid[0] / 0.8) ** 2 + (grid[1] / 0.6) ** 2 < 1
    volume = np.where(body, 40.0, -1000.0).astype(np.float32)
    for _ in range(12):
        centre, radius = rng.uniform(-0.5, 0.5, 3), rng.uniform(0.08, 0.2)
        blob = ((grid - centre[:, None, None, None]) ** 2).sum(0) < radius**2
        volume[blob & body] = rng.uniform(-100, 300)
    volume += rng.normal(0, 20, shape).astype(np.float32)
    return write_image(path, volume, np.diag([-1.0, -1.0, 1.0, 1.0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="128×128×64 instead of 256×256×128")
    parser.add_argument("--presets", default="tiny,small")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per run (1: quiet timings)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "inference.json")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    shape = (128, 128, 64) if args.quick else (256, 256, 128)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        image = _volume(Path(tmp) / "ct.nii", shape)
        for preset in args.presets.split(","):
            for task in ("segment", "embed"):
                for impl in ("monai", "s2dc"):
                    spec = {"preset": preset, "task": task, "impl": impl, "image": str(image), "shape": shape,
                            "threads": args.threads}
                    done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True,
                                          text=True, check=False, env={**os.environ, "PYTHONWARNINGS": "ignore"})
                    if done.returncode:
                        sys.exit(f"{preset} {task} {impl} failed:\n{done.stderr}")
                    rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                    print(f"  {preset:5s} {task:7s} {impl:5s} {rows[-1]['wall_s']:7.2f} s", file=sys.stderr)
    ratios = []
    for preset in args.presets.split(","):
        for task in ("segment", "embed"):
            base, ours = (next(r for r in rows if (r["preset"], r["task"], r["impl"]) == (preset, task, impl))
                          for impl in ("monai", "s2dc"))
            ratios.append({"preset": preset, "task": task, "time_ratio": round(ours["wall_s"] / base["wall_s"], 2),
                           "cpu_ratio": _ratio(ours["cpu_s"], base["cpu_s"]),
                           "memory_ratio": _ratio(ours["call_peak_mib"], base["call_peak_mib"]),
                           "estimate_over_measured": _ratio(ours["estimate_mib"], ours["call_peak_mib"])})
    header = ("preset", "task", "impl", "wall s", "CPU s", "peak RSS MiB", "call peak MiB", "estimate MiB")
    table = [header] + [(r["preset"], r["task"], r["impl"], f"{r['wall_s']:.2f}", f"{r['cpu_s']:.2f}",
                         str(r["peak_rss_mib"]),
                         str(r["call_peak_mib"]), str(r["estimate_mib"] or "-")) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    print(f"input {'×'.join(map(str, shape))} (1 mm, LPS) → model grid at {MODEL_SPACING[0]:g} mm, CPU, "
          f"{args.threads} thread(s)")
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
    for r in ratios:
        print(f"{r['preset']:5s} {r['task']:7s} S2DC / MONAI: time ×{r['time_ratio']} (CPU ×{r['cpu_ratio']}), "
              f"call peak memory "
              f"×{r['memory_ratio']}; estimate / measured ×{r['estimate_over_measured']}")
    import torch

    payload = {"input_shape": list(shape), "input_spacing_mm": [1.0, 1.0, 1.0], "model_spacing_mm": list(MODEL_SPACING),
               "classes": N_CLASSES, "clusters": CLUSTERS, "threads": args.threads, "torch": torch.__version__,
               "machine": platform.platform(), "cpus": os.cpu_count(), "rows": rows, "ratios": ratios}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.out}")


def _ratio(a, b):
    return None if not a or not b else round(a / b, 2)


if __name__ == "__main__":
    main()
