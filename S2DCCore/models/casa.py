"""CASA, Alice's conditional anatomical semantic alignment: one cross-attention layer (methods.md §2.1).

Queries are the projected tokens of the last encoder stage; keys and values are projected decoder
tokens. As in the official code the *same* layer produces the student output
``S = CASA(student encoder, student decoder)`` and the teacher target ``T = CASA(student encoder,
teacher decoder)``; it is trained by the student's optimiser (no EMA copy).

Layer (post-norm transformer decoder block without self-attention): multi-head attention with
bias-free Q/K/V/output projections, scores scaled by √d_k, dropout on the attention weights and the
output, residual + LayerNorm (eps 1e-6); then a ReLU MLP with dropout, residual + LayerNorm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CASA(nn.Module):
    """Cross-attention of query tokens over key/value tokens.

    Args:
        dim: token size of both inputs and of the output (official: the 512-d head outputs).
        inner_dim: hidden size of the MLP (official 2048).
        heads: attention heads (official 8).
        head_dim: size per head of queries, keys and values (official 64).
        dropout: dropout on the attention weights, after the output projection and in the MLP (official 0.1).

    Examples:
        >>> casa = CASA(dim=32, inner_dim=64, heads=8, head_dim=4)
        >>> casa(torch.randn(2, 5, 32), torch.randn(2, 40, 32)).shape
        torch.Size([2, 5, 32])
    """

    def __init__(self, dim: int = 512, inner_dim: int = 2048, heads: int = 8, head_dim: int = 64,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.heads, self.head_dim, self.dropout = heads, head_dim, dropout
        self.to_q = nn.Linear(dim, heads * head_dim, bias=False)
        self.to_k = nn.Linear(dim, heads * head_dim, bias=False)
        self.to_v = nn.Linear(dim, heads * head_dim, bias=False)
        self.out = nn.Linear(heads * head_dim, dim, bias=False)
        self.norm_attn = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, inner_dim), nn.ReLU(), nn.Linear(inner_dim, dim))
        self.norm_mlp = nn.LayerNorm(dim, eps=1e-6)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.heads, self.head_dim).transpose(1, 2)  # (B, heads, N, head_dim)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """query (B, Lq, dim), context (B, Lkv, dim) → (B, Lq, dim)."""
        p = self.dropout if self.training else 0.0
        q, k, v = self._split(self.to_q(query)), self._split(self.to_k(context)), self._split(self.to_v(context))
        attended = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # softmax(q kᵀ / √head_dim) v
        attended = attended.transpose(1, 2).reshape(query.shape[0], query.shape[1], -1)  # (B, Lq, heads·head_dim)
        x = self.norm_attn(query + F.dropout(self.out(attended), p, self.training))
        return self.norm_mlp(x + F.dropout(self.mlp(x), p, self.training))
