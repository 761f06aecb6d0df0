"""A MoCo-style FIFO queue of past key features, kept in buffers so checkpoints carry it."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from S2DCCore.utils.distributed import all_gather_cat


class FeatureQueue(nn.Module):
    """First-in-first-out memory of ``size`` feature vectors of dimension ``dim``.

    As in the official S²DC code (MoCo's queue): the queue starts as random normal vectors that are
    L2-normalised, and every entry is used as a negative from the first step on. Keys are gathered
    from every rank before they are written (`all_gather_cat`; a no-op in one process). Unlike the
    official code, the number of keys per step need not divide ``size``: writing wraps around, and
    when more than ``size`` keys arrive at once only the last ``size`` are kept.

    The queue and its write pointer are buffers, so they are saved in ``state_dict`` and restored on
    resume, and they follow ``.to(device)``.

    Args:
        size: number of stored features K (≥ 0; 0 gives an empty queue that ignores writes).
        dim: feature dimension D.
        normalize: L2-normalise keys when they are written. The official code does not (its keys
            are raw projection-head outputs); only the initial random entries are normalised.

    Attributes:
        queue: (K, D) float32 buffer.
        ptr: 0-d long buffer, the row the next key is written to.

    Examples:
        >>> queue = FeatureQueue(size=4, dim=2)
        >>> queue.enqueue(torch.ones(3, 2))
        >>> int(queue.ptr), queue.features().shape
        (3, torch.Size([4, 2]))
    """

    queue: Tensor
    ptr: Tensor

    def __init__(self, size: int, dim: int, normalize: bool = False) -> None:
        super().__init__()
        if size < 0 or dim < 1:
            raise ValueError(f"FeatureQueue needs size ≥ 0 and dim ≥ 1, got size={size}, dim={dim}")
        self.size, self.dim, self.normalize = int(size), int(dim), bool(normalize)
        self.register_buffer("queue", nn.functional.normalize(torch.randn(self.size, self.dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def features(self) -> Tensor:
        """A detached copy of the queue, (K, D): safe to use in a loss while the queue is updated."""
        return self.queue.detach().clone()

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``keys`` (N, D) from every rank (rank order) at the pointer, wrapping around.

        A collective when distributed: every rank must call it with the same N.
        """
        if keys.dim() != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"keys must be (N, {self.dim}), got {tuple(keys.shape)}")
        keys = all_gather_cat(keys.detach())
        if self.size == 0 or keys.shape[0] == 0:
            return
        if self.normalize:
            keys = nn.functional.normalize(keys, dim=1)
        total = keys.shape[0]
        keys = keys[-self.size:].to(device=self.queue.device, dtype=self.queue.dtype)  # (n ≤ K, D)
        # Same end state as writing all `total` keys one by one: the last n land where they would.
        ptr = int(self.ptr)  # one host read per write
        start = ptr + total - keys.shape[0]
        rows = (start + torch.arange(keys.shape[0], device=self.queue.device)) % self.size
        self.queue[rows] = keys
        self.ptr.fill_((ptr + total) % self.size)

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}, normalize={self.normalize}"
