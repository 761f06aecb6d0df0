"""The DINO/iBOT teacher centre: an EMA of the teacher's mean output, written once and reused.

Alice keeps two: one for the class-token logits, shape ``(1, D)``, and one for the patch logits,
shape ``(1, 1, D_patch)`` (methods.md §2.4). The batch mean is averaged over processes with the guarded
`all_reduce_mean`, so the same module works in one plain process and under ``torchrun``.
"""

from __future__ import annotations

import torch
from torch import nn

from S2DCCore.utils.distributed import all_reduce_mean


class Center(nn.Module):
    """An exponential moving average of batch means, kept as a buffer (saved with the model).

    ``update(x)`` averages ``x`` over every axis but the last (e.g. the batch, or the batch and the
    tokens), averages that over processes, and moves the centre towards it:
    ``c ← momentum · c + (1 − momentum) · mean(x)``. ``forward(x)`` returns ``x − c``.

    Args:
        shape: the centre's shape, ``(1, D)`` or ``(1, 1, D)``: ones, then the feature size.
        momentum: EMA momentum (Alice and DINO: 0.9).

    Examples:
        >>> center = Center((1, 4), momentum=0.9)
        >>> center.update(torch.ones(8, 4))
        >>> center.value
        tensor([[0.1000, 0.1000, 0.1000, 0.1000]])
    """

    def __init__(self, shape: tuple[int, ...], momentum: float = 0.9) -> None:
        super().__init__()
        if not shape or any(s != 1 for s in shape[:-1]):
            raise ValueError(f"centre shape must be (1, ..., D), not {tuple(shape)}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must lie in [0, 1], not {momentum}")
        self.momentum = float(momentum)
        self.register_buffer("value", torch.zeros(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (..., D) minus the centre (broadcast)."""
        return x - self.value.to(x.dtype)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Move the centre towards the mean of ``x`` (..., D) over all processes (a collective under torchrun).

        Every process must call it with the same shape of ``x``, as its mean is a mean of per-process means.
        """
        if x.shape[-1] != self.value.shape[-1]:
            raise ValueError(f"feature size {x.shape[-1]} does not match the centre's {self.value.shape[-1]}")
        batch_mean = x.detach().float().reshape(-1, x.shape[-1]).mean(dim=0)  # (D,)
        batch_mean = all_reduce_mean(batch_mean).reshape(self.value.shape).to(self.value.dtype)
        self.value.mul_(self.momentum).add_(batch_mean, alpha=1.0 - self.momentum)
