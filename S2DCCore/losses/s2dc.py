"""The three S²DC losses as pure functions, and `S2DCLoss`, their weighted sum.

S²DC (Pan et al., ICCV 2025, arXiv 2507.02581). The equations are those of the official code at
github.com/Ashespt/S2DC@b65c9aa (``Pretrain/losses/loss.py``), written out in methods.md §1.4:

* `patch_to_patch_loss` (L_p2p, official ``GeometricLoss`` with ``--sinkhorn``): OT plan between the
  tokens of the two views, binary cross-entropy of the plan against the token matches.
* `patch_to_structure_loss` (L_p2s, official ``SharpeLoss``): similarity cross-entropy whose positive
  terms are weighted by how peaked each token's similarity distribution is.
* `global_contrastive_loss` (L_g, official ``GeCoContrast``): InfoNCE of crop-level features against
  in-batch crops and a queue (`S2DCCore.losses.queue.FeatureQueue`); `select_global_pairs` builds
  its inputs.

Every loss runs in float32 at least, with autocast disabled (half-precision inputs are promoted):
the official losses are fp32 and bf16 logs/OT would change them. The config dataclass lives here,
next to the module it configures.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from S2DCCore.errors import UsageError
from S2DCCore.losses.ot import compute_dtype, log_optimal_transport, no_autocast
from S2DCCore.losses.terms import LossTerms

# Probabilities and similarities are clamped to [EPS, 1 - EPS] before logs, as in the official code.
EPS = 1e-6
# A token whose similarity distribution has a standard deviation below this is treated as flat: its
# z-scored peak is (max - mean) / STD_FLOOR ≈ 0 instead of the official 0/0 = NaN.
STD_FLOOR = 1e-6


@dataclass(frozen=True)
class S2DCLossConfig:
    """Weights and hyper-parameters of the S²DC objective (official defaults).

    Attributes:
        weight_p2p / weight_p2s / weight_global: term weights; 0 skips a term (at least one > 0).
        sinkhorn_iters: Sinkhorn rounds of the OT plan in L_p2p.
        bin_score: dustbin score of the OT plan (fixed, as in the official code).
        temperature: InfoNCE temperature of L_g.
        queue_size: number of queued negatives for L_g (official: batch size · 90).
        normalize_global: L2-normalise the global features before L_g. Off in the official code,
            whose global features are raw projection-head outputs.
    """

    weight_p2p: float = 0.5
    weight_p2s: float = 0.5
    weight_global: float = 0.5
    sinkhorn_iters: int = 100
    bin_score: float = 1.0
    temperature: float = 0.9
    queue_size: int = 90
    normalize_global: bool = False

    def __post_init__(self) -> None:
        weights = {"weight_p2p": self.weight_p2p, "weight_p2s": self.weight_p2s,
                   "weight_global": self.weight_global}
        for name, value in weights.items():
            if value < 0:
                raise UsageError(f"s2dc.{name} must be ≥ 0, not {value}")
        if not any(value > 0 for value in weights.values()):
            raise UsageError("s2dc: at least one of weight_p2p, weight_p2s, weight_global must be > 0")
        if self.sinkhorn_iters < 1:
            raise UsageError(f"s2dc.sinkhorn_iters must be ≥ 1, not {self.sinkhorn_iters}")
        if self.temperature <= 0:
            raise UsageError(f"s2dc.temperature must be > 0, not {self.temperature}")
        if self.queue_size < 0:
            raise UsageError(f"s2dc.queue_size must be ≥ 0, not {self.queue_size}")


def patch_to_patch_loss(q: Tensor, k: Tensor, matches: Tensor, iters: int = 100, bin_score: float = 1.0) -> Tensor:
    """L_p2p: cross-entropy of the dustbin OT plan between two token sets against their matches.

    Per problem b: S = q kᵀ (cosines, no temperature), P = exp(log_optimal_transport(S))[:-1, :-1]
    clamped to [1e-6, 1 - 1e-6], L_b = mean_{matches} -log P + mean_{non-matches} -log(1 - P).
    A problem without matches (or without non-matches) gets 0 for that mean, like the official guard.

    Args:
        q: (B, Nq, D) L2-normalised tokens of the source view (student); rows of the plan.
        k: (B, Nk, D) L2-normalised tokens of the augmented view (teacher); columns of the plan.
        matches: (Nq, Nk) or (B, Nq, Nk) bool (or 0/1) token correspondences; (Nq, Nk) is shared.
        iters: Sinkhorn rounds.
        bin_score: dustbin score.

    Returns:
        0-d tensor, the mean of L_b over the B problems.
    """
    q, k = _tokens(q, k)
    positive, negative = _match_masks(matches, q, k)
    with no_autocast(q.device):
        scores = torch.bmm(q, k.transpose(1, 2))  # (B, Nq, Nk)
        plan = log_optimal_transport(scores, bin_score, iters)[:, :-1, :-1].exp().clamp(EPS, 1 - EPS)
        loss_pos = _masked_mean(-plan.log(), positive)
        loss_neg = _masked_mean(-torch.log1p(-plan), negative)  # log1p: log(1 - P), better rounded
        return (loss_pos + loss_neg).mean()


def patch_to_structure_loss(q: Tensor, k: Tensor, matches: Tensor) -> Tensor:
    """L_p2s: similarity cross-entropy with positives weighted by the sharpness of each token's row/column.

    Per problem: S = (1 + q kᵀ)/2 (rows l: source tokens, columns s: augmented tokens);
    w1 = softmax_s((max_l S - mean_l S) / std_l S), w2 = softmax_l((max_s S - mean_s S) / std_s S)
    (std with Bessel's correction, as ``torch.std``; w1, w2 NOT detached, as official); with
    S clamped to [1e-6, 1 - 1e-6], L_b = (Σ_{matches} -log S · w1[s] + Σ_{matches} -log S · w2[l]) / 2
    + mean_{non-matches} -log(1 - S). Guards (the official code gives NaN in both cases): a row or
    column with std < `STD_FLOOR` uses that floor (its weight logit becomes ~0), and a problem
    without non-matches gets 0 for the last mean. A single token per side gives weight logits of 0.

    Args:
        q: (B, Nq, D) L2-normalised source tokens.
        k: (B, Nk, D) L2-normalised augmented tokens.
        matches: (Nq, Nk) or (B, Nq, Nk) bool (or 0/1) token correspondences.

    Returns:
        0-d tensor, the mean of L_b over the B problems.
    """
    q, k = _tokens(q, k)
    positive, negative = _match_masks(matches, q, k)
    with no_autocast(q.device):
        sim = (1 + torch.bmm(q, k.transpose(1, 2))) / 2  # (B, Nq, Nk) in [0, 1]
        w1 = torch.softmax(_sharpness(sim, dim=1), dim=-1)  # (B, Nk): per augmented token
        w2 = torch.softmax(_sharpness(sim, dim=2), dim=-1)  # (B, Nq): per source token
        sim = sim.clamp(EPS, 1 - EPS)
        nll_pos = torch.where(positive, -sim.log(), torch.zeros_like(sim))
        loss1 = (nll_pos * w1.unsqueeze(1)).sum(dim=(1, 2))
        loss2 = (nll_pos * w2.unsqueeze(2)).sum(dim=(1, 2))
        loss3 = _masked_mean(-torch.log1p(-sim), negative)
        return ((loss1 + loss2) / 2 + loss3).mean()


def global_contrastive_loss(query: Tensor, positive: Tensor, negatives: Tensor, temperature: float = 0.9,
                            normalize: bool = False) -> Tensor:
    """L_g: InfoNCE with the positive at index 0 and negatives shared by all queries.

    logits_i = [q_i·p_i, q_i·n_1, …, q_i·n_K] / temperature; loss = mean_i CE(logits_i, 0).

    Args:
        query: (N, D) student features.
        positive: (N, D) teacher features, one positive per query.
        negatives: (K, D) teacher features (in-batch crops and queue); K may be 0.
        temperature: softmax temperature (official 0.9).
        normalize: L2-normalise all features first (the official code does not).

    Returns:
        0-d tensor.
    """
    if query.dim() != 2 or positive.shape != query.shape or negatives.dim() != 2 \
            or negatives.shape[1] != query.shape[1]:
        raise ValueError(f"expected query (N, D), positive (N, D), negatives (K, D); got {tuple(query.shape)}, "
                         f"{tuple(positive.shape)}, {tuple(negatives.shape)}")
    dtype = compute_dtype(query.dtype)
    query, positive, negatives = (x.to(dtype) for x in (query, positive, negatives))
    with no_autocast(query.device):
        if normalize:
            query, positive, negatives = (F.normalize(x, dim=-1) for x in (query, positive, negatives))
        l_pos = (query * positive).sum(dim=-1, keepdim=True)  # (N, 1)
        l_neg = query @ negatives.t()  # (N, K)
        logits = torch.cat([l_pos, l_neg], dim=1) / temperature
        target = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)
        return F.cross_entropy(logits, target)


def select_global_pairs(q_cl: Tensor, k_cl: Tensor, generator: torch.Generator | None = None):
    """Pick one crop per volume as query/positive; the other crops of every volume are negatives.

    As official: crop j_b of volume b gives query ``q_cl[b, j_b]`` and positive ``k_cl[b, j_b]``; the
    negatives are the non-selected crops ``k_cl[b', j ≠ j_b']`` of every volume b' (the selected crops
    of the other volumes are not negatives). The official draws the indices without replacement
    (``random.sample``), so they differ between volumes; that is kept when B ≤ C, and B > C (where
    the official fails) draws them independently.

    Args:
        q_cl: (B, C, D) student crop features.
        k_cl: (B, C, D) teacher crop features (per-crop augmented); not detached here.
        generator: torch RNG for the draw (the global CPU RNG when None).

    Returns:
        (query (B, D), positive (B, D), in-batch negatives (B·(C-1), D) in volume-then-crop order,
        chosen crop indices (B,) long, on the features' device).
    """
    if q_cl.dim() != 3 or q_cl.shape != k_cl.shape:
        raise ValueError(f"q_cl and k_cl must both be (B, C, D), got {tuple(q_cl.shape)} and {tuple(k_cl.shape)}")
    bsz, crops, dim = q_cl.shape
    rng_device = generator.device if generator is not None else torch.device("cpu")
    if bsz <= crops:
        chosen = torch.randperm(crops, generator=generator, device=rng_device)[:bsz]
    else:
        chosen = torch.randint(crops, (bsz,), generator=generator, device=rng_device)
    chosen = chosen.to(q_cl.device)
    rows = torch.arange(bsz, device=q_cl.device)
    # Indices of the C-1 other crops of each volume, without boolean masking (no device sync).
    j = torch.arange(crops - 1, device=q_cl.device).unsqueeze(0)  # (1, C-1)
    others = j + (j >= chosen.unsqueeze(1)).long()  # (B, C-1)
    negatives = k_cl[rows.unsqueeze(1), others].reshape(bsz * (crops - 1), dim)
    return q_cl[rows, chosen], k_cl[rows, chosen], negatives, chosen


class S2DCLoss(nn.Module):
    """S²DC objective: ``w_p2p · L_p2p + w_p2s · L_p2s + w_g · L_g`` (methods.md §1.1, §1.4).

    The module holds no state (the queue is a separate `FeatureQueue`, fed by the caller). A term
    whose weight is 0 is not computed, its inputs may be None, and it is absent from ``parts``.

    Args:
        config: weights and hyper-parameters (defaults: the official ones).

    Examples:
        >>> loss = S2DCLoss(S2DCLossConfig(weight_global=0.0))
        >>> q = F.normalize(torch.randn(2, 4, 8), dim=-1)
        >>> terms = loss(q_tokens=q, k_tokens=q, matches=torch.eye(4, dtype=torch.bool))
        >>> sorted(terms.parts)
        ['p2p', 'p2s']
    """

    def __init__(self, config: S2DCLossConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else S2DCLossConfig()

    def forward(self, *, q_tokens: Tensor | None = None, k_tokens: Tensor | None = None,
                matches: Tensor | None = None, g_query: Tensor | None = None, g_positive: Tensor | None = None,
                g_negatives: Tensor | None = None) -> LossTerms:
        """Weighted total and unweighted, detached parts ``p2p``, ``p2s``, ``global``.

        Args:
            q_tokens / k_tokens: (B, N, D) student / teacher tokens (needed by p2p and p2s).
            matches: (N, N) or (B, N, N) bool token matches (rows: q tokens, columns: k tokens).
            g_query / g_positive: (N, D) global features; g_negatives: (K, D) (needed by global).
        """
        cfg = self.config
        total: Tensor | float = 0.0
        parts: dict[str, Tensor] = {}
        if cfg.weight_p2p > 0 or cfg.weight_p2s > 0:
            _require("p2p/p2s", q_tokens, k_tokens, matches)
        if cfg.weight_p2p > 0:
            term = patch_to_patch_loss(q_tokens, k_tokens, matches, iters=cfg.sinkhorn_iters, bin_score=cfg.bin_score)
            parts["p2p"] = term.detach()
            total = total + cfg.weight_p2p * term
        if cfg.weight_p2s > 0:
            term = patch_to_structure_loss(q_tokens, k_tokens, matches)
            parts["p2s"] = term.detach()
            total = total + cfg.weight_p2s * term
        if cfg.weight_global > 0:
            _require("global", g_query, g_positive, g_negatives)
            term = global_contrastive_loss(g_query, g_positive, g_negatives, cfg.temperature, cfg.normalize_global)
            parts["global"] = term.detach()
            total = total + cfg.weight_global * term
        return LossTerms(total=total, parts=parts)


def _require(term: str, *tensors: Tensor | None) -> None:
    if any(t is None for t in tensors):
        raise ValueError(f"S2DCLoss: the {term} term has a weight > 0 but some of its inputs are None")


def _tokens(q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    """Check (B, Nq, D) / (B, Nk, D) and promote half precision to float32."""
    if q.dim() != 3 or k.dim() != 3 or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
        raise ValueError(f"q and k must be (B, Nq, D) and (B, Nk, D), got {tuple(q.shape)} and {tuple(k.shape)}")
    dtype = compute_dtype(q.dtype)
    return q.to(dtype), k.to(dtype)


def _match_masks(matches: Tensor, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    """(positive, negative) bool masks (B, Nq, Nk): ``matches == 1`` and ``matches == 0``, as official."""
    shape = (q.shape[0], q.shape[1], k.shape[1])
    if tuple(matches.shape) not in (shape, shape[1:]):
        raise ValueError(f"matches must be {shape[1:]} or {shape}, got {tuple(matches.shape)}")
    matches = matches.to(q.device)
    if matches.dtype == torch.bool:
        positive, negative = matches, ~matches
    else:
        positive, negative = matches == 1, matches == 0
    return positive.expand(shape), negative.expand(shape)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Per-problem mean of ``values`` (B, M, N) over ``mask``; 0 where the mask is empty."""
    count = mask.sum(dim=(1, 2))
    total = torch.where(mask, values, torch.zeros_like(values)).sum(dim=(1, 2))
    return total / count.clamp_min(1).to(values.dtype)


def _sharpness(sim: Tensor, dim: int) -> Tensor:
    """(max - mean) / std of ``sim`` along ``dim`` (std unbiased, floored at `STD_FLOOR`)."""
    if sim.shape[dim] < 2:
        return torch.zeros_like(sim.select(dim, 0))
    peak = sim.max(dim=dim).values  # like torch.max: the gradient goes to one arg-max, as official
    mean = sim.mean(dim=dim)
    # Flooring the variance (not the std) keeps the gradient finite for a constant row.
    std = sim.var(dim=dim, correction=1).clamp_min(STD_FLOOR**2).sqrt()
    return (peak - mean) / std
