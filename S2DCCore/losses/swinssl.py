"""The SwinUNETR self-supervised objective (Tang et al., CVPR 2022): rotation, contrastive coding, inpainting.

``L = w_rot · CE(rotation logits, rotation labels) + w_contrast · NT-Xent(view 1, view 2) +
w_rec · L1(reconstruction, rotated crops)``, weights 1/1/1 and temperature 0.5 as in the official
``losses/loss.py``. The contrastive term is MONAI's `monai.losses.ContrastiveLoss` (the same
formula as the official ``Contrast``: cosine similarities, in-batch negatives). A weight of 0 skips
its term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from S2DCCore.errors import UsageError
from S2DCCore.losses.terms import LossTerms


@dataclass(frozen=True)
class SwinSSLLossConfig:
    """Weights and temperature (official: 1, 1, 1 and 0.5)."""

    weight_rot: float = 1.0
    weight_contrast: float = 1.0
    weight_rec: float = 1.0
    temperature: float = 0.5

    def __post_init__(self) -> None:
        weights = (self.weight_rot, self.weight_contrast, self.weight_rec)
        if min(weights) < 0 or max(weights) <= 0:
            raise UsageError(f"swinssl.loss weights must be ≥ 0 with at least one > 0, not {weights}")
        if self.temperature <= 0:
            raise UsageError(f"swinssl.loss.temperature must be > 0, not {self.temperature}")


class SwinSSLLoss(nn.Module):
    """Named terms ``rot``, ``contrast``, ``rec``.

    Args:
        config: weights and temperature.

    Examples:
        >>> loss = SwinSSLLoss(SwinSSLLossConfig(weight_rec=0))
        >>> terms = loss(rotation_logits=torch.randn(4, 4), rotation_labels=torch.tensor([0, 1, 2, 3]),
        ...              contrast_1=torch.randn(2, 8), contrast_2=torch.randn(2, 8))
        >>> sorted(terms.parts)
        ['contrast', 'rot']
    """

    def __init__(self, config: SwinSSLLossConfig | None = None) -> None:
        super().__init__()
        from monai.losses import ContrastiveLoss

        self.config = config or SwinSSLLossConfig()
        self.contrastive = ContrastiveLoss(temperature=self.config.temperature)

    def forward(self, *, rotation_logits: torch.Tensor | None = None, rotation_labels: torch.Tensor | None = None,
                contrast_1: torch.Tensor | None = None, contrast_2: torch.Tensor | None = None,
                reconstruction: torch.Tensor | None = None, target: torch.Tensor | None = None) -> LossTerms:
        """Inputs of a term with weight 0 may be None.

        Args:
            rotation_logits: (2N, 4). rotation_labels: (2N,) in 0..3.
            contrast_1 / contrast_2: (N, D) projections of the two views of the same N crops.
            reconstruction / target: (2N, 1, X, Y, Z).
        """
        c = self.config
        parts: dict[str, torch.Tensor] = {}
        total = 0
        if c.weight_rot > 0:
            parts["rot"] = F.cross_entropy(rotation_logits.float(), rotation_labels)
            total = total + c.weight_rot * parts["rot"]
        if c.weight_contrast > 0:
            parts["contrast"] = self.contrastive(contrast_1.float(), contrast_2.float())
            total = total + c.weight_contrast * parts["contrast"]
        if c.weight_rec > 0:
            parts["rec"] = F.l1_loss(reconstruction.float(), target.float())
            total = total + c.weight_rec * parts["rec"]
        return LossTerms(total=total, parts={k: v.detach() for k, v in parts.items()})
