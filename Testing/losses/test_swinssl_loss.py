"""The SwinUNETR SSL objective against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from S2DCCore.errors import UsageError
from S2DCCore.losses.swinssl import SwinSSLLoss, SwinSSLLossConfig


def _nt_xent_by_hand(a: torch.Tensor, b: torch.Tensor, tau: float) -> float:
    """The official ``Contrast``: −log(e^{s_ii'/τ} / Σ_{j≠i} e^{s_ij/τ}) averaged over the 2N views."""
    z = torch.nn.functional.normalize(torch.cat([a, b]), dim=1)
    sim = (z @ z.T).tolist()
    n = a.shape[0]
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        denominator = sum(math.exp(sim[i][j] / tau) for j in range(2 * n) if j != i)
        total += -math.log(math.exp(sim[i][positive] / tau) / denominator)
    return total / (2 * n)


def test_terms_by_hand():
    torch.manual_seed(0)
    a, b = torch.randn(3, 5), torch.randn(3, 5)
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    recon, target = torch.zeros(2, 1, 2, 2, 2), torch.full((2, 1, 2, 2, 2), 0.25)
    terms = SwinSSLLoss()(rotation_logits=logits, rotation_labels=torch.tensor([0, 3]), contrast_1=a, contrast_2=b,
                          reconstruction=recon, target=target)
    rot = (-math.log(math.exp(2) / (math.exp(2) + 3)) + math.log(4)) / 2
    assert terms.parts["rot"].item() == pytest.approx(rot, rel=1e-5)
    assert terms.parts["contrast"].item() == pytest.approx(_nt_xent_by_hand(a, b, 0.5), rel=1e-5)
    assert terms.parts["rec"].item() == pytest.approx(0.25)
    assert terms.total.item() == pytest.approx(sum(v.item() for v in terms.parts.values()), rel=1e-6)


def test_identical_views_lower_the_contrastive_term_and_zero_weights_skip():
    torch.manual_seed(1)
    a = torch.randn(4, 8)
    loss = SwinSSLLoss(SwinSSLLossConfig(weight_rot=0.0, weight_rec=0.0))
    same = loss(contrast_1=a, contrast_2=a)
    other = loss(contrast_1=a, contrast_2=torch.randn(4, 8))
    assert sorted(same.parts) == ["contrast"] and same.parts["contrast"] < other.parts["contrast"]
    with pytest.raises(UsageError):
        SwinSSLLossConfig(weight_rot=0, weight_contrast=0, weight_rec=0)
