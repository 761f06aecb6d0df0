"""MONAI SwinUNETR's forward pass with its intermediate stages exposed (for Alice).

`S2DCCore.models.segmenter.build_segmenter` builds the network; this walks its blocks in the order of
``SwinUNETR.forward`` (MONAI 1.6) and returns what Alice needs: the encoder stages, the decoder
stages, and the output head. Decoder level ``s`` has the resolution of encoder stage ``s`` (stride
``2^(s+1)``): level 4 is the bottleneck block on the last stage (16F channels), level 3 the first
up-sampling block (8F, stride 16), then 4F, 2F and F channels; the full-resolution block feeds the
output convolution. The walk stops at the coarsest level asked for, so a teacher that only needs a
coarse decoder level skips the expensive fine blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

DECODER_CHANNEL_FACTOR = {4: 16, 3: 8, 2: 4, 1: 2, 0: 1}


@dataclass
class SwinUNETRStages:
    """Outputs of one pass.

    Attributes:
        encoder: the five normalised Swin stages [(B, F·2^s, S/2^(s+1), ...)].
        decoder: decoder level → (B, F·factor, S/2^(s+1), ...) for the levels computed.
        output: (B, out_channels, S, ...) or None when not asked for.
    """

    encoder: list[torch.Tensor]
    decoder: dict[int, torch.Tensor]
    output: torch.Tensor | None


def swinunetr_stages(net: nn.Module, x: torch.Tensor, *, decoder_level: int | None = None,
                     output: bool = False, hidden: list[torch.Tensor] | None = None) -> SwinUNETRStages:
    """Run ``net`` (a MONAI SwinUNETR) on ``x`` down to ``decoder_level`` (or to the output head).

    Args:
        net: MONAI ``SwinUNETR``.
        x: (B, C, X, Y, Z), sides multiples of 32.
        decoder_level: finest decoder level needed (0–4), or None for none.
        output: also compute the full-resolution output head (implies every decoder level).
        hidden: the encoder stages of ``x`` when already computed (e.g. without gradients).

    Returns:
        `SwinUNETRStages`.
    """
    if any(side % 32 for side in x.shape[2:]):
        raise ValueError(f"SwinUNETR input sides must be multiples of 32, got {tuple(x.shape[2:])}")
    hidden = list(net.swinViT(x, net.normalize)) if hidden is None else list(hidden)
    finest = 0 if output else decoder_level
    decoder: dict[int, torch.Tensor] = {}
    out = None
    if finest is not None:
        if not 0 <= finest <= 4:
            raise ValueError(f"decoder_level must lie in 0..4, not {finest}")
        # Skip connections of each up block, computed only when the walk reaches it.
        skips = {3: lambda: hidden[3], 2: lambda: net.encoder4(hidden[2]), 1: lambda: net.encoder3(hidden[1]),
                 0: lambda: net.encoder2(hidden[0])}
        blocks = {3: net.decoder5, 2: net.decoder4, 1: net.decoder3, 0: net.decoder2}
        current = net.encoder10(hidden[4])
        decoder[4] = current
        for level in range(3, finest - 1, -1):
            current = blocks[level](current, skips[level]())
            decoder[level] = current
        if output:
            out = net.out(net.decoder1(current, net.encoder1(x)))
    return SwinUNETRStages(encoder=hidden, decoder=decoder, output=out)
