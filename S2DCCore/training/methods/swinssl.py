"""The classic SwinUNETR self-supervised pretraining (Tang et al., CVPR 2022) as a baseline method.

Per step: ``batch_size`` volumes × ``crops_per_volume`` random crops (the official loader: 2 crops of
96³ per volume, 2 volumes), two rotated and corrupted views per crop (`S2DCCore.data.views.swinssl`),
one encoder pass over both views, and `SwinSSLLoss` (rotation CE, MONAI ``ContrastiveLoss``, L1
inpainting). No teacher. The encoder is the project's SwinUNETR-v2 encoder (officially v1), so the
baseline transfers into the same fine-tuning network as S²DC and Alice.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from S2DCCore.data.regions import random_region
from S2DCCore.data.views.swinssl import make_swinssl_views
from S2DCCore.errors import UsageError
from S2DCCore.losses.swinssl import SwinSSLLoss, SwinSSLLossConfig
from S2DCCore.losses.terms import LossTerms
from S2DCCore.models.encoders import EncoderConfig, build_encoder
from S2DCCore.models.swinssl_heads import SwinSSLHeads


@dataclass(frozen=True)
class SwinSSLConfig:
    """The ``swinssl:`` section of a preset.

    Attributes:
        roi: crop size (multiples of 32; official 96³). The last stage must hold ≥ 2 tokens.
        crops_per_volume: random crops per volume and step (official 2); the contrastive term needs ≥ 2
            crops per step.
        rotation_axes: spatial axes of the rotation plane (0, 1) = x–y, about z (see `swinssl_views`).
        token: which last-stage tokens feed the rotation/contrastive heads (``official``: tokens 0 and 1; ``pooled``).
        contrast_dim: contrastive projection size (official 512).
        max_drop / max_block / min_block: corruption boxes (official 0.3, 0.25, 0.05).
        loss: term weights and temperature.
    """

    roi: tuple[int, int, int] = (96, 96, 96)
    crops_per_volume: int = 2
    rotation_axes: tuple[int, int] = (0, 1)
    token: str = "official"
    contrast_dim: int = 512
    max_drop: float = 0.3
    max_block: float = 0.25
    min_block: float = 0.05
    loss: SwinSSLLossConfig = field(default_factory=SwinSSLLossConfig)

    def __post_init__(self) -> None:
        if any(r % 32 or r < 32 for r in self.roi) or math.prod(r // 32 for r in self.roi) < 2:
            # The decoder instance-normalises the last stage (roi/32): it needs more than one voxel.
            raise UsageError(f"swinssl.roi must be multiples of 32 with at least one side ≥ 64, "
                             f"not {tuple(self.roi)}")
        a, b = self.rotation_axes
        if a == b or not {a, b} <= {0, 1, 2} or self.roi[a] != self.roi[b]:
            raise UsageError(f"swinssl.rotation_axes {tuple(self.rotation_axes)} must name two axes on which "
                             f"the crop {tuple(self.roi)} is square")
        if self.token not in ("official", "pooled"):
            raise UsageError(f"swinssl.token must be 'official' or 'pooled', not {self.token!r}")
        if self.crops_per_volume < 1:
            raise UsageError(f"swinssl.crops_per_volume must be ≥ 1, not {self.crops_per_volume}")


class SwinSSLMethod(nn.Module):
    """Encoder + heads + loss; ``forward(batch)`` returns `LossTerms`.

    Args:
        encoder: encoder architecture.
        config: the ``swinssl`` section.
    """

    def __init__(self, encoder: EncoderConfig, config: SwinSSLConfig) -> None:
        super().__init__()
        self.encoder = build_encoder(encoder)
        self.heads = SwinSSLHeads(encoder.stage_channels()[-1], config.contrast_dim, encoder.in_channels, config.token)
        self.criterion = SwinSSLLoss(config.loss)
        loss = config.loss
        self.flags = {"rotation": loss.weight_rot > 0, "contrastive": loss.weight_contrast > 0,
                      "reconstruct": loss.weight_rec > 0}

    def forward(self, batch: dict[str, torch.Tensor]) -> LossTerms:
        """batch: ``view1``/``view2``/``target1``/``target2`` (N, 1, *roi), ``rot1``/``rot2`` (N,)."""
        views = torch.cat([batch["view1"], batch["view2"]])  # (2N, 1, *roi): both views in one pass
        rot, con, rec = self.heads(self.encoder.forward_features(views)[-1], **self.flags)
        con_1, con_2 = con.chunk(2) if con is not None else (None, None)
        return self.criterion(rotation_logits=rot, rotation_labels=torch.cat([batch["rot1"], batch["rot2"]]),
                              contrast_1=con_1, contrast_2=con_2, reconstruction=rec,
                              target=torch.cat([batch["target1"], batch["target2"]]))

    def encoder_state(self) -> dict[str, torch.Tensor]:
        """The encoder's weights, keyed as ``SwinUNETR.swinViT.*``."""
        return {k: v.detach().cpu() for k, v in self.encoder.state_dict().items()}


def build_method(config) -> SwinSSLMethod:
    """The SwinSSL module for a `PretrainConfig`."""
    ssl = config.swinssl
    if ssl.loss.weight_contrast > 0 and config.batch_size * ssl.crops_per_volume < 2:
        raise UsageError("swinssl: the contrastive term needs at least 2 crops per step "
                         "(batch_size × swinssl.crops_per_volume); its negatives are the other crops")
    return SwinSSLMethod(config.encoder, ssl)


def make_batches(store, rng: np.random.Generator, config, *, method: SwinSSLMethod | None = None,
                 data: Path | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches: random crops of random volumes, two views each (`make_swinssl_views`)."""
    ssl = config.swinssl
    while True:
        crops = []
        for _ in range(config.batch_size):
            volume = store[int(rng.integers(len(store)))]
            crops += [random_region(volume, ssl.roi, rng) for _ in range(ssl.crops_per_volume)]
        yield make_swinssl_views(torch.stack(crops), rng, rotation_axes=ssl.rotation_axes, max_drop=ssl.max_drop,
                                 max_block=ssl.max_block, min_block=ssl.min_block)


def has_unused_parameters(config) -> bool:
    """A zero weight leaves its head without gradients (DDP must be told)."""
    loss = config.swinssl.loss
    return min(loss.weight_rot, loss.weight_contrast, loss.weight_rec) == 0


def card_extras(config) -> dict:
    """Model-card entries: every head reads the last stage, the default stage of ``embed``."""
    return {"token_stage": 4}
