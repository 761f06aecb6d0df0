"""Process-group set-up for ``torchrun``: NCCL on CUDA, gloo on CPU; a no-op for one process."""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)
# Collectives wait this long before failing (NCCL's default is 10 minutes; a rank may be slow at a
# validation or a checkpoint). Override with S2DC_DIST_TIMEOUT_MIN.
DEFAULT_TIMEOUT_MIN = 30.0


@dataclass(frozen=True)
class DistInfo:
    """Rank layout of this process (world_size 1 without torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str, device=None) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    ``device`` (this rank's CUDA device) is passed as ``device_id`` so NCCL binds the right GPU eagerly.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    if not dist.is_initialized():
        timeout = datetime.timedelta(minutes=float(os.environ.get("S2DC_DIST_TIMEOUT_MIN", DEFAULT_TIMEOUT_MIN)))
        kwargs = {"device_id": device} if device_type == "cuda" and device is not None else {}
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", timeout=timeout, **kwargs)
    return DistInfo(rank=dist.get_rank(), local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                    world_size=dist.get_world_size())


def leave_together() -> None:
    """On success, wait for every rank before the group is torn down, so no rank closes the connections
    while another (rank 0, still exporting) has them open. A CI run once saw rank 1 abort there ("terminate
    called without an active exception", gloo). Not on failure paths: torchrun stops the other ranks."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup_distributed() -> None:
    """Leave the process group (safe to call without one; no barrier, so a failing rank cannot hang here)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def setup_run(runtime):
    """Resolve device, join torchrun's process group, set threads and seed (seed + rank) — once per run.

    Returns ``(device, DistInfo)``; see `training_device` for which CUDA device a process gets.
    """
    import torch

    from S2DCCore.utils.runtime import configure_backends, resolve_device, seed_everything, set_threads

    device = training_device(resolve_device(runtime.device))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    info = init_distributed(device.type, device)
    set_threads(runtime.threads)
    seed_everything(runtime.seed, info.rank, runtime.deterministic)
    configure_backends(device, deterministic=runtime.deterministic, tf32=getattr(runtime, "tf32", True))
    return device, info


def training_device(requested):
    """The device this process trains on.

    One process: the requested device as given (``cuda:2`` trains on GPU 2; plain ``cuda`` is the
    current device, GPU 0). Under torchrun on CUDA: ``cuda:(LOCAL_RANK % device_count)``, which is also
    right when each process sees a single GPU (``CUDA_VISIBLE_DEVICES`` per rank); an explicit index is
    then ignored, with a warning, since every rank would otherwise share one GPU.
    """
    import torch

    if requested.type != "cuda":
        return requested
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return torch.device("cuda", requested.index if requested.index is not None else torch.cuda.current_device())
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    if requested.index is not None and requested.index != device.index:
        log.warning("under torchrun each rank uses cuda:LOCAL_RANK %% device_count; ignoring the explicit %s",
                    requested)
    return device
