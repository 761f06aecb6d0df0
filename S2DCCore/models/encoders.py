"""Encoders built by name, each with one ``forward_features`` interface.

The family is MONAI's SwinUNETR (v2) encoder, ``monai.networks.nets.swin_unetr.SwinTransformer``, the
backbone of the official S²DC code. The module is stored under the attribute ``swinViT`` so that its
state-dict keys (``swinViT.*``) are exactly those of a SwinUNETR's encoder: fine-tuning loads an encoder
into a SwinUNETR through an explicit, checked identity mapping (`S2DCCore.models.segmenter`).

Every Swin network here asks MONAI (≥ 1.6) for its fused window attention (`swin_kwargs`): under
``torch.no_grad`` the windows go through ``scaled_dot_product_attention`` (same parameters, outputs within
1e-5; MONAI uses it for inference only). On two CPU cores the tiny encoder's no-grad forward runs 2–4×
faster, which is the EMA teachers' three passes per S²DC step, and every embed, probe and segment pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# Feature size of each preset: tiny is for CPUs, tests and the demo; base is the paper's (48).
PRESET_FEATURE_SIZE = {"tiny": 12, "small": 24, "base": 48}


@dataclass(frozen=True)
class EncoderConfig:
    """Architecture of the encoder (written into every model card, so it can be rebuilt).

    Attributes:
        name: registry name; ``swin`` is MONAI's SwinUNETR-v2 encoder.
        feature_size: channels of the first stage (stages have 1, 2, 4, 8, 16 × this).
        in_channels: image channels.
        depths / num_heads / window_size / patch_size: Swin hyper-parameters (official values).
        drop_path_rate: stochastic depth (official pretraining: 0).
        use_checkpoint: gradient checkpointing inside the Swin blocks (saves memory, costs time).
    """

    name: str = "swin"
    feature_size: int = 12
    in_channels: int = 1
    depths: tuple[int, int, int, int] = (2, 2, 2, 2)
    num_heads: tuple[int, int, int, int] = (3, 6, 12, 24)
    window_size: int = 7
    patch_size: int = 2
    drop_path_rate: float = 0.0
    use_checkpoint: bool = False

    def stage_channels(self) -> tuple[int, ...]:
        """Channels of the five feature stages returned by ``forward_features``."""
        return tuple(self.feature_size * 2**i for i in range(5))


def preset_encoder_config(preset: str, **overrides) -> EncoderConfig:
    """The encoder of a named preset (``tiny``, ``small``, ``base``)."""
    if preset not in PRESET_FEATURE_SIZE:
        raise ValueError(f"unknown encoder preset {preset!r}; choose from {sorted(PRESET_FEATURE_SIZE)}")
    return EncoderConfig(feature_size=PRESET_FEATURE_SIZE[preset], **overrides)


def swin_kwargs(cls) -> dict:
    """``use_flash_attention=True`` where MONAI's ``cls`` (``SwinTransformer``, ``SwinUNETR``) accepts it
    (MONAI ≥ 1.6), else nothing: older MONAI builds the same network with its plain attention."""
    import inspect

    return {"use_flash_attention": True} if "use_flash_attention" in inspect.signature(cls).parameters else {}


class SwinEncoder(nn.Module):
    """SwinUNETR-v2 encoder returning its five normalised feature stages.

    For an input of side ``S`` the stages have sides ``S/2, S/4, S/8, S/16, S/32`` and channels
    ``F, 2F, 4F, 8F, 16F`` (F = feature_size). Inputs must have sides divisible by 32.

    Examples:
        >>> enc = SwinEncoder(EncoderConfig(feature_size=12))
        >>> [f.shape[1] for f in enc.forward_features(torch.zeros(1, 1, 32, 32, 32))]
        [12, 24, 48, 96, 192]
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        from monai.networks.nets.swin_unetr import SwinTransformer

        self.config = config
        self.swinViT = SwinTransformer(
            in_chans=config.in_channels,
            embed_dim=config.feature_size,
            window_size=(config.window_size,) * 3,
            patch_size=(config.patch_size,) * 3,
            depths=config.depths,
            num_heads=config.num_heads,
            mlp_ratio=4.0,
            qkv_bias=True,
            drop_rate=0.0,
            attn_drop_rate=0.0,
            drop_path_rate=config.drop_path_rate,
            use_checkpoint=config.use_checkpoint,
            spatial_dims=3,
            use_v2=True,
            **swin_kwargs(SwinTransformer),
        )

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, X, Y, Z) → five stages [(B, F·2^s, X/2^(s+1), ...)] (layer-normalised, as SwinUNETR uses them)."""
        if any(side % 32 for side in x.shape[2:]):
            raise ValueError(f"encoder input sides must be multiples of 32, got {tuple(x.shape[2:])}")
        return list(self.swinViT(x, normalize=True))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_features(x)


ENCODERS = {"swin": SwinEncoder}


def build_encoder(config: EncoderConfig) -> nn.Module:
    """Build the encoder named by ``config.name``."""
    try:
        return ENCODERS[config.name](config)
    except KeyError:
        raise ValueError(f"unknown encoder {config.name!r}; choose from {sorted(ENCODERS)}") from None
