"""The training loop: short and the same on every device.

forward (autocast on CUDA only) → finite check → backward (scaled for fp16) → unscale → clip →
step → schedule → method hook (EMA). Gradient clipping runs in both precision paths.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from S2DCCore.errors import S2DCError
from S2DCCore.utils.runtime import autocast_context


class NonFiniteLossError(S2DCError):
    """The loss became NaN or infinite: the run stops instead of training on garbage."""


@dataclass
class StepResult:
    """What one optimisation step measured."""

    loss: float
    parts: dict[str, float]
    lr: float
    grad_norm: float
    seconds: float


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return model.module if hasattr(model, "module") else model


def train_step(model: nn.Module, batch: dict, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               device: torch.device, precision: str, grad_clip: float, step: int) -> StepResult:
    """One optimisation step of ``model`` (which returns `LossTerms`) on ``batch``."""
    start = time.perf_counter()
    model.train()
    with autocast_context(device, precision):
        terms = model(batch)
    loss = terms.total.float()
    value = float(loss.detach())
    if not math.isfinite(value):
        parts = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.parts.items())
        raise NonFiniteLossError(f"loss is {value} at step {step + 1} ({parts}); stopping. Lower optim.lr, "
                                 "use precision=fp32, or check the data for NaNs")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)  # no-op when the scaler is disabled, so clipping sees true gradients either way
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf")))
    scaler.step(optimizer)
    scaler.update()
    after = getattr(unwrap(model), "after_step", None)
    if after is not None:
        after()
    return StepResult(loss=value, parts={k: float(v) for k, v in terms.parts.items()},
                      lr=optimizer.param_groups[0]["lr"], grad_norm=grad_norm, seconds=time.perf_counter() - start)


def run_loop(model: nn.Module, batches: Iterator[dict], optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler, *, device: torch.device,
             start_step: int, total_steps: int, precision: str, grad_clip: float,
             on_step: Callable[[int, StepResult], None]) -> None:
    """Train from ``start_step`` to ``total_steps``; ``on_step(step_done, result)`` logs and checkpoints."""
    for step in range(start_step, total_steps):
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in next(batches).items()}
        result = train_step(model, batch, optimizer, scaler, device, precision, grad_clip, step)
        scheduler.step()
        on_step(step + 1, result)
