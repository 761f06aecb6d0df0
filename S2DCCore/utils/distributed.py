"""Guarded ``torch.distributed`` helpers: every one of them also works in a single plain process.

Library code calls these instead of ``torch.distributed`` directly, so a loss or a queue never needs
to know whether it runs under ``torchrun``. Without an initialised process group they behave like a
world of one process (rank 0, size 1, gathers and reductions return their input).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a process group is initialised (``torchrun`` + ``init_process_group``)."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of processes in the group (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0: the process that logs and writes checkpoints."""
    return get_rank() == 0


@torch.no_grad()
def all_gather_cat(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0, in rank order; no gradient flows through it.

    Args:
        x: (N, ...) tensor; every rank must pass the same shape (a collective: all ranks must call it).

    Returns:
        (world_size · N, ...) tensor, or ``x`` itself without a process group or with one process.
    """
    world = get_world_size()
    if world == 1:
        return x
    x = x.contiguous()
    gathered = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(gathered, x)
    return torch.cat(gathered, dim=0)


@torch.no_grad()
def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over ranks (element-wise), as a new tensor; no gradient flows through it.

    Args:
        x: tensor of the same shape on every rank (a collective: all ranks must call it).

    Returns:
        The element-wise mean over ranks, or a copy of ``x`` without a process group; ``x`` itself is
        never modified.
    """
    out = x.detach().clone()
    world = get_world_size()
    if world > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= world
    return out
