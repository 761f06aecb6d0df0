"""Process-group set-up for ``torchrun``: NCCL on CUDA, gloo on CPU; a no-op for one process."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DistInfo:
    """Rank layout of this process (world_size 1 without torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistInfo(rank=dist.get_rank(), local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                    world_size=dist.get_world_size())


def cleanup_distributed() -> None:
    """Leave the process group (safe to call without one; no barrier, so a failing rank cannot hang here)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def setup_run(runtime):
    """Resolve device, join torchrun's process group, set threads and seed (seed + rank) — once per run.

    Returns ``(device, DistInfo)``; under torchrun on CUDA each process gets ``cuda:LOCAL_RANK``.
    """
    import torch

    from S2DCCore.utils.runtime import resolve_device, seed_everything, set_threads

    requested = resolve_device(runtime.device)
    info = init_distributed(requested.type)
    device = torch.device("cuda", info.local_rank) if requested.type == "cuda" else requested
    if device.type == "cuda":
        torch.cuda.set_device(device)
    set_threads(runtime.threads)
    seed_everything(runtime.seed, info.rank, runtime.deterministic)
    return device, info
