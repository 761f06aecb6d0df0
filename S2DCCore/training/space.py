"""What a training run will write, estimated before step 1, and the refusal when the disk has less.

A checkpoint holds the model's state (weights, buffers such as the teacher and the queue), AdamW's two
moments per trainable parameter, and small JSON; during its atomic swap the old and the new copy exist
together, so a run needs twice that. Each export (encoder or model folder) is swapped the same way and
is at most the model's weights. Metrics add about `METRICS_LINE_BYTES` per logged step.
"""

from __future__ import annotations

from pathlib import Path

import torch

from S2DCCore.utils.disk import check_free_space, format_bytes, tree_bytes

METRICS_LINE_BYTES = 400  # one JSON line of loss terms, lr, grad norm (measured ~250 B) plus tensorboard
ADAMW_MOMENTS = 2  # exp_avg and exp_avg_sq, each the size of the parameter
SLACK_BYTES = 1_000_000  # JSON, model card, config, directory entries


def checkpoint_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of one training checkpoint of ``model`` and its AdamW ``optimizer`` (before any step)."""
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    trainable = {id(p): p for group in optimizer.param_groups for p in group["params"]}
    moments = ADAMW_MOMENTS * sum(p.numel() * p.element_size() for p in trainable.values())
    return state + moments


def export_bytes(model: torch.nn.Module) -> int:
    """An upper bound of one exported encoder or model folder: all of ``model``'s parameters."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def run_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, steps: int, log_every: int,
              out: Path, resume: bool) -> int:
    """Bytes a run still needs: two checkpoints and two exports (swap), metrics; minus what a resumed run
    already holds (its checkpoint and export are one of the two copies)."""
    checkpoint, export = checkpoint_bytes(model, optimizer), export_bytes(model)
    needed = 2 * (checkpoint + export) + METRICS_LINE_BYTES * (steps // max(1, log_every) + 1) + SLACK_BYTES
    if resume:
        needed -= min(checkpoint + export, tree_bytes(out / "checkpoints") + tree_bytes(out / "encoder")
                      + tree_bytes(out / "model"))
    return needed


def check_run_space(out: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, steps: int,
                    log_every: int, resume: bool) -> int:
    """Refuse (`StorageError`, one line) before step 1 when ``out``'s file system cannot hold the run."""
    needed = run_bytes(model, optimizer, steps=steps, log_every=log_every, out=out, resume=resume)
    checkpoint = format_bytes(checkpoint_bytes(model, optimizer))
    check_free_space(out, needed, f"this run's checkpoints (checkpoint {checkpoint} × 2 for the atomic swap, exports, "
                     "metrics)")
    return needed
