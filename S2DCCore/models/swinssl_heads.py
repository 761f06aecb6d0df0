"""Heads of the SwinUNETR self-supervised pretraining (Tang et al., CVPR 2022), on the last encoder stage.

As the official ``SSLHead`` (MONAI research-contributions, ``SwinUNETR/Pretrain/models/ssl_head.py``):
a rotation classifier ``Linear(16F, 4)``, a contrastive projection ``Linear(16F, 512)`` and the
"vae" up-sampling decoder (five times conv 3³ → instance norm → LeakyReLU → ×2 trilinear up-sampling,
halving the channels down to 16F/16, then a 1³ conv to the image channels) that reconstructs the crop
from the last stage. Officially the rotation head reads the first token of the flattened last stage
and the contrastive head the second (``token="official"``); ``token="pooled"`` feeds both the mean token.
"""

from __future__ import annotations

import torch
from torch import nn


class ReconstructionDecoder(nn.Module):
    """Last stage (B, dim, S/32…) → image (B, out_channels, S…): five conv/norm/up-sampling blocks and a 1³ conv.

    Args:
        dim: channels of the last stage (16F).
        out_channels: image channels.

    Examples:
        >>> ReconstructionDecoder(64)(torch.randn(1, 64, 2, 2, 1)).shape
        torch.Size([1, 1, 64, 64, 32])
    """

    def __init__(self, dim: int, out_channels: int = 1) -> None:
        super().__init__()
        widths = [dim, dim // 2, dim // 4, dim // 8, dim // 16, dim // 16]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv3d(c_in, c_out, kernel_size=3, padding=1), nn.InstanceNorm3d(c_out), nn.LeakyReLU(),
                       nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)]
        layers.append(nn.Conv3d(widths[-1], out_channels, kernel_size=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class SwinSSLHeads(nn.Module):
    """Rotation, contrastive and reconstruction heads.

    Args:
        dim: channels of the last encoder stage (16F).
        contrast_dim: contrastive projection size (official 512).
        out_channels: image channels to reconstruct.
        token: ``official`` (tokens 0 and 1 of the flattened stage) or ``pooled`` (their mean).

    Examples:
        >>> heads = SwinSSLHeads(64, contrast_dim=16)
        >>> rot, con, rec = heads(torch.randn(2, 64, 2, 2, 1))
        >>> rot.shape, con.shape, rec.shape
        (torch.Size([2, 4]), torch.Size([2, 16]), torch.Size([2, 1, 64, 64, 32]))
    """

    def __init__(self, dim: int, contrast_dim: int = 512, out_channels: int = 1, token: str = "official") -> None:
        super().__init__()
        if token not in ("official", "pooled"):
            raise ValueError(f"token must be 'official' or 'pooled', not {token!r}")
        self.token = token
        self.rotation = nn.Linear(dim, 4)
        self.contrastive = nn.Linear(dim, contrast_dim)
        self.decoder = ReconstructionDecoder(dim, out_channels)

    def forward(self, last: torch.Tensor, *, rotation: bool = True, contrastive: bool = True,
                reconstruct: bool = True):
        """last (B, dim, x, y, z) → (rotation (B, 4), contrastive (B, contrast_dim), image); None where skipped."""
        tokens = last.flatten(2).transpose(1, 2)  # (B, x·y·z, dim)
        if self.token == "official" and tokens.shape[1] < 2:
            raise ValueError("the official heads read two tokens of the last stage; use a larger crop or "
                             "token='pooled'")
        pooled = tokens.mean(dim=1) if self.token == "pooled" else None
        rot = self.rotation(tokens[:, 0] if pooled is None else pooled) if rotation else None
        con = self.contrastive(tokens[:, 1] if pooled is None else pooled) if contrastive else None
        rec = self.decoder(last) if reconstruct else None
        return rot, con, rec
