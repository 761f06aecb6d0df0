"""A light multi-scale segmentation head on the Swin encoder's five stages (``decoder: light``).

What the linear probe reads, made trainable: every stage is projected by a 1×1×1 convolution, the
projections are upsampled (trilinearly) to the finest stage (stride 2) and summed, one 3×3×3 block mixes
them there, and the result is upsampled to the input and added to a small full-resolution stem on the
image itself (edges the stride-2 stage cannot place), before a 1×1×1 classifier:

    h   = Σ_s up₂(P_s · f_s)                  (stride-2 grid, ``width`` channels)
    h   = act(norm(conv₃(h)))
    out = C · act(norm(up₁(Q · h) + stem(x)))  (input grid)

On a CPU it costs a fraction of SwinUNETR's decoder (whose full-resolution blocks dominate a step) and,
because the encoder's stages reach the classifier through one linear map each, it starts where the
linear probe stands and trains from there. The network keeps the encoder under ``swinViT`` so that
pretrained encoders load through the same checked identity mapping as into SwinUNETR.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


def _block(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
                         nn.InstanceNorm3d(out_channels, affine=True), nn.LeakyReLU(0.01, inplace=True))


class MultiScaleHead(nn.Module):
    """Class scores at the input's resolution from the five encoder stages and the image.

    Args:
        stage_channels: channels of the stages (F, 2F, 4F, 8F, 16F).
        in_channels: image channels.
        out_channels: classes, background included.
        width: channels of the fused stride-2 map.
        stem: channels of the full-resolution stem.
    """

    def __init__(self, stage_channels: Sequence[int], in_channels: int, out_channels: int, *, width: int = 32,
                 stem: int = 16) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv3d(c, width, 1) for c in stage_channels)
        self.fuse = _block(width, width, 3)
        self.lift = nn.Conv3d(width, stem, 1)
        self.stem = nn.Conv3d(in_channels, stem, 3, padding=1)
        self.norm = nn.InstanceNorm3d(stem, affine=True)
        self.classifier = nn.Conv3d(stem, out_channels, 1)

    def forward(self, image: torch.Tensor, stages: Sequence[torch.Tensor]) -> torch.Tensor:
        size = stages[0].shape[2:]
        fused = sum(F.interpolate(lat(s), size=size, mode="trilinear", align_corners=False) if s.shape[2:] != size
                    else lat(s) for lat, s in zip(self.lateral, stages))
        fused = self.fuse(fused)
        full = F.interpolate(self.lift(fused), size=image.shape[2:], mode="trilinear", align_corners=False)
        return self.classifier(F.leaky_relu(self.norm(full + self.stem(image)), 0.01))


class LightSegmenter(nn.Module):
    """The Swin encoder (``swinViT``, as in SwinUNETR) with a `MultiScaleHead`; ``forward(x)`` gives logits."""

    normalize = True  # stages are layer-normalised, as SwinUNETR reads them (``network.normalize``)

    def __init__(self, encoder_config, out_channels: int, *, width: int = 32, stem: int = 16) -> None:
        super().__init__()
        from S2DCCore.models.encoders import SwinEncoder

        self.swinViT = SwinEncoder(encoder_config).swinViT
        self.head = MultiScaleHead(encoder_config.stage_channels(), encoder_config.in_channels, out_channels,
                                   width=width, stem=stem)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(side % 32 for side in x.shape[2:]):
            raise ValueError(f"input sides must be multiples of 32, got {tuple(x.shape[2:])}")
        return self.head(x, list(self.swinViT(x, normalize=True)))
