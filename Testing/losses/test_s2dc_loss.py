"""S²DC losses: hand-computed cases, the official per-slice loops, properties and guards."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from S2DCCore.errors import UsageError
from S2DCCore.losses.ot import log_optimal_transport
from S2DCCore.losses.s2dc import (
    S2DCLoss,
    S2DCLossConfig,
    global_contrastive_loss,
    patch_to_patch_loss,
    patch_to_structure_loss,
    select_global_pairs,
)
from S2DCCore.losses.terms import LossTerms

F64 = torch.float64


def _tokens(b: int, n: int, d: int, seed: int = 0, noise: float = 0.5):
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(b, n, d, generator=g, dtype=F64), dim=-1)
    k = F.normalize(q + noise * torch.randn(b, n, d, generator=g, dtype=F64), dim=-1)
    matches = torch.rand(b, n, n, generator=g) < 0.15
    return q, k, matches


# Official computations, one slice at a time (methods.md §1.4; the official loops over slices).
def _official_p2p(q, k, matches):
    losses = []
    for i in range(q.shape[0]):
        plan = log_optimal_transport((q[i] @ k[i].T)[None], 1.0, 100, method="log").exp()[0, :-1, :-1]
        plan = plan.clamp(1e-6, 1 - 1e-6)
        pos, neg = matches[i], ~matches[i]
        loss_pos = -plan[pos].log().mean() if pos.any() else plan.new_zeros(())
        loss_neg = -(1 - plan[neg]).log().mean() if neg.any() else plan.new_zeros(())
        losses.append(loss_pos + loss_neg)
    return torch.stack(losses).mean()


def _official_p2s(q, k, matches):
    losses = []
    for i in range(q.shape[0]):
        sim = (1 + q[i] @ k[i].T) / 2
        w1 = F.softmax((sim.max(0)[0] - sim.mean(0)) / sim.std(0), dim=0)
        w2 = F.softmax((sim.max(1)[0] - sim.mean(1)) / sim.std(1), dim=0)
        sim = sim.clamp(1e-6, 1 - 1e-6)
        nll = -sim.log()
        pos = matches[i]
        losses.append(((nll * w1[None])[pos].sum() + (nll * w2[:, None])[pos].sum()) / 2
                      - (1 - sim[~pos]).log().mean())
    return torch.stack(losses).mean()


def _plan_by_hand(cos: list[list[float]], alpha: float, rounds: int) -> list[list[float]]:
    m, n = len(cos), len(cos[0])
    z = [row + [alpha] for row in cos] + [[alpha] * (n + 1)]
    mu, nu = [1 / (m + n)] * m + [n / (m + n)], [1 / (m + n)] * n + [m / (m + n)]
    u, v = [0.0] * (m + 1), [0.0] * (n + 1)
    for _ in range(rounds):
        u = [math.log(mu[i]) - math.log(sum(math.exp(z[i][j] + v[j]) for j in range(n + 1))) for i in range(m + 1)]
        v = [math.log(nu[j]) - math.log(sum(math.exp(z[i][j] + u[i]) for i in range(m + 1))) for j in range(n + 1)]
    return [[math.exp(z[i][j] + u[i] + v[j]) * (m + n) for j in range(n)] for i in range(m)]


def test_patch_to_patch_loss__hand_computed_constant_kernel():
    # All cosines 1 and dustbin 1: a constant kernel, so P = (m+n) μ νᵀ = 1/4 for every token pair.
    q = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]], dtype=F64)
    loss = patch_to_patch_loss(q, q, torch.eye(2, dtype=torch.bool))
    assert loss.item() == pytest.approx(math.log(4) + math.log(4 / 3), abs=1e-12)


def test_patch_to_patch_loss__hand_computed_one_round():
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=F64)
    k = torch.tensor([[[0.8, 0.6], [0.0, 1.0]]], dtype=F64)
    plan = _plan_by_hand([[0.8, 0.0], [0.6, 1.0]], 1.0, 1)
    loss_pos = -(math.log(plan[0][0]) + math.log(plan[1][1])) / 2
    loss_neg = -(math.log(1 - plan[0][1]) + math.log(1 - plan[1][0])) / 2
    expected = loss_pos + loss_neg
    loss = patch_to_patch_loss(q, k, torch.eye(2, dtype=torch.bool), iters=1)
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_patch_to_structure_loss__hand_computed_identical_orthonormal():
    # S = [[1, .5], [.5, 1]]: every row/column has the same sharpness, so w1 = w2 = (1/2, 1/2);
    # positives give -log(1 - 1e-6) (clamped 1), negatives -log(1 - 0.5).
    q = torch.eye(2, dtype=F64)[None]
    loss = patch_to_structure_loss(q, q, torch.eye(2, dtype=torch.bool))
    assert loss.item() == pytest.approx(math.log(2) - math.log1p(-1e-6), abs=1e-12)


def test_patch_to_structure_loss__hand_computed_three_by_two():
    q = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]], dtype=F64)
    k = torch.tensor([[[0.8, 0.6], [0.0, 1.0]]], dtype=F64)
    matches = torch.tensor([[True, False], [False, True], [False, False]])
    # S = (1 + cos)/2 = [[.9, .5], [.8, 1.], [.98, .9]].
    z_col0 = (0.98 - 0.8933333333333333) / math.sqrt((0.0066666667**2 + 0.0933333333**2 + 0.0866666667**2) / 2)
    z_col1 = (1.0 - 0.8) / math.sqrt((0.3**2 + 0.2**2 + 0.1**2) / 2)
    total = math.exp(z_col0) + math.exp(z_col1)
    w1 = [math.exp(z_col0) / total, math.exp(z_col1) / total]
    w2 = 1 / 3  # two columns: (max - mean) / std is 1/√2 for every row
    nll_00, nll_11 = -math.log(0.9), -math.log1p(-1e-6)  # S[1,1] = 1 is clamped
    loss1 = nll_00 * w1[0] + nll_11 * w1[1]
    loss2 = (nll_00 + nll_11) * w2
    loss3 = -(math.log(0.5) + math.log(0.2) + math.log(0.02) + math.log(0.1)) / 4
    loss = patch_to_structure_loss(q, k, matches)
    assert loss.item() == pytest.approx((loss1 + loss2) / 2 + loss3, abs=1e-8)


def test_patch_to_structure_loss__single_opposite_tokens_hit_the_lower_clamp():
    # One token per side (weights 1), cos = -1 so S = 0 is clamped to 1e-6; no negatives → 0.
    q = torch.tensor([[[1.0, 0.0]]], dtype=F64)
    loss = patch_to_structure_loss(q, -q, torch.ones(1, 1, dtype=torch.bool))
    assert loss.item() == pytest.approx(-math.log(1e-6), abs=1e-9)


def test_global_contrastive_loss__hand_computed():
    query = torch.tensor([[1.0, 0.0]], dtype=F64)
    positive = torch.tensor([[0.6, 0.8]], dtype=F64)
    negatives = torch.tensor([[0.0, 1.0]], dtype=F64)  # logits (0.6, 0) / 0.9
    loss = global_contrastive_loss(query, positive, negatives, temperature=0.9)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-0.6 / 0.9)), abs=1e-12)


def test_losses__equal_official_per_slice_loops():
    q, k, matches = _tokens(3, 12, 8)
    matches[1] = False  # a slice without positives: the official guard gives it a 0 positive term
    torch.testing.assert_close(patch_to_patch_loss(q, k, matches), _official_p2p(q, k, matches))
    matches[1, 0, 0] = True
    torch.testing.assert_close(patch_to_structure_loss(q, k, matches), _official_p2s(q, k, matches))


def test_global_contrastive_loss__equals_official_layout():
    g = torch.Generator().manual_seed(1)
    query, positive, negatives = (torch.randn(n, 6, generator=g, dtype=F64) for n in (4, 4, 9))
    all_k = torch.cat([positive, negatives])  # official: positives first, logits use sim[:, N:]
    sim = query @ all_k.T
    logits = torch.cat([sim[:, :4].diagonal()[:, None], sim[:, 4:]], dim=1) / 0.9
    expected = F.cross_entropy(logits, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(global_contrastive_loss(query, positive, negatives), expected)
    normalized = global_contrastive_loss(query, positive, negatives, normalize=True)
    torch.testing.assert_close(normalized, global_contrastive_loss(
        *(F.normalize(x, dim=-1) for x in (query, positive, negatives))))


def test_token_losses__perfect_matching_beats_random_tokens():
    eye = torch.eye(8, dtype=F64).expand(2, 8, 8)
    matches = torch.eye(8, dtype=torch.bool)
    random_q, random_k, _ = _tokens(2, 8, 8, noise=3.0)
    for loss_fn in (patch_to_patch_loss, patch_to_structure_loss):
        assert loss_fn(eye, eye, matches) < loss_fn(random_q, random_k, matches)


def test_token_losses__shared_matches_equal_repeated_matches():
    q, k, matches = _tokens(3, 10, 8)
    shared = matches[0]
    for loss_fn in (patch_to_patch_loss, patch_to_structure_loss):
        torch.testing.assert_close(loss_fn(q, k, shared), loss_fn(q, k, shared.expand(3, 10, 10).clone()))
        torch.testing.assert_close(loss_fn(q, k, shared), loss_fn(q, k, shared.long()))


def test_token_losses__no_positives_or_no_negatives_stay_finite():
    q, k, _ = _tokens(2, 6, 4)
    none = torch.zeros(6, 6, dtype=torch.bool)
    for loss_fn in (patch_to_patch_loss, patch_to_structure_loss):
        for matches in (none, ~none):
            assert torch.isfinite(loss_fn(q, k, matches))
    # Without positives, L_p2s is its negative term alone.
    sim = ((1 + q @ k.transpose(1, 2)) / 2).clamp(1e-6, 1 - 1e-6)
    torch.testing.assert_close(patch_to_structure_loss(q, k, none), -(1 - sim).log().mean())


def test_patch_to_structure_loss__constant_similarities_have_finite_gradients():
    q, _, matches = _tokens(2, 5, 4)
    k = F.normalize(torch.ones(2, 5, 4, dtype=F64), dim=-1)  # identical k tokens: every row of S is constant
    q.requires_grad_(True)
    loss = patch_to_structure_loss(q, k, matches | torch.eye(5, dtype=torch.bool))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(q.grad).all()


def test_select_global_pairs__excludes_the_selected_crops_of_every_volume():
    b, c, d = 3, 4, 2
    ids = torch.arange(b * c, dtype=torch.float32).reshape(b, c, 1).expand(b, c, d)  # feature = 4·volume + crop
    query, positive, negatives, chosen = select_global_pairs(ids + 100, ids, torch.Generator().manual_seed(0))
    assert len(set(chosen.tolist())) == b  # drawn without replacement, as official
    assert query[:, 0].tolist() == [100 + 4 * i + j for i, j in enumerate(chosen.tolist())]
    assert positive[:, 0].tolist() == [4 * i + j for i, j in enumerate(chosen.tolist())]
    expected = [4 * i + j for i in range(b) for j in range(c) if j != chosen[i]]
    assert negatives.shape == (b * (c - 1), d) and negatives[:, 0].tolist() == expected


def test_select_global_pairs__more_volumes_than_crops_and_reproducible():
    q, k = torch.randn(5, 2, 3), torch.randn(5, 2, 3)
    first = select_global_pairs(q, k, torch.Generator().manual_seed(3))
    again = select_global_pairs(q, k, torch.Generator().manual_seed(3))
    assert first[2].shape == (5, 3) and all(torch.equal(a, b) for a, b in zip(first, again))


def test_s2dc_loss__total_is_weighted_sum_of_detached_parts():
    q, k, matches = _tokens(2, 6, 8)
    qg = torch.randn(2, 8, dtype=F64, requires_grad=True)
    pg, ng = torch.randn(2, 8, dtype=F64), torch.randn(5, 8, dtype=F64)
    q.requires_grad_(True)
    config = S2DCLossConfig(weight_p2p=0.5, weight_p2s=0.25, weight_global=2.0)
    terms = S2DCLoss(config)(q_tokens=q, k_tokens=k, matches=matches, g_query=qg, g_positive=pg, g_negatives=ng)
    assert isinstance(terms, LossTerms) and set(terms.parts) == {"p2p", "p2s", "global"}
    assert not any(p.requires_grad for p in terms.parts.values())
    torch.testing.assert_close(terms.parts["p2p"], patch_to_patch_loss(q, k, matches).detach())
    parts = terms.parts
    torch.testing.assert_close(terms.total, 0.5 * parts["p2p"] + 0.25 * parts["p2s"] + 2.0 * parts["global"])
    terms.total.backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(qg.grad).all() and q.grad.abs().sum() > 0
    floats = terms.floats()
    assert set(floats) == {"total", "p2p", "p2s", "global"}
    assert floats["total"] == pytest.approx(terms.total.item(), rel=1e-6)


def test_s2dc_loss__zero_weight_skips_term_and_its_inputs():
    q, k, matches = _tokens(2, 6, 8)
    terms = S2DCLoss(S2DCLossConfig(weight_global=0.0))(q_tokens=q, k_tokens=k, matches=matches)
    assert set(terms.parts) == {"p2p", "p2s"}
    only_global = S2DCLossConfig(weight_p2p=0.0, weight_p2s=0.0)
    global_inputs = {"g_query": torch.randn(2, 4), "g_positive": torch.randn(2, 4), "g_negatives": torch.randn(3, 4)}
    terms = S2DCLoss(only_global)(**global_inputs)
    assert set(terms.parts) == {"global"}
    with pytest.raises(ValueError, match="p2p/p2s"):
        S2DCLoss()(**global_inputs)


def test_s2dc_loss_config__rejects_bad_values():
    for bad in ({"weight_p2p": -1.0}, {"weight_p2p": 0.0, "weight_p2s": 0.0, "weight_global": 0.0},
                {"sinkhorn_iters": 0}, {"temperature": 0.0}, {"queue_size": -1}):
        with pytest.raises(UsageError):
            replace(S2DCLossConfig(), **bad)


def test_losses__under_bf16_autocast_are_computed_in_float32():
    q, k, matches = (x.float() if x.is_floating_point() else x for x in _tokens(2, 8, 8))
    reference = (patch_to_patch_loss(q, k, matches), patch_to_structure_loss(q, k, matches))
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        inside = (patch_to_patch_loss(q, k, matches), patch_to_structure_loss(q, k, matches))
    for a, b in zip(inside, reference):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_losses__reject_mismatched_shapes():
    q, k, matches = _tokens(2, 6, 8)
    with pytest.raises(ValueError, match="matches"):
        patch_to_patch_loss(q, k, matches[:, :5])
    with pytest.raises(ValueError, match="q and k"):
        patch_to_structure_loss(q, k[:1], matches)
    with pytest.raises(ValueError, match="query"):
        global_contrastive_loss(torch.randn(2, 4), torch.randn(3, 4), torch.randn(5, 4))
