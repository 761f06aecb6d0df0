"""log_optimal_transport: against POT, hand-computed rounds, its own log-domain path, and its gradients."""

from __future__ import annotations

import math
import warnings

import numpy as np
import ot
import pytest
import torch

from S2DCCore.losses import ot as s2dc_ot
from S2DCCore.losses.ot import log_optimal_transport


def _cosine_scores(b: int, m: int, n: int, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(b, m, 16, generator=g, dtype=dtype), dim=-1)
    y = torch.nn.functional.normalize(torch.randn(b, n, 16, generator=g, dtype=dtype), dim=-1)
    return x @ y.transpose(1, 2)


def _by_hand(scores: list[list[float]], alpha: float, rounds: int) -> list[list[float]]:
    """Plan · (m+n) of the official iteration, with Python floats: rows first, then columns."""
    m, n = len(scores), len(scores[0])
    z = [row + [alpha] for row in scores] + [[alpha] * (n + 1)]
    mu = [1 / (m + n)] * m + [n / (m + n)]
    nu = [1 / (m + n)] * n + [m / (m + n)]
    u, v = [0.0] * (m + 1), [0.0] * (n + 1)
    for _ in range(rounds):
        u = [math.log(mu[i]) - math.log(sum(math.exp(z[i][j] + v[j]) for j in range(n + 1))) for i in range(m + 1)]
        v = [math.log(nu[j]) - math.log(sum(math.exp(z[i][j] + u[i]) for i in range(m + 1))) for j in range(n + 1)]
    return [[math.exp(z[i][j] + u[i] + v[j]) * (m + n) for j in range(n + 1)] for i in range(m + 1)]


@pytest.mark.parametrize("shape", [(1, 3, 2), (2, 5, 7), (3, 8, 8)])
@pytest.mark.parametrize("bin_score", [1.0, 0.3])
def test_log_optimal_transport__matches_pot_sinkhorn_log(shape, bin_score):
    b, m, n = shape
    scores = _cosine_scores(b, m, n)
    ours = log_optimal_transport(scores, bin_score, iters=100).exp().numpy()
    a = np.array([1 / (m + n)] * m + [n / (m + n)])
    c = np.array([1 / (m + n)] * n + [m / (m + n)])
    for i in range(b):
        z = np.pad(scores[i].numpy(), ((0, 1), (0, 1)), constant_values=bin_score)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # stopThr=0: POT warns that it did not "converge"
            plan = ot.sinkhorn(a, c, -z, reg=1.0, method="sinkhorn_log", numItermax=100, stopThr=0)
        np.testing.assert_allclose(ours[i], plan * (m + n), atol=1e-5, rtol=0)


def test_log_optimal_transport__constant_kernel_gives_independent_coupling():
    # Worked by hand: with a constant kernel one round already gives P = μ νᵀ. For m=3, n=2:
    # μ = (1,1,1,2)/5, ν = (1,1,3)/5, so P·5 is 0.2 inside, 0.6 in the column dustbin, 0.4 in the
    # row dustbin and 1.2 in the corner.
    expected = torch.tensor([[0.2, 0.2, 0.6]] * 3 + [[0.4, 0.4, 1.2]], dtype=torch.float64)
    for method in ("scaling", "log"):
        for rounds in (1, 2, 10):
            plan = log_optimal_transport(torch.zeros(1, 3, 2, dtype=torch.float64), 0.0, rounds, method=method).exp()
            torch.testing.assert_close(plan[0], expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("method", ["scaling", "log"])
@pytest.mark.parametrize(("scores", "alpha", "rounds"), [
    ([[0.9, -0.2], [0.1, 0.5]], 1.0, 1),
    ([[0.9, -0.2], [0.1, 0.5]], 1.0, 2),
    ([[0.3, -0.7], [0.8, 0.2], [-0.4, 0.6]], 0.5, 1),
    ([[0.3, -0.7], [0.8, 0.2], [-0.4, 0.6]], 0.5, 2),
])
def test_log_optimal_transport__hand_computed_rounds(method, scores, alpha, rounds):
    plan = log_optimal_transport(torch.tensor([scores], dtype=torch.float64), alpha, rounds, method=method).exp()
    torch.testing.assert_close(plan[0], torch.tensor(_by_hand(scores, alpha, rounds), dtype=torch.float64),
                               atol=1e-12, rtol=0)


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 9, 4), (3, 4, 13), (1, 144, 144)])
def test_scaling_path__equals_log_domain_reference(shape):
    scores = _cosine_scores(*shape)
    reference = log_optimal_transport(scores, 1.0, 100, method="log").exp()
    torch.testing.assert_close(log_optimal_transport(scores, 1.0, 100, method="scaling").exp(), reference,
                               atol=1e-10, rtol=0)
    # float32: 1e-5 absolute and relative (dustbin entries reach ~m, where float32 itself resolves ~1e-5);
    # the token block that the loss reads agrees to 1e-6 absolute.
    fast32 = log_optimal_transport(scores.float(), 1.0, 100, method="scaling").exp().double()
    torch.testing.assert_close(fast32, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast32[:, :-1, :-1], reference[:, :-1, :-1], atol=1e-6, rtol=0)


