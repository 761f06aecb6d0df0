"""The resumable state of a training run, shared by pretraining and fine-tuning.

Model, optimiser, scheduler, AMP scaler, the sampler's numpy generator, torch/python/CUDA RNG states
and the step (plus any extra values), saved with `S2DCCore.checkpoint.save_state` (no pickle).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from S2DCCore.checkpoint import load_state, save_state
from S2DCCore.errors import UsageError
from S2DCCore.utils.run_lock import folder_is_empty


def save_training_state(path: Path, step: int, model: torch.nn.Module, optimizer, scheduler, scaler,
                        rng: np.random.Generator, config: dict, extra: dict | None = None) -> Path:
    """Write everything needed to continue at ``step`` exactly."""
    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"},
        "scaler": scaler.state_dict(),
        "rng": {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state(), "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None},
        "config": config,
        "extra": extra or {},
    }
    return save_state(path, state)


def restore_training_state(path: Path, model: torch.nn.Module, optimizer, scheduler, scaler,
                           rng: np.random.Generator, restore_global_rng: bool = True) -> tuple[int, dict]:
    """Load a state written by `save_training_state` in place; return ``(step, extra)``.

    ``restore_global_rng`` is for rank 0: other ranks keep their own (seed + rank) torch/python streams.
    """
    state = load_state(path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict({**scheduler.state_dict(), **state["scheduler"]})
    scaler.load_state_dict(state["scaler"])
    rng.bit_generator.state = state["rng"]["numpy"]
    if restore_global_rng:
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        if state["rng"].get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["rng"]["cuda"])
    return int(state["step"]), dict(state.get("extra") or {})


def prepare_run_dir(out: Path, resume: bool, config: dict) -> None:
    """Create a new run folder with ``config.json``, or check that a resumed one has checkpoints.

    A non-empty folder is never reused without ``resume``: a user's earlier run is not overwritten.
    """
    if resume:
        if not (out / "checkpoints").is_dir():
            raise UsageError("--resume given but the run folder has no checkpoints/", out)
        return
    if out.exists() and not folder_is_empty(out):  # the writer's lock file does not count
        raise UsageError("run folder exists and is not empty; use --resume to continue it, or a new folder", out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2))
