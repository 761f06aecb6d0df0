"""Batched, differentiable entropic optimal transport with a dustbin (SuperGlue style), as S²DC uses it.

`log_optimal_transport` computes what the official S²DC code computes (methods.md §1.4a): the score
matrix is augmented with a dustbin row and column filled with ``bin_score``, the marginals are
``1/(m+n)`` per token and ``n/(m+n)`` (row dustbin) / ``m/(m+n)`` (column dustbin), ε = 1, exactly
``iters`` Sinkhorn rounds starting from zero potentials (row update first), and the log plan is
returned multiplied by ``m+n`` so that a fully matched row sums to 1.

Two paths compute the same iterates:

* ``scaling``: S²DC's scores are cosines and its dustbin score is 1, so the kernel ``exp(Z)`` is
  bounded and the Sinkhorn rounds can run on scalings ``a = exp(u)``, ``b = exp(v)`` with two batched
  matrix–vector products per round (``bmm``) instead of two ``logsumexp`` passes. The kernel is
  shifted by its per-problem maximum (the plan is invariant to it), so only the *spread*
  ``max(Z) - min(Z)`` matters. Its backward is hand-written: the exact gradient of the unrolled
  iterations (what autograd through the loop would give, for any ``iters``), computed by one reverse
  sweep of matrix–vector products and one final ``bmm`` (see `_ScalingSinkhorn`).
* ``log``: the plain log-domain iteration with autograd, used when the spread is too large for the
  scaling path (`SCALING_MAX_SPREAD`) and as the reference in tests.

The scaling path also stops as soon as a round reproduces the previous scalings bit for bit: every
later round would reproduce them again, so the result is identical to running all ``iters`` rounds
(in float32 this happens after ~25–45 of S²DC's 100 rounds). The backward still differentiates all
``iters`` rounds.

Both paths run in float32 at least (half-precision inputs are promoted) with autocast disabled: a
bf16 Sinkhorn would not be the official computation.

Choice of backward (prototypes, 24 problems of 145×145, 100 rounds, 2 shared CPU threads, backward
only): autograd through the ``bmm`` loop ≈ 45 ms; implicit differentiation at the fixed point (Schur
complement + Cholesky) ≈ 10 ms, but exact only at convergence and ~3e-6 relative error in float32;
the hand-written unrolled backward ≈ 15 ms, exact for any number of rounds (float32 gradients within
~1e-6 relative of the float64 ones). The last one is used. ``benchmarks/ot.py`` times the result.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

# Largest kernel spread max(Z) - min(Z) for which the scaling path is used, per compute dtype. Chosen
# from measurements against the float64 log-domain iteration on adversarial kernels (a single high
# entry, a permutation, a low row and column, 3×2 to 1000×50 and 432×432): in float32, spreads up to 8
# stay within 0.3 of the tolerance ``1e-5 + 1e-5·|plan|`` while a spread of 10 exceeds it (float32
# round-off in the sums, amplified by ill-conditioned kernels); overflow itself would only start near
# a spread of 80 (exp(-87) is float32's smallest normal). In float64 the scalings stay within
# e^±(2·150 + 2·log(m+n)) ≪ e^±708 and the agreement is ~1e-14 at a spread of 150. S²DC's cosine
# scores with a dustbin score of 1 have a spread of at most 2.
SCALING_MAX_SPREAD: dict[torch.dtype, float] = {torch.float32: 8.0, torch.float64: 150.0}

METHODS = ("auto", "scaling", "log")

# Off the CPU, reading the fixed-point flag is a device synchronisation: check less often there.
_FIXED_POINT_CHECK_EVERY = 10


def no_autocast(device: torch.device):
    """A context that disables autocast on ``device`` (a no-op for device types without autocast) and
    keeps matrix products in full fp32 even when the run allows TF32 (`full_precision_matmul`)."""
    from S2DCCore.utils.runtime import full_precision_matmul

    stack = contextlib.ExitStack()
    stack.enter_context(full_precision_matmul())
    available = getattr(torch.amp, "is_autocast_available", None)
    if available is not None and not available(device.type):
        return stack
    if available is None and device.type not in ("cpu", "cuda", "mps", "xpu"):
        return stack
    stack.enter_context(torch.autocast(device_type=device.type, enabled=False))
    return stack


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision inputs, the input's own floating dtype otherwise."""
    if not dtype.is_floating_point:
        raise TypeError(f"expected floating-point scores, got {dtype}")
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def log_optimal_transport(scores: Tensor, bin_score: float | Tensor, iters: int, method: str = "auto") -> Tensor:
    """Log of the dustbin-augmented Sinkhorn plan, multiplied by ``m+n``, for a batch of problems.

    Args:
        scores: (B, m, n) similarity scores (the log-kernel; ε = 1). Rows are source tokens.
        bin_score: dustbin score α: a float or a 0-d tensor (which may require grad).
        iters: number of Sinkhorn rounds (≥ 1); each round updates the row, then the column potentials.
        method: ``auto`` (``scaling`` when the kernel spread is at most `SCALING_MAX_SPREAD` for the
            compute dtype, else ``log``; the check reads one number from the device), ``scaling`` or
            ``log`` (force a path; ``scaling`` beyond the bound may under/overflow).

    Returns:
        (B, m+1, n+1) ``log(P · (m+n))`` where P is the transport plan with the dustbin row and column
        last, in float32 for half-precision inputs and in the input dtype otherwise. Differentiable
        with respect to ``scores`` and a tensor ``bin_score``.

    Raises:
        ValueError: wrong shape, ``iters < 1`` or an unknown ``method``.
    """
    if scores.dim() != 3 or scores.shape[1] < 1 or scores.shape[2] < 1:
        raise ValueError(f"scores must be (B, m, n) with m, n ≥ 1, got {tuple(scores.shape)}")
    if iters < 1:
        raise ValueError(f"iters must be ≥ 1, got {iters}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    _, m, n = scores.shape
    dtype = compute_dtype(scores.dtype)
    with no_autocast(scores.device):
        z = _augment(scores.to(dtype), bin_score)  # (B, m+1, n+1)
        log_mu, log_nu = _log_marginals(m, n, z)
        if method == "auto":
            method = "scaling" if _spread_is_safe(z) else "log"
        if method == "log":
            return _log_sinkhorn(z, log_mu, log_nu, iters) + math.log(m + n)
        if torch.is_grad_enabled() and z.requires_grad:
            return _ScalingSinkhorn.apply(z, log_mu, log_nu, iters)
        return _scaling_forward(z, log_mu, log_nu, iters, keep_history=False)[0]


def _augment(scores: Tensor, bin_score: float | Tensor) -> Tensor:
    """(B, m, n) → (B, m+1, n+1) with the dustbin row and column (and corner) set to ``bin_score``."""
    b, m, n = scores.shape
    alpha = torch.as_tensor(bin_score, dtype=scores.dtype, device=scores.device).reshape(1, 1, 1)
    rows = torch.cat([scores, alpha.expand(b, m, 1)], dim=2)  # (B, m, n+1)
    last = alpha.expand(b, 1, n + 1)  # (B, 1, n+1)
    return torch.cat([rows, last], dim=1)


def _log_marginals(m: int, n: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """Log marginals (m+1,), (n+1,): ``1/(m+n)`` per token, ``n/(m+n)`` and ``m/(m+n)`` for the dustbins."""
    norm = math.log(m + n)
    log_mu = torch.full((m + 1,), -norm, dtype=like.dtype, device=like.device)
    log_nu = torch.full((n + 1,), -norm, dtype=like.dtype, device=like.device)
    log_mu[-1] = math.log(n) - norm
    log_nu[-1] = math.log(m) - norm
    return log_mu, log_nu


def _spread_is_safe(z: Tensor) -> bool:
    """True when every problem's spread max(Z) - min(Z) is within the bound (False for NaN/inf)."""
    if z.shape[0] == 0:
        return True
    spread = (z.detach().amax(dim=(1, 2)) - z.detach().amin(dim=(1, 2))).max()
    return bool(spread <= SCALING_MAX_SPREAD[z.dtype])


def _log_sinkhorn(z: Tensor, log_mu: Tensor, log_nu: Tensor, iters: int) -> Tensor:
    """Plain log-domain Sinkhorn (the official iteration): returns ``Z + u ⊕ v``, (B, M, N).

    The fallback for large spreads and the reference the tests compare the scaling path with.
    """
    u = torch.zeros_like(z[:, :, 0])  # (B, M)
    v = torch.zeros_like(z[:, 0, :])  # (B, N)
    for _ in range(iters):
        u = log_mu - torch.logsumexp(z + v.unsqueeze(1), dim=2)
        v = log_nu - torch.logsumexp(z + u.unsqueeze(2), dim=1)
    return z + u.unsqueeze(2) + v.unsqueeze(1)


def _scaling_forward(z: Tensor, log_mu: Tensor, log_nu: Tensor, iters: int, keep_history: bool,
                     stop_at_fixed_point: bool = True):
    """Sinkhorn rounds on scalings: ``a = μ / (K b)``, ``b = ν / (Kᵀ a)`` with K = exp(Z - max Z).

    Vectors are kept as rows (B, 1, ·) because ``(B, 1, M) @ (B, M, N)`` maps to a much faster BLAS
    path on CPU than ``(B, M, N) @ (B, N, 1)``; ``Kᵀ`` is a transposed view, not a copy.

    Exact early exit: once a round reproduces the previous ``b`` bit for bit, every later round
    reproduces the same ``a`` and ``b`` (the round is a deterministic function of ``b``), so the
    remaining rounds are skipped and the result is identical to running all ``iters`` rounds. In
    float32 this happens after ~25–45 rounds on S²DC's problems. The check reads one flag from the
    device, every round on CPU and every `_FIXED_POINT_CHECK_EVERY` rounds elsewhere.

    Returns:
        (log plan · (m+n) (B, M, N), K (B, M, N), history or None), history =
        (A (B, R, M) = a_1..a_R, Bv (B, R+1, N) = b_0..b_R) for the R ≤ iters rounds computed.
    """
    bsz, rows, cols = z.shape
    zs = z - z.amax(dim=(1, 2), keepdim=True)  # the plan is invariant to a per-problem shift
    kernel = zs.exp()  # (B, M, N), entries in [exp(-spread), 1]
    kernel_t = kernel.transpose(1, 2)
    mu = log_mu.exp().view(1, 1, rows)
    nu = log_nu.exp().view(1, 1, cols)
    every = 1 if z.device.type == "cpu" else _FIXED_POINT_CHECK_EVERY
    b = z.new_ones(bsz, 1, cols)
    history = None
    if keep_history:
        a_hist, b_hist = [], [b]
        for t in range(1, iters + 1):
            a = torch.bmm(b, kernel_t)  # (B, 1, M) = (K b)ᵀ
            a = torch.div(mu, a, out=a)
            b = torch.bmm(a, kernel)  # (B, 1, N) = (Kᵀ a)ᵀ
            b = torch.div(nu, b, out=b)
            a_hist.append(a)
            b_hist.append(b)
            if stop_at_fixed_point and t % every == 0 and torch.equal(b, b_hist[-2]):
                break
        history = (torch.cat(a_hist, dim=1), torch.cat(b_hist, dim=1))  # (B, R, M), (B, R+1, N)
    else:
        a, b_prev = z.new_empty(bsz, 1, rows), z.new_empty(bsz, 1, cols)
        for t in range(1, iters + 1):
            b, b_prev = b_prev, b  # b_prev holds b_{t-1}; b's buffer receives b_t
            torch.bmm(b_prev, kernel_t, out=a)
            torch.div(mu, a, out=a)
            torch.bmm(a, kernel, out=b)
            torch.div(nu, b, out=b)
            if stop_at_fixed_point and t % every == 0 and torch.equal(b, b_prev):
                break
    # zs is a fresh tensor: add the potentials in place (two passes instead of three allocations).
    out = zs.add_(a.log().add_(math.log(rows + cols - 2)).transpose(1, 2)).add_(b.log())
    return out, kernel, history


class _ScalingSinkhorn(torch.autograd.Function):
    """Scaling-domain Sinkhorn with the exact gradient of its ``iters`` unrolled rounds.

    Forward rounds t = 1…T: r_t = K b_{t-1}, a_t = μ/r_t, s_t = Kᵀ a_t, b_t = ν/s_t, and
    out = Z' + log a_T ⊕ log b_T + log(m+n). With G = ∂L/∂out, the cotangents x_t = ∂L/∂s_t and
    y_t = ∂L/∂r_t follow one reverse sweep of matrix–vector products:

        x_T = -(b_T/ν) ⊙ colsum(G)
        y_t = -(a_t²/μ) ⊙ (K x_t)  [- (a_T/μ) ⊙ rowsum(G) when t = T]
        x_{t-1} = -(b_{t-1}²/ν) ⊙ (Kᵀ y_t)

    and ∂L/∂K = Σ_t a_t x_tᵀ + y_t b_{t-1}ᵀ, assembled with one ``bmm`` over the stacked rounds;
    ∂L/∂Z = G + K ⊙ ∂L/∂K (the shift by max Z leaves the output unchanged, so it carries no gradient).
    When the forward stopped at a fixed point after R < T rounds, rounds R…T all have the same a, b
    and b_{t-1}: the sweep still runs through them (the gradient is the unrolled one), but their
    contributions to ∂L/∂K are the outer products of the summed cotangents.
    """

    @staticmethod
    def forward(ctx, z: Tensor, log_mu: Tensor, log_nu: Tensor, iters: int, stop_at_fixed_point: bool = True) -> Tensor:
        out, kernel, (a_hist, b_hist) = _scaling_forward(z, log_mu, log_nu, iters, keep_history=True,
                                                          stop_at_fixed_point=stop_at_fixed_point)
        ctx.save_for_backward(kernel, a_hist, b_hist, log_mu, log_nu)
        ctx.iters = iters
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        with no_autocast(grad.device):  # backward runs outside the forward's context: full fp32 again
            return _ScalingSinkhorn._backward(ctx, grad)

    @staticmethod
    def _backward(ctx, grad: Tensor):
        kernel, a_hist, b_hist, log_mu, log_nu = ctx.saved_tensors
        rounds = a_hist.shape[1]  # R computed rounds; rounds R…T are identical
        kernel_t = kernel.transpose(1, 2)
        mu = log_mu.exp().view(1, 1, -1)
        nu = log_nu.exp().view(1, 1, -1)
        coef_a = (a_hist * a_hist).div_(mu).neg_()  # (B, R, M): y_t = coef_a[t] ⊙ (K x_t)
        coef_b = (b_hist * b_hist).div_(nu).neg_()  # (B, R+1, N): x_t = coef_b[t] ⊙ (Kᵀ y_{t+1})
        # Rounds T … R (constant coefficients of round R): accumulate the cotangents.
        ca_r, cb_r = coef_a[:, rounds - 1:rounds], coef_b[:, rounds:rounds + 1]
        x = -grad.sum(dim=1, keepdim=True) * b_hist[:, rounds:rounds + 1] / nu  # (B, 1, N)
        y = torch.bmm(x, kernel_t).mul_(ca_r).sub_(grad.sum(dim=2).unsqueeze(1) * a_hist[:, -1:] / mu)
        sum_x, sum_y = x.clone(), y.clone()
        for _ in range(ctx.iters - rounds):
            x = torch.bmm(y, kernel).mul_(cb_r)
            y = torch.bmm(x, kernel_t).mul_(ca_r)
            sum_x += x
            sum_y += y
        # Rounds R-1 … 1 from the stored history.
        xs, ys = [sum_x], [sum_y]
        for t in range(rounds - 1, 0, -1):
            x = torch.bmm(y, kernel).mul_(coef_b[:, t:t + 1])
            y = torch.bmm(x, kernel_t).mul_(coef_a[:, t - 1:t])
            xs.append(x)
            ys.append(y)
        xs = torch.cat(xs[::-1], dim=1)  # (B, R, N): x_1 … x_{R-1}, Σ_{t≥R} x_t
        ys = torch.cat(ys[::-1], dim=1)  # (B, R, M)
        # ∂L/∂K = Σ_t a_t x_tᵀ + y_t b_{t-1}ᵀ = Aᵀ X + Yᵀ B_prev, both (B, M, R) @ (B, R, N)
        grad_kernel = torch.baddbmm(torch.bmm(ys.transpose(1, 2), b_hist[:, :-1]), a_hist.transpose(1, 2), xs)
        return grad_kernel.mul_(kernel).add_(grad), None, None, None, None