def test_scaling_path__fixed_point_exit_is_bitwise_identical_to_all_rounds():
    z = s2dc_ot._augment(_cosine_scores(3, 20, 30, dtype=torch.float32), 1.0)
    log_mu, log_nu = s2dc_ot._log_marginals(20, 30, z)
    early, _, (a_hist, _) = s2dc_ot._scaling_forward(z, log_mu, log_nu, 100, keep_history=True)
    full, _, (a_full, _) = s2dc_ot._scaling_forward(z, log_mu, log_nu, 100, keep_history=True,
                                                    stop_at_fixed_point=False)
    plain = s2dc_ot._scaling_forward(z, log_mu, log_nu, 100, keep_history=False)[0]
    assert a_hist.shape[1] < 100 == a_full.shape[1]  # the exit did happen
    assert torch.equal(early, full) and torch.equal(plain, full)


def test_auto__falls_back_to_log_domain_for_large_spread_and_stays_finite():
    scores = 60.0 * _cosine_scores(2, 6, 5, dtype=torch.float32)  # spread ~120 ≫ 8
    auto = log_optimal_transport(scores, 1.0, 50)
    assert torch.isfinite(auto).all()
    assert torch.equal(auto, log_optimal_transport(scores, 1.0, 50, method="log"))
    reference = log_optimal_transport(scores.double(), 1.0, 50, method="log")
    torch.testing.assert_close(auto.double().exp(), reference.exp(), atol=1e-5, rtol=1e-5)
    # Forcing the scaling path there under/overflows float32: the fallback is needed.
    forced = log_optimal_transport(3.0 * scores, 1.0, 50, method="scaling")
    assert not torch.isfinite(forced).all()


def test_auto__uses_scaling_path_for_cosines(monkeypatch):
    calls = []
    original = s2dc_ot._scaling_forward
    monkeypatch.setattr(s2dc_ot, "_scaling_forward", lambda *a, **k: calls.append(1) or original(*a, **k))
    log_optimal_transport(_cosine_scores(2, 5, 5), 1.0, 10)
    assert calls


@pytest.mark.parametrize("iters", [1, 3, 100])
def test_scaling_backward__equals_autograd_through_log_reference(iters):
    torch.manual_seed(0)
    weights = torch.randn(3, 8, 7, dtype=torch.float64)

    def grads(method):
        scores = _cosine_scores(3, 7, 6).requires_grad_()
        alpha = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
        plan = log_optimal_transport(scores, alpha, iters, method=method)
        (plan.exp() * weights).sum().backward()
        return scores.grad, alpha.grad

    fast, reference = grads("scaling"), grads("log")
    torch.testing.assert_close(fast[0], reference[0], atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(fast[1], reference[1], atol=1e-10, rtol=1e-8)


def test_scaling_backward__passes_gradcheck():
    scores = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    for iters in (1, 2, 25):
        assert torch.autograd.gradcheck(lambda s, a: log_optimal_transport(s, a, iters, method="scaling"),
                                        (scores, alpha))


def test_gradients__finite_in_float32_at_official_size():
    scores = _cosine_scores(2, 144, 144, dtype=torch.float32).requires_grad_()
    plan = log_optimal_transport(scores, 1.0, 100)[:, :-1, :-1].exp().clamp(1e-6, 1 - 1e-6)
    (-plan.log()).mean().backward()
    assert torch.isfinite(scores.grad).all() and scores.grad.abs().sum() > 0


def test_half_precision_and_autocast__computed_in_float32():
    scores = _cosine_scores(2, 10, 12, dtype=torch.float32)
    reference = log_optimal_transport(scores, 1.0, 100)
    half = log_optimal_transport(scores.bfloat16(), 1.0, 100)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, log_optimal_transport(scores.bfloat16().float(), 1.0, 100))
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        inside = log_optimal_transport(scores, 1.0, 100)
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, reference, atol=1e-6, rtol=1e-6)


def test_log_optimal_transport__rejects_bad_arguments():
    with pytest.raises(ValueError, match="scores"):
        log_optimal_transport(torch.zeros(3, 3), 1.0, 10)
    with pytest.raises(ValueError, match="iters"):
        log_optimal_transport(torch.zeros(1, 3, 3), 1.0, 0)
    with pytest.raises(ValueError, match="method"):
        log_optimal_transport(torch.zeros(1, 3, 3), 1.0, 10, method="fast")
    with pytest.raises(TypeError):
        log_optimal_transport(torch.zeros(1, 3, 3, dtype=torch.long), 1.0, 10)
