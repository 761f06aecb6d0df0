"""The training loop: short and the same on every device.

forward (autocast on CUDA only) → backward (scaled for fp16) → unscale → clip → step → schedule →
method hook (EMA). Gradient clipping runs in both precision paths.

Host synchronisations: the loss, its terms and the gradient norm stay tensors on the device; they are
read (one transfer) only at the steps the caller needs numbers (``sync_at``: logging, checkpoints, the
last step). The non-finite check is made there too, and agreed across ranks (one all-reduce), so every
rank stops at the same step: a per-rank check before backward would leave the other ranks waiting
forever in DDP's gradient all-reduce. In fp32/bf16 a non-finite loss stops the run at the next sync
(the weights of the steps in between are never saved). In fp16 an overflow is GradScaler's business:
it skips that step and lowers the scale (DDP has already made every rank see the same gradients, so
all skip together); only `FP16_MAX_SKIPS` consecutive non-finite steps stop the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from S2DCCore.errors import S2DCError
from S2DCCore.utils.runtime import autocast_context

# Consecutive skipped (non-finite) fp16 steps after which the run is declared diverged: GradScaler
# halves the scale on every skip, so 30 skips take 65536 to below 1e-4.
FP16_MAX_SKIPS = 30


class NonFiniteLossError(S2DCError):
    """The loss became NaN or infinite: the run stops instead of training on garbage."""


@dataclass
class StepResult:
    """What one optimisation step measured.

    On steps that were not synchronised (``synced`` False) the numbers are not read from the device:
    ``loss``/``grad_norm`` are NaN and ``parts`` is empty.
    """

    loss: float
    parts: dict[str, float]
    lr: float
    grad_norm: float
    seconds: float
    synced: bool = True


@dataclass
class StepTensors:
    """One step's measurements still on the device (no host synchronisation yet)."""

    loss: torch.Tensor
    parts: dict[str, torch.Tensor]
    grad_norm: torch.Tensor
    lr: float
    seconds: float


@dataclass
class FiniteGuard:
    """Device-side record of non-finite steps between two synchronisations."""

    fp16: bool = False
    streak: torch.Tensor | None = None  # consecutive non-finite steps (0-d, on the device)
    first_bad: torch.Tensor | None = None  # first non-finite step (1-based) since the start, or -1
    last: dict[str, float] = field(default_factory=dict)

    def record(self, tensors: StepTensors, step: int) -> None:
        bad = ~(torch.isfinite(tensors.loss) & torch.isfinite(tensors.grad_norm))
        if self.streak is None:
            self.streak = torch.zeros((), dtype=torch.int64, device=tensors.loss.device)
            self.first_bad = torch.full((), -1, dtype=torch.int64, device=tensors.loss.device)
        self.streak = (self.streak + 1) * bad
        self.first_bad = torch.where(bad & (self.first_bad < 0), torch.full_like(self.first_bad, step + 1),
                                     self.first_bad)

    def fatal(self) -> torch.Tensor:
        """0-d int64: 1 when the run must stop (any non-finite step; in fp16, too many in a row)."""
        if self.fp16:
            return (self.streak >= FP16_MAX_SKIPS).long()
        return (self.first_bad >= 0).long()


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return model.module if hasattr(model, "module") else model


def make_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """The AMP loss scaler: enabled only where autocast really runs fp16 (see `resolve_precision`)."""
    from S2DCCore.utils.runtime import resolve_precision

    return torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and resolve_precision(device, precision) == "fp16")


def step_tensors(model: nn.Module, batch: dict, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                 device: torch.device, precision: str, grad_clip: float) -> StepTensors:
    """One optimisation step of ``model`` (which returns `LossTerms`) on ``batch``; no host synchronisation
    except GradScaler's own (fp16)."""
    start = time.perf_counter()
    model.train()
    with autocast_context(device, precision):
        terms = model(batch)
    loss = terms.total.float()
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)  # no-op when the scaler is disabled, so clipping sees true gradients either way
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
    scaler.step(optimizer)  # skips the update when the (fp16) gradients are not finite
    scaler.update()
    after = getattr(unwrap(model), "after_step", None)
    if after is not None:
        after()
    return StepTensors(loss=loss.detach(), parts=dict(terms.parts), grad_norm=grad_norm.detach(),
                       lr=optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - start)


def read(tensors: StepTensors) -> StepResult:
    """The step's numbers on the host, in one transfer."""
    values = [tensors.loss, tensors.grad_norm, *tensors.parts.values()]
    floats = torch.stack([v.detach().reshape(()).float().to(tensors.loss.device) for v in values]).tolist()
    return StepResult(loss=floats[0], parts=dict(zip(tensors.parts, floats[2:])), lr=tensors.lr,
                      grad_norm=floats[1], seconds=tensors.seconds)


def check_finite(guard: FiniteGuard, result: StepResult, step: int) -> None:
    """Raise `NonFiniteLossError` on every rank if any rank recorded a fatal non-finite step (a collective)."""
    from S2DCCore.utils.distributed import get_world_size

    flags = torch.stack([guard.fatal(), guard.first_bad])
    if get_world_size() > 1:
        import torch.distributed as dist

        # MAX of (fatal, first bad step): any rank's failure stops all of them.
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    fatal, first_bad = (int(v) for v in flags.tolist())
    if fatal:
        parts = ", ".join(f"{k}={v:.4g}" for k, v in result.parts.items())
        raise NonFiniteLossError(f"loss is {result.loss} at step {step} (first non-finite at step {first_bad}; "
                                 f"{parts}); stopping. Lower optim.lr, use precision=fp32, or check the data "
                                 "for NaNs")


def train_step(model: nn.Module, batch: dict, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               device: torch.device, precision: str, grad_clip: float, step: int) -> StepResult:
    """One optimisation step, read back and checked at once (one process; `run_loop` defers both)."""
    guard = FiniteGuard(fp16=scaler.is_enabled())
    tensors = step_tensors(model, batch, optimizer, scaler, device, precision, grad_clip)
    guard.record(tensors, step)
    result = read(tensors)
    check_finite(guard, result, step + 1)
    return result


def run_loop(model: nn.Module, batches: Iterator[dict], optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler, *, device: torch.device,
             start_step: int, total_steps: int, precision: str, grad_clip: float,
             on_step: Callable[[int, StepResult], None], sync_at: Callable[[int], bool] | None = None) -> None:
    """Train from ``start_step`` to ``total_steps``; ``on_step(step_done, result)`` logs and checkpoints.

    ``sync_at(step_done)`` says at which steps the numbers are read and checked (the same on every
    rank); None reads every step. The last step is always read.
    """
    guard = FiniteGuard(fp16=scaler.is_enabled())
    for step in range(start_step, total_steps):
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in next(batches).items()}
        tensors = step_tensors(model, batch, optimizer, scaler, device, precision, grad_clip)
        guard.record(tensors, step)
        scheduler.step()
        done = step + 1
        if sync_at is None or sync_at(done) or done == total_steps:
            result = read(tensors)
            check_finite(guard, result, done)
        else:
            result = StepResult(loss=float("nan"), parts={}, lr=tensors.lr, grad_norm=float("nan"),
                                seconds=tensors.seconds, synced=False)
        on_step(done, result)
