"""Alice's iBOT-style projection head (methods.md §2.1, ``AliceHead``), without losses.

Inputs: the class token (pooled last encoder stage, ``C_q``), the last-stage tokens (``C_q``) and the
tokens of one decoder stage (``C_kv``). Encoder tokens pass a ``Linear(C_q, C_q)`` and decoder tokens a
``Linear(C_kv, C_q)`` (the official ``mlp3`` / ``mlp4``; the class token passes neither), then one
shared MLP ``Linear → GELU → Linear → GELU → Linear(bottleneck)``, L2 normalisation and a weight-normalised
last layer: one for the class token (``out_dim``) and one shared by both token sets (``patch_out_dim``).

The official head wraps ``nn.utils.weight_norm`` with the gain fixed at 1 (``norm_last_layer``); here
`NormedLinear` computes the same ``W = v / ‖v‖`` per output row directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NormedLinear(nn.Module):
    """Bias-free linear layer with weight normalisation per output row: ``W = g · v / ‖v‖``.

    Args:
        in_dim / out_dim: sizes.
        fixed_norm: keep ``g = 1`` (the DINO/iBOT ``norm_last_layer=True``); otherwise ``g`` is learned.
    """

    def __init__(self, in_dim: int, out_dim: int, fixed_norm: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(nn.Linear(in_dim, out_dim, bias=False).weight.detach().clone())
        self.gain = None if fixed_norm else nn.Parameter(torch.ones(out_dim, 1))

    def forward(self, x: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """x (..., in_dim) → (..., out_dim) float32; ``frozen`` stops the weights' gradient (iBOT's frozen last layer).

        Always computed in fp32, outside autocast: the logits are divided by a teacher temperature of
        ~0.01, which turns bf16's 8-bit mantissa into a visible shift of the teacher softmax.
        """
        from S2DCCore.losses.ot import no_autocast

        with no_autocast(x.device):
            v = self.weight.detach() if frozen else self.weight
            w = F.normalize(v.float(), dim=1)
            if self.gain is not None:
                w = w * (self.gain.detach() if frozen else self.gain).float()
            return F.linear(x.float(), w)


class AliceHead(nn.Module):
    """Projection of the class token, encoder tokens and decoder tokens to logits.

    Args:
        query_dim: channels of the last encoder stage (class token and query tokens).
        decoder_dim: channels of the key/value decoder stage.
        hidden_dim / bottleneck_dim: MLP sizes (official 2048 / 256).
        out_dim / patch_out_dim: logit sizes of the class token and of the tokens (official 512 / 512).
        fixed_norm: the last layers keep unit gain (official ``norm_last_layer=True``).

    Examples:
        >>> head = AliceHead(query_dim=24, decoder_dim=12, hidden_dim=32, bottleneck_dim=8, out_dim=16,
        ...                  patch_out_dim=10)
        >>> cls, enc, dec = head(torch.randn(2, 24), torch.randn(2, 4, 24), torch.randn(2, 32, 12))
        >>> cls.shape, enc.shape, dec.shape
        (torch.Size([2, 16]), torch.Size([2, 4, 10]), torch.Size([2, 32, 10]))
    """

    def __init__(self, query_dim: int, decoder_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 out_dim: int = 512, patch_out_dim: int = 512, fixed_norm: bool = True) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(query_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim),
                                 nn.GELU(), nn.Linear(hidden_dim, bottleneck_dim))
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        self.encoder_proj = nn.Linear(query_dim, query_dim)
        self.decoder_proj = nn.Linear(decoder_dim, query_dim)
        self.cls_layer = NormedLinear(bottleneck_dim, out_dim, fixed_norm)
        self.patch_layer = NormedLinear(bottleneck_dim, patch_out_dim, fixed_norm)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x).float(), dim=-1)  # fp32 into the fp32 last layer

    def forward(self, cls: torch.Tensor | None, encoder_tokens: torch.Tensor | None,
                decoder_tokens: torch.Tensor | None, frozen_last_layer: bool = False):
        """Any input may be None (its output is then None).

        Args:
            cls: (B, query_dim). encoder_tokens: (B, Lq, query_dim). decoder_tokens: (B, Lkv, decoder_dim).
            frozen_last_layer: no gradient to the last layers (the first steps of training).

        Returns:
            (B, out_dim), (B, Lq, patch_out_dim), (B, Lkv, patch_out_dim).
        """
        cls_out = enc_out = dec_out = None
        if cls is not None:
            cls_out = self.cls_layer(self._embed(cls), frozen_last_layer)
        if encoder_tokens is not None:
            enc_out = self.patch_layer(self._embed(self.encoder_proj(encoder_tokens)), frozen_last_layer)
        if decoder_tokens is not None:
            dec_out = self.patch_layer(self._embed(self.decoder_proj(decoder_tokens)), frozen_last_layer)
        return cls_out, enc_out, dec_out
