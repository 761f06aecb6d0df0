"""Alice's backbone on the SwinUNETR family: encoder + decoder + head (methods.md §0, §2.1).

nnFormer (official) → SwinUNETR (here):

* class token: average of the last encoder stage (official: the 4³ neck, 8F channels) → of encoder
  stage ``query_stage`` (default 4, the last: 16F channels at stride 32);
* query tokens: the same stage's tokens;
* key/value tokens: the first decoder stage above the neck (official 8³, 4F) → decoder level ``kv_level``
  (default 3: SwinUNETR's first up-sampling block, 8F channels at stride 16);
* reconstruction: the decoder's output head (official ``ConvTranspose3d`` head) → SwinUNETR's ``out``
  convolution with one channel.

The network is MONAI's SwinUNETR of `S2DCCore.models.segmenter`, so its ``swinViT`` *is* the encoder
that fine-tuning loads (keys ``swinViT.*``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from S2DCCore.errors import UsageError
from S2DCCore.models.alice_heads import AliceHead
from S2DCCore.models.encoders import EncoderConfig
from S2DCCore.models.segmenter import SegmenterConfig, build_segmenter
from S2DCCore.models.swinunetr_stages import DECODER_CHANNEL_FACTOR, swinunetr_stages


@dataclass(frozen=True)
class AliceModelConfig:
    """The networks around the encoder.

    Attributes:
        query_stage: encoder stage of the class token and the query tokens (4 = last).
        kv_level: decoder level of the key/value tokens (3 = first up-sampling block, stride 16).
        head_hidden / head_bottleneck: head MLP sizes (official 2048 / 256).
        out_dim / patch_out_dim: class-token and patch logit sizes (official 512 / 512).
        casa_inner / casa_heads / casa_head_dim / casa_dropout: CASA (official 2048, 8, 64, 0.1).
        ema_momentum: teacher momentum at step 0, rising to 1 on a half cosine (official 0.996).
        freeze_last_layer_steps: steps without gradients to the head's last layers (official: 1 epoch).
    """

    query_stage: int = 4
    kv_level: int = 3
    head_hidden: int = 2048
    head_bottleneck: int = 256
    out_dim: int = 512
    patch_out_dim: int = 512
    casa_inner: int = 2048
    casa_heads: int = 8
    casa_head_dim: int = 64
    casa_dropout: float = 0.1
    ema_momentum: float = 0.996
    freeze_last_layer_steps: int = 100

    def __post_init__(self) -> None:
        if not 0 <= self.query_stage <= 4:
            raise UsageError(f"alice.model.query_stage must lie in 0..4, not {self.query_stage}")
        if not 0 <= self.kv_level <= 4:
            raise UsageError(f"alice.model.kv_level must lie in 0..4, not {self.kv_level}")
        if not 0.0 <= self.ema_momentum <= 1.0:
            raise UsageError(f"alice.model.ema_momentum must lie in [0, 1], not {self.ema_momentum}")


@dataclass
class AliceOutputs:
    """Head outputs of one pass (None where not asked for).

    Attributes:
        cls: (B, out_dim) class-token logits. query: (B, Lq, patch_out_dim). kv: (B, Lkv, patch_out_dim).
        reconstruction: (B, 1, X, Y, Z).
    """

    cls: torch.Tensor | None
    query: torch.Tensor | None
    kv: torch.Tensor | None
    reconstruction: torch.Tensor | None


def _tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)  # (B, C, x, y, z) → (B, x·y·z, C)


class AliceNetwork(nn.Module):
    """SwinUNETR + `AliceHead`; the student and the EMA teacher are two of these.

    Args:
        encoder: the Swin encoder (its feature size also sets the decoder's).
        model: stages and head sizes.
    """

    def __init__(self, encoder: EncoderConfig, model: AliceModelConfig) -> None:
        super().__init__()
        self.query_stage, self.kv_level = model.query_stage, model.kv_level
        self.backbone = build_segmenter(SegmenterConfig(encoder=encoder, out_channels=encoder.in_channels))
        query_dim = encoder.stage_channels()[model.query_stage]
        kv_dim = encoder.feature_size * DECODER_CHANNEL_FACTOR[model.kv_level]
        self.head = AliceHead(query_dim, kv_dim, model.head_hidden, model.head_bottleneck, model.out_dim,
                              model.patch_out_dim)

    def forward(self, x: torch.Tensor, *, cls: bool = True, query: bool = True, kv: bool = True,
                reconstruct: bool = True, frozen_last_layer: bool = False) -> AliceOutputs:
        """(B, 1, X, Y, Z) crops → `AliceOutputs`; flags skip what a step does not need."""
        stages = swinunetr_stages(self.backbone, x, decoder_level=self.kv_level if kv else None, output=reconstruct)
        last = stages.encoder[self.query_stage]
        cls_out, query_out, kv_out = self.head(
            last.mean(dim=(2, 3, 4)) if cls else None,
            _tokens(last) if query else None,
            _tokens(stages.decoder[self.kv_level]) if kv else None,
            frozen_last_layer=frozen_last_layer)
        return AliceOutputs(cls=cls_out, query=query_out, kv=kv_out, reconstruction=stages.output)

    def encoder_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's five stages (as `SwinEncoder.forward_features`)."""
        return list(self.backbone.swinViT(x, self.backbone.normalize))
