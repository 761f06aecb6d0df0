"""One-shot check of S2DC on a GPU: speed, memory and numerical agreement of every training path.

    python benchmarks/gpu_check.py [--cpu] [--out DIR] [--checks NAME,...] [--steps N]
    bash benchmarks/gpu_check.sh [--cpu] [--out DIR]          (creates the environment first)

Checks (each runs on its own; a failure is recorded with its one-line reason and the rest still run):

* ``environment``: torch/CUDA versions, GPUs, native bf16.
* ``pretrain``: per method (s2dc, alice, swinssl) and precision (fp32, bf16, fp16), steps/s and peak
  memory of whole training steps at the ``base`` preset on a fixed random batch.
* ``loss_equality``: each method's loss on one fixed batch, GPU fp32 (TF32 off) against the CPU;
  passes within 1e-4 (relative to max(1, |loss|)).
* ``finetune``: SwinUNETR fine-tuning steps/s and memory (base: 4 crops of 96³, 14 classes).
* ``inference``: ``segment`` and ``embed`` of a 512×512×300 CT-like volume (1 mm; model grid 1.5 mm):
  wall time, peak GPU and host memory.
* ``ddp``: ``s2dc pretrain`` under torchrun with 2 processes (2 GPUs: NCCL; ``--cpu``: gloo).

``--cpu`` runs the same steps at ``tiny`` sizes on the CPU (fp32 only: autocast is CUDA-only, so the
bf16/fp16 rows are recorded as skipped; the loss check compares two CPU runs), a smoke test that takes
a few minutes on 2 cores. Writes ``DIR/gpu_check.json`` and ``DIR/gpu_check.md`` (default DIR:
``benchmarks/results/gpu_check``) and prints the table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from device_timing import free, make_batch, peaks, pretrain_config, reset_peak, sync, timed_steps, to_device  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("s2dc", "alice", "swinssl")
PRECISIONS = ("fp32", "bf16", "fp16")
N_CLASSES = 14  # BTCV: 13 organs + background
CHECKS = ("environment", "pretrain", "loss_equality", "finetune", "inference", "ddp")


class Skip(Exception):
    """A check that does not apply here (recorded as skipped, with the reason)."""


# ----------------------------------------------------------------------------------------------------------
# Checks: each returns a list of rows (dicts); raising Skip or any exception is recorded by `run_check`.


def check_environment(ctx: dict) -> list[dict]:
    import torch

    row = {"name": "environment", "torch": torch.__version__, "python": platform.python_version(),
           "cuda_available": torch.cuda.is_available(), "cpu_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        row.update(cuda=torch.version.cuda, gpus=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
                   capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                   bf16_native=torch.cuda.is_bf16_supported(including_emulation=False),
                   cudnn=torch.backends.cudnn.version())
    return [row]


def check_pretrain(ctx: dict) -> list[dict]:
    import torch

    from S2DCCore.training import methods

    device, rows = ctx["device"], []
    for method in ctx["methods"]:
        for precision in PRECISIONS:
            row = {"name": "pretrain", "method": method, "precision": precision, "preset": ctx["preset"]}
            rows.append(row)
            if device.type != "cuda" and precision != "fp32":
                row.update(status="skipped", reason="autocast is CUDA-only: the CPU runs fp32")
                continue
            try:
                config = pretrain_config(method, ctx["preset"], device)
                torch.manual_seed(0)
                model = methods.get(method).build_method(config).to(device)
                row.update(timed_steps(model, make_batch(method, config), device, precision, ctx["steps"],
                                        ctx["warmup"], config.optim.grad_clip or 1.0))
                row["status"] = "ok"
            except Exception as exc:  # one failing precision must not hide the others
                row.update(status="failed", reason=_reason(exc))
            finally:
                model = None
                free(device)
    return rows


def check_loss_equality(ctx: dict) -> list[dict]:
    """Each method's loss on a fixed batch: the device in fp32 (TF32 off) against the CPU, in eval mode
    (no dropout draws, no queue writes)."""
    import torch

    from S2DCCore.training import methods

    device, rows = ctx["device"], []
    previous = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        for method in ctx["methods"]:
            row = {"name": "loss_equality", "method": method, "precision": "fp32", "preset": ctx["preset"],
                   "compared": f"{device.type} vs cpu"}
            rows.append(row)
            try:
                config = pretrain_config(method, ctx["preset"], device)
                torch.manual_seed(0)
                reference = methods.get(method).build_method(config).eval()
                other = copy.deepcopy(reference).to(device)
                batch = make_batch(method, config)
                with torch.no_grad():  # the same global-RNG draws in both (S²DC picks its L_g crop on the CPU RNG)
                    torch.manual_seed(1)
                    ref_terms = reference(batch)
                    torch.manual_seed(1)
                    dev_terms = other(to_device(batch, device))
                a, b = float(dev_terms.total), float(ref_terms.total)
                diff = abs(a - b) / max(1.0, abs(b))
                parts = {k: [float(dev_terms.parts[k]), float(v)] for k, v in ref_terms.parts.items()}
                row.update(loss_device=a, loss_cpu=b, rel_diff=diff, parts=parts,
                           status="ok" if diff <= 1e-4 else "failed")
                if diff > 1e-4:
                    row["reason"] = f"relative difference {diff:.2e} > 1e-4"
            except Exception as exc:
                row.update(status="failed", reason=_reason(exc))
            finally:
                reference = other = None
                free(device)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous
    return rows


def check_finetune(ctx: dict) -> list[dict]:
    import torch

    from S2DCCore.config import load_config
    from S2DCCore.models.segmenter import SegmenterConfig, build_segmenter
    from S2DCCore.training.config import FinetuneConfig
    from S2DCCore.training.finetune import SegmentationTask

    device, rows = ctx["device"], []
    config = load_config(FinetuneConfig, ctx["preset"], [f"runtime.device={device.type}"], section="finetune")
    precisions = ("fp32", config.precision) if device.type == "cuda" else ("fp32",)
    for precision in precisions:
        row = {"name": "finetune", "method": "swinunetr", "precision": precision, "preset": ctx["preset"],
               "crops": config.batch_size * config.crops_per_volume, "roi": list(config.roi)}
        rows.append(row)
        try:
            torch.manual_seed(0)
            task = SegmentationTask(build_segmenter(SegmenterConfig(encoder=config.encoder,
                                                                    out_channels=N_CLASSES))).to(device)
            n = row["crops"]
            batch = {"image": torch.rand(n, 1, *config.roi), "label": torch.randint(0, N_CLASSES, (n, 1, *config.roi))}
            row.update(timed_steps(task, batch, device, precision, ctx["steps"], ctx["warmup"]), status="ok")
        except Exception as exc:
            row.update(status="failed", reason=_reason(exc))
        finally:
            task = None
            free(device)
    return rows


def _inference_model(preset: str, task: str, spacing):
    """A random-weight LoadedModel of ``preset`` (segmenter with 14 classes, or encoder)."""
    import torch

    from S2DCCore.config import PreprocessConfig, load_config, to_dict
    from S2DCCore.inference.model_io import LoadedModel
    from S2DCCore.models.encoders import SwinEncoder
    from S2DCCore.models.segmenter import SegmenterConfig, build_segmenter
    from S2DCCore.training.config import FinetuneConfig, PretrainConfig

    finetune = load_config(FinetuneConfig, preset, section="finetune")
    pretrain = load_config(PretrainConfig, preset, section="pretrain")
    torch.manual_seed(0)
    card = {"kind": "segmenter" if task == "segment" else "encoder", "roi": list(finetune.roi),
            "spacing": list(spacing), "preprocess": to_dict(PreprocessConfig(spacing=tuple(spacing))),
            "orientation": "RAS"}
    if task == "segment":
        network = build_segmenter(SegmenterConfig(encoder=finetune.encoder, out_channels=N_CLASSES)).eval()
        card.update(architecture={"encoder": to_dict(finetune.encoder), "out_channels": N_CLASSES,
                                  "norm_name": "instance"}, labels={str(c): f"class {c}" for c in range(N_CLASSES)})
        return LoadedModel(card=card, segmenter=network, module=network)
    network = SwinEncoder(finetune.encoder).eval()
    card.update(architecture=to_dict(finetune.encoder), token_stage=pretrain.s2dc_model.token_stage)
    return LoadedModel(card=card, encoder=network.forward_features, module=network)


def check_inference(ctx: dict) -> list[dict]:
    import inference as inference_bench  # benchmarks/inference.py: the CT-like test volume

    from S2DCCore.inference.embed import embed
    from S2DCCore.inference.segment import segment_image

    device, rows = ctx["device"], []
    shape = ctx["volume"]
    with tempfile.TemporaryDirectory() as tmp:
        path = inference_bench._volume(Path(tmp) / "ct.nii", shape)
        for task in ("segment", "embed"):
            row = {"name": "inference", "method": task, "preset": ctx["preset"], "volume": "×".join(map(str, shape)),
                   "precision": "bf16" if device.type == "cuda" else "fp32"}
            rows.append(row)
            try:
                model = _inference_model(ctx["preset"], task, ctx["model_spacing"])
                reset_peak(device)
                start = time.perf_counter()
                if task == "segment":
                    result = segment_image(path, model, device=device)
                else:
                    result = embed(path, model, pca=True, clusters=8, device=device)
                sync(device)
                estimate = getattr(result, "estimate", None)
                row.update(wall_s=round(time.perf_counter() - start, 2), **peaks(device), status="ok",
                           estimate_mib=None if estimate is None else round((estimate.host + estimate.device) / 2**20))
            except Exception as exc:
                row.update(status="failed", reason=_reason(exc))
            finally:
                model = result = None
                free(device)
    return rows


def check_ddp(ctx: dict) -> list[dict]:
    import torch

    device = ctx["device"]
    row = {"name": "ddp", "method": "s2dc", "preset": ctx["ddp_preset"], "processes": 2}
    if device.type == "cuda" and torch.cuda.device_count() < 2:
        raise Skip(f"{torch.cuda.device_count()} GPU visible; the 2-process run needs 2")
    from S2DCCore.data.phantoms import PhantomConfig, write_phantom_cohort

    steps = ctx["ddp_steps"]
    with tempfile.TemporaryDirectory() as tmp:
        cohort = write_phantom_cohort(Path(tmp) / "ph", cases=2, seed=3, config=PhantomConfig(size=ctx["phantom_size"]))
        run = Path(tmp) / "run"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                               "-m", "S2DCCore.cli.main", "pretrain", "--data", str(cohort), "--out", str(run),
                               "--preset", ctx["ddp_preset"], "--steps", str(steps), "--device", device.type,
                               "--progress", "none", f"save_every={steps}", "log_every=1"],
                              capture_output=True, text=True, timeout=ctx["ddp_timeout"], env=env)
        wall = time.perf_counter() - start
        if done.returncode:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            raise RuntimeError(f"torchrun exited {done.returncode}: {lines[-1] if lines else ''}")
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        step_s = [m["step_s"] for m in metrics[1:]] or [metrics[-1]["step_s"]]
        row.update(status="ok", wall_s=round(wall, 1), steps=len(metrics), loss=metrics[-1]["loss"],
                   steps_per_s=round(1 / float(np.median(step_s)), 3),
                   backend="nccl" if device.type == "cuda" else "gloo")
    return [row]


CHECK_FUNCTIONS: dict[str, Callable[[dict], list[dict]]] = {
    "environment": check_environment, "pretrain": check_pretrain, "loss_equality": check_loss_equality,
    "finetune": check_finetune, "inference": check_inference, "ddp": check_ddp,
}


# ----------------------------------------------------------------------------------------------------------
# Running, recording, reporting


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def run_check(name: str, fn: Callable[[dict], list[dict]], ctx: dict) -> list[dict]:
    """Run one check; any exception becomes one ``failed`` row with its one-line reason."""
    start = time.perf_counter()
    try:
        rows = fn(ctx)
    except Skip as exc:
        rows = [{"name": name, "status": "skipped", "reason": str(exc)}]
    except Exception as exc:  # noqa: BLE001 - the point is to keep going
        rows = [{"name": name, "status": "failed", "reason": _reason(exc),
                 "traceback": traceback.format_exc(limit=8)[-2000:]}]
    for row in rows:
        row.setdefault("status", "ok")
    rows[-1]["check_s"] = round(time.perf_counter() - start, 1)
    return rows


def context(cpu: bool, steps: int | None = None, methods=METHODS) -> dict:
    import torch

    if not cpu and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device visible (use --cpu for the CPU smoke test)")
    device = torch.device("cpu") if cpu else torch.device("cuda", 0)
    if not cpu:
        from S2DCCore.utils.runtime import configure_backends

        configure_backends(device)  # as training runs: cuDNN autotuning, TF32 (the OT stays fp32)
    return {"device": device, "methods": tuple(methods), "preset": "tiny" if cpu else "base",
            "steps": steps or (2 if cpu else 5), "warmup": 1 if cpu else 2,
            "volume": (96, 96, 64) if cpu else (512, 512, 300), "model_spacing": (2.5,) * 3 if cpu else (1.5,) * 3,
            "ddp_preset": "tiny" if cpu else "base", "ddp_steps": 2 if cpu else 6, "phantom_size": 48 if cpu else 96,
            "ddp_timeout": 240 if cpu else 300}


def run_all(ctx: dict, checks=CHECKS, functions=None) -> list[dict]:
    functions = functions or CHECK_FUNCTIONS
    rows = []
    for name in checks:
        print(f"gpu_check: {name} …", file=sys.stderr, flush=True)
        rows += run_check(name, functions[name], ctx)
    return rows


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def markdown(rows: list[dict], header: str) -> str:
    """The result table (one line per measurement) in GitHub markdown."""
    env = next((r for r in rows if r.get("name") == "environment" and r["status"] == "ok"), {})
    lines = [f"### {header}", ""]
    if env:
        gpus = ", ".join(env.get("gpus", [])) or "none"
        lines += [f"torch {env.get('torch')}, CUDA {env.get('cuda', '–')}, GPUs: {gpus}, native bf16: "
                  f"{env.get('bf16_native', '–')}", ""]
    lines += ["| check | what | precision | status | steps/s | time s | GPU peak MiB | host peak MiB | notes |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("name") == "environment" and r["status"] == "ok":
            continue
        if r.get("name") == "loss_equality" and r["status"] == "ok":
            notes = f"{r['compared']}: {r['loss_device']:.6g} vs {r['loss_cpu']:.6g} (rel {r['rel_diff']:.1e})"
        else:
            notes = r.get("reason", "")
            if r.get("precision_used") and r.get("precision_used") != r.get("precision"):
                notes = f"ran as {r['precision_used']}" + (f"; {notes}" if notes else "")
        time_s = r.get("step_s") if "step_s" in r else r.get("wall_s")
        what = " ".join(str(r[k]) for k in ("method", "preset", "volume") if r.get(k))
        lines.append(f"| {r.get('name')} | {what} | {r.get('precision', '')} | {r['status']} | "
                     f"{_fmt(r.get('steps_per_s'))} | {_fmt(time_s)} | {_fmt(r.get('gpu_peak_mib'))} | "
                     f"{_fmt(r.get('host_peak_mib'))} | {notes.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU (a smoke test of the same steps)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_check")
    parser.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated subset of {', '.join(CHECKS)}")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default 5; --cpu 2)")
    args = parser.parse_args(argv)
    checks = [c for c in args.checks.split(",") if c]
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        parser.error(f"unknown check(s) {', '.join(unknown)}; known: {', '.join(CHECKS)}")
    ctx = context(args.cpu, args.steps, [m for m in args.methods.split(",") if m])
    start = time.perf_counter()
    rows = run_all(ctx, checks)
    total = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    mode = "CPU smoke test (tiny preset)" if args.cpu else "GPU (base preset)"
    header = f"gpu_check: {mode}, {total:.0f} s, {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC"
    (args.out / "gpu_check.json").write_text(json.dumps(
        {"command": " ".join(["benchmarks/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]),
         "mode": "cpu" if args.cpu else "gpu", "device": str(ctx["device"]), "total_s": round(total, 1),
         "rows": rows}, indent=2, default=str))
    table = markdown(rows, header)
    (args.out / "gpu_check.md").write_text(table)
    print(table)
    failed = [r for r in rows if r["status"] == "failed"]
    print(f"gpu_check: {len(rows)} rows, {len(failed)} failed; wrote {args.out / 'gpu_check.json'} and "
          f"{args.out / 'gpu_check.md'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
