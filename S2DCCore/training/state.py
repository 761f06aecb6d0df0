"""The resumable state of a training run, shared by pretraining and fine-tuning.

Model, optimiser, scheduler, AMP scaler, the sampler's numpy generator, torch/python/CUDA RNG states
and the step (plus any extra values), saved with `S2DCCore.checkpoint.save_state` (no pickle).

Under torchrun only rank 0 writes, but every rank's generators are saved (`gather_rng_states`, a
collective at each save) and each rank restores its own: restoring rank 0's sampler on every rank
would make all ranks draw the same batches after a resume.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import torch

from S2DCCore.checkpoint import load_state, save_state
from S2DCCore.errors import UsageError
from S2DCCore.utils.distributed import get_world_size
from S2DCCore.utils.run_lock import folder_is_empty

log = logging.getLogger(__name__)


def rng_state(rng: np.random.Generator) -> dict:
    """This process's generator states: the sampler's numpy generator, torch, python and CUDA."""
    return {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}


def gather_rng_states(rng: np.random.Generator) -> list[dict]:
    """Every rank's `rng_state`, in rank order. A collective under torchrun: all ranks call it at each save."""
    local = rng_state(rng)
    world = get_world_size()
    if world == 1:
        return [local]
    import torch.distributed as dist

    states: list = [None] * world
    dist.all_gather_object(states, local)
    return states


def save_training_state(path: Path, step: int, model: torch.nn.Module, optimizer, scheduler, scaler,
                        rng: np.random.Generator, config: dict, extra: dict | None = None,
                        rng_states: list[dict] | None = None) -> Path:
    """Write everything needed to continue at ``step`` exactly.

    ``rng_states``: every rank's generators (`gather_rng_states`); None saves this process's only.
    """
    ranks = rng_states if rng_states is not None else [rng_state(rng)]
    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"},
        "scaler": scaler.state_dict(),
        "rng_ranks": ranks,  # rank order; rank 0's is what older versions stored as "rng"
        "config": config,
        "extra": extra or {},
    }
    return save_state(path, state)


def restore_training_state(path: Path, model: torch.nn.Module, optimizer, scheduler, scaler,
                           rng: np.random.Generator, *, rank: int = 0, world_size: int = 1) -> tuple[int, dict]:
    """Load a state written by `save_training_state` in place; return ``(step, extra)``.

    Each rank restores its own generators. When the checkpoint holds another number of ranks (or
    predates per-rank states), rank 0 restores the saved rank-0 state and rank r > 0 continues from
    that sampler jumped ahead r times (a distinct stream), keeping its own seeded torch/python streams.
    An AMP scaler saved disabled (a run in fp32/bf16) resumed with fp16 starts from a fresh scale.
    """
    state = load_state(path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict({**scheduler.state_dict(), **state["scheduler"]})
    if scaler.is_enabled() and not state["scaler"]:
        log.info("the checkpoint was saved without fp16 loss scaling; starting a fresh scale")
    else:
        scaler.load_state_dict(state["scaler"])  # a disabled scaler ignores a saved one
    ranks = state.get("rng_ranks") or [state["rng"]]
    if len(ranks) == world_size:
        _set_rng(ranks[rank], rng)
    elif rank == 0:
        _set_rng(ranks[0], rng)
    else:
        log.warning("checkpoint holds generator states of %d rank(s), this run has %d: rank %d draws from a "
                    "jumped copy of rank 0's sampler", len(ranks), world_size, rank)
        generator = type(rng.bit_generator)()
        generator.state = ranks[0]["numpy"]
        rng.bit_generator.state = generator.jumped(rank).state
    return int(state["step"]), dict(state.get("extra") or {})


def _set_rng(saved: dict, rng: np.random.Generator) -> None:
    rng.bit_generator.state = saved["numpy"]
    torch.set_rng_state(saved["torch"])
    random.setstate(saved["python"])
    if saved.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(saved["cuda"])


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
