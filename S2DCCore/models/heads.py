"""Projection heads (no losses here)."""

from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """The S²DC projection MLP: Linear → BN → ReLU → Linear → BN → ReLU → Linear.

    BatchNorm has no affine parameters and no running statistics, as in the official head, so it
    behaves the same in training and evaluation. Inputs of any leading shape ``(..., in_dim)`` are
    flattened to ``(N, in_dim)`` first, so BatchNorm normalises each of the ``hidden_dim`` features over
    all N tokens.

    The official geo head is instead fed ``(tokens, depth_slices, in_dim)``; BatchNorm1d then takes the
    depth-slice axis as its channel axis and normalises over tokens *and features* per slice (no
    shape check fires because the layer has no weights). ``norm_over="slices"`` reproduces that quirk
    for inputs shaped ``(tokens, slices, in_dim)``; the default ``"features"`` is the fix.

    Args:
        in_dim: input feature size.
        hidden_dim: hidden size (official: 2048).
        out_dim: output size (official: 512).
        norm_over: ``"features"`` (fixed) or ``"slices"`` (official quirk).

    Examples:
        >>> head = ProjectionHead(48, 64, 32)
        >>> head(torch.randn(2, 10, 48)).shape
        torch.Size([2, 10, 32])
    """

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 512, norm_over: str = "features") -> None:
        super().__init__()
        if norm_over not in ("features", "slices"):
            raise ValueError(f"norm_over must be 'features' or 'slices', not {norm_over!r}")
        self.norm_over = norm_over
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, hidden_dim)
        self.fc3 = nn.Linear(hidden_dim, out_dim)
        self.out_dim = out_dim

    @staticmethod
    def _norm(x: torch.Tensor) -> torch.Tensor:
        # batch_norm normalises per index of dim 1 over every other dim: per feature for (N, hidden),
        # per depth slice for the official (tokens, slices, hidden) layout.
        return nn.functional.batch_norm(x, None, None, training=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        if self.norm_over == "features":
            x = x.reshape(-1, x.shape[-1])  # (N, in_dim): one BN statistic per feature over all N tokens
        x = torch.relu(self._norm(self.fc1(x)))
        x = torch.relu(self._norm(self.fc2(x)))
        return self.fc3(x).reshape(*lead, self.out_dim)
