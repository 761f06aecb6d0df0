"""The segmentation network (MONAI SwinUNETR-v2) and the explicit transfer of a pretrained encoder into it.

Encoders are saved with ``SwinUNETR.swinViT`` key names (``swinViT.*``, see `S2DCCore.models.encoders`),
so the mapping is the identity on those keys (bare Swin keys from elsewhere get the ``swinViT.`` prefix); `load_pretrained_encoder` checks that every encoder tensor finds
its place with the right shape and that every ``swinViT.*`` weight of the network is covered, and
fails otherwise — no silent ``strict=False``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from S2DCCore.errors import DataError
from S2DCCore.models.encoders import EncoderConfig, swin_kwargs

log = logging.getLogger(__name__)
ENCODER_PREFIX = "swinViT."


@dataclass(frozen=True)
class SegmenterConfig:
    """SwinUNETR-v2 around an encoder configuration.

    Attributes:
        encoder: the Swin encoder (its feature size sets the decoder's).
        out_channels: number of classes including background.
        norm_name: decoder normalisation (MONAI default ``instance``; SwinUNETR only).
        decoder: ``swinunetr`` (MONAI's SwinUNETR-v2 decoder, the paper's downstream network) or ``light``
            (`S2DCCore.models.light_head.LightSegmenter`: a multi-scale head on the encoder stages).
    """

    encoder: EncoderConfig = EncoderConfig()
    out_channels: int = 2
    norm_name: str = "instance"
    decoder: str = "swinunetr"

    def __post_init__(self) -> None:
        if self.decoder not in DECODERS:
            raise ValueError(f"unknown decoder {self.decoder!r}; choose from {', '.join(DECODERS)}")


DECODERS = ("swinunetr", "light")


def build_segmenter(config: SegmenterConfig) -> nn.Module:
    """MONAI's SwinUNETR with ``use_v2=True`` and the encoder's hyper-parameters, or the light head on the
    same encoder (``decoder: light``); both keep the encoder under ``swinViT``."""
    if config.decoder == "light":
        from S2DCCore.models.light_head import LightSegmenter

        return LightSegmenter(config.encoder, config.out_channels)
    from monai.networks.nets import SwinUNETR

    enc = config.encoder
    return SwinUNETR(
        in_channels=enc.in_channels, out_channels=config.out_channels, patch_size=enc.patch_size,
        depths=enc.depths, num_heads=enc.num_heads, window_size=enc.window_size, feature_size=enc.feature_size,
        norm_name=config.norm_name, dropout_path_rate=enc.drop_path_rate, use_checkpoint=enc.use_checkpoint,
        spatial_dims=3, use_v2=True, **swin_kwargs(SwinUNETR),
    )


def encoder_key_mapping(encoder_keys, network_keys) -> dict[str, str]:
    """Encoder key → network key (``swinViT.k`` → itself, bare ``k`` → ``swinViT.k``), for keys the network has."""
    network_keys = set(network_keys)
    mapping = {k: k if k.startswith(ENCODER_PREFIX) else ENCODER_PREFIX + k for k in encoder_keys}
    return {k: v for k, v in mapping.items() if v in network_keys}


def load_pretrained_encoder(network: nn.Module, encoder_state: dict[str, torch.Tensor], source: str = "encoder") -> int:
    """Copy ``encoder_state`` into ``network.swinViT``; return the number of tensors loaded.

    Raises:
        DataError: an encoder tensor has no place in the network, a shape differs, or a ``swinViT`` weight
            of the network is left without a pretrained value (architecture mismatch).
    """
    target = network.state_dict()
    mapping = encoder_key_mapping(encoder_state, target)
    unknown = sorted(set(encoder_state) - set(mapping))
    if unknown:
        raise DataError(f"{len(unknown)} encoder tensors have no place in the network (first: {unknown[0]}); "
                        "is it a Swin encoder of this project?", source)
    missing = sorted(k for k in target if k.startswith(ENCODER_PREFIX) and k not in mapping.values())
    if missing:
        raise DataError(f"{len(missing)} encoder weights of the network are not in the checkpoint "
                        f"(first: {missing[0]}); architecture mismatch", source)
    for src, dst in mapping.items():
        if encoder_state[src].shape != target[dst].shape:
            raise DataError(f"shape of {src} is {tuple(encoder_state[src].shape)}, the network expects "
                            f"{tuple(target[dst].shape)} (different feature size?)", source)
    with torch.no_grad():
        for src, dst in mapping.items():
            target[dst].copy_(encoder_state[src])
    network.load_state_dict(target, strict=True)
    log.info("loaded %d encoder tensors from %s into swinViT.* (mapping: swinViT.k → swinViT.k)", len(mapping), source)
    return len(mapping)
