"""The Alice objective (Jiang et al., ICCV 2023) as the official ``loss.py`` computes it (methods.md §2.4).

Two crops, Q (query volume) and K (the matched point in another volume), are stacked along the batch
as ``[Q_1..Q_B, K_1..K_B]``. Terms (all unweighted in ``LossTerms.parts``):

* ``cls``: DINO self-distillation across the two volumes, ``½ [H(P_t(Q), p_s(K)) + H(P_t(K), p_s(Q))]``
  (the figure's "inter-volume" contrast);
* ``patch``: the same cross-entropy per token between the CASA outputs ``S`` (student) and ``T``
  (teacher target) of the *same* crop, averaged over crops, batch and tokens ("intra-volume");
* ``rec``: ``MSE(reconstruction, unmasked crops) / 2`` over all voxels — the official code halves the
  MSE of the concatenated crops once more, which this term reproduces (so weight 10 gives the official total).

``P_t = softmax((t − c) / τ_t)`` with an EMA centre ``c`` (`Center`) and a teacher temperature that
warms up linearly; ``p_s = softmax(s / τ_s)``. A weight of 0 skips its term (and its centre update).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from S2DCCore.errors import UsageError
from S2DCCore.losses.center import Center
from S2DCCore.losses.terms import LossTerms


@dataclass(frozen=True)
class AliceLossConfig:
    """Weights and temperatures of the Alice loss (official defaults; methods.md §2.5).

    Attributes:
        weight_cls / weight_patch / weight_rec: λ1, λ2, λ3 (1, 1, 10); 0 skips the term.
        student_temp: τ_s (0.1).
        warmup_teacher_temp / teacher_temp: class-token τ_t, linear warm-up 0.008 → 0.01.
        warmup_teacher_patch_temp / teacher_patch_temp: the same for the patch term.
        teacher_temp_warmup_steps: length of the warm-up in steps (official: 30 of 1000 epochs, 3 %).
        center_momentum / center_momentum_patch: EMA momenta of the two centres (0.9, 0.9).
    """

    weight_cls: float = 1.0
    weight_patch: float = 1.0
    weight_rec: float = 10.0
    student_temp: float = 0.1
    warmup_teacher_temp: float = 0.008
    teacher_temp: float = 0.01
    warmup_teacher_patch_temp: float = 0.008
    teacher_patch_temp: float = 0.01
    teacher_temp_warmup_steps: int = 3000
    center_momentum: float = 0.9
    center_momentum_patch: float = 0.9

    def __post_init__(self) -> None:
        weights = (self.weight_cls, self.weight_patch, self.weight_rec)
        if min(weights) < 0 or max(weights) <= 0:
            raise UsageError(f"alice.loss weights must be ≥ 0 with at least one > 0, not {weights}")
        if min(self.student_temp, self.warmup_teacher_temp, self.teacher_temp, self.warmup_teacher_patch_temp,
               self.teacher_patch_temp) <= 0:
            raise UsageError("alice.loss temperatures must be > 0")
        if not (0 <= self.center_momentum <= 1 and 0 <= self.center_momentum_patch <= 1):
            raise UsageError("alice.loss centre momenta must lie in [0, 1]")


def teacher_temperature(step: int, warmup_steps: int, start: float, end: float) -> float:
    """Linear warm-up from ``start`` (step 0) to ``end`` (step ``warmup_steps − 1``), then ``end``.

    The official schedule is ``np.linspace(start, end, warmup)`` indexed by epoch; here it is indexed by step.
    """
    if step >= warmup_steps - 1 or warmup_steps <= 1:
        return float(end)
    return float(start + (end - start) * step / (warmup_steps - 1))


def teacher_probabilities(teacher_logits: torch.Tensor, center: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax((t − c) / τ)`` over the last axis, detached (the teacher is a target).

    Args:
        teacher_logits: (..., D). center: broadcastable to it, e.g. (1, D) or (1, 1, D).
    """
    return F.softmax((teacher_logits.detach() - center) / temperature, dim=-1).detach()


def distillation_cross_entropy(student_logits: torch.Tensor, teacher_probs: torch.Tensor,
                               student_temp: float) -> torch.Tensor:
    """Mean over all leading axes of ``−Σ_k P_t,k · log softmax(s / τ_s)_k``.

    Args:
        student_logits: (..., D). teacher_probs: (..., D), rows summing to 1.
    """
    return torch.sum(-teacher_probs * F.log_softmax(student_logits / student_temp, dim=-1), dim=-1).mean()


def cross_view_cls_loss(student_cls: torch.Tensor, teacher_probs: torch.Tensor, student_temp: float) -> torch.Tensor:
    """``½ [H(P_t(Q), p_s(K)) + H(P_t(K), p_s(Q))]`` for inputs stacked ``[Q; K]`` along dim 0.

    Args:
        student_cls: (2B, D) logits. teacher_probs: (2B, D) probabilities.
    """
    s_q, s_k = student_cls.chunk(2)
    t_q, t_k = teacher_probs.chunk(2)
    return 0.5 * (distillation_cross_entropy(s_k, t_q, student_temp)
                  + distillation_cross_entropy(s_q, t_k, student_temp))


def same_view_patch_loss(student_patch: torch.Tensor, teacher_probs: torch.Tensor, student_temp: float) -> torch.Tensor:
    """``½ Σ_{v ∈ {Q, K}} mean_{b, tokens} H(P_t(v), p_s(v))`` for inputs stacked ``[Q; K]``.

    Args:
        student_patch: (2B, L, D) logits. teacher_probs: (2B, L, D).
    """
    s_q, s_k = student_patch.chunk(2)
    t_q, t_k = teacher_probs.chunk(2)
    return 0.5 * (distillation_cross_entropy(s_q, t_q, student_temp)
                  + distillation_cross_entropy(s_k, t_k, student_temp))


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The official ``MSE(cat[x_Q, x_K], recon) / 2`` (mean over every voxel, halved once more)."""
    return F.mse_loss(reconstruction, target) / 2


class AliceLoss(nn.Module):
    """Alice's three terms and its two teacher centres.

    Args:
        config: weights, temperatures, centre momenta.
        out_dim: class-token logit size (official 512). patch_out_dim: patch logit size (official 512).

    Examples:
        >>> loss = AliceLoss(AliceLossConfig(), out_dim=8, patch_out_dim=8)
        >>> terms = loss(student_cls=torch.randn(4, 8), teacher_cls=torch.randn(4, 8),
        ...              student_patch=torch.randn(4, 3, 8), teacher_patch=torch.randn(4, 3, 8),
        ...              reconstruction=torch.zeros(4, 1, 2, 2, 2), target=torch.ones(4, 1, 2, 2, 2), step=0)
        >>> sorted(terms.parts)
        ['cls', 'patch', 'rec']
    """

    def __init__(self, config: AliceLossConfig, out_dim: int, patch_out_dim: int) -> None:
        super().__init__()
        self.config = config
        self.cls_center = Center((1, out_dim), config.center_momentum)
        self.patch_center = Center((1, 1, patch_out_dim), config.center_momentum_patch)

    def temperatures(self, step: int) -> tuple[float, float]:
        """(class-token, patch) teacher temperatures at ``step``."""
        c = self.config
        return (teacher_temperature(step, c.teacher_temp_warmup_steps, c.warmup_teacher_temp, c.teacher_temp),
                teacher_temperature(step, c.teacher_temp_warmup_steps, c.warmup_teacher_patch_temp,
                                    c.teacher_patch_temp))

    def forward(self, *, step: int, student_cls: torch.Tensor | None = None, teacher_cls: torch.Tensor | None = None,
                student_patch: torch.Tensor | None = None, teacher_patch: torch.Tensor | None = None,
                reconstruction: torch.Tensor | None = None, target: torch.Tensor | None = None) -> LossTerms:
        """Named terms for one step; inputs of a term with weight 0 may be None.

        Args:
            step: optimisation step (sets the teacher temperatures).
            student_cls / teacher_cls: (2B, D) class-token logits, stacked ``[Q; K]``.
            student_patch / teacher_patch: (2B, L, P) CASA outputs ``S`` and ``T``.
            reconstruction / target: (2B, 1, X, Y, Z) decoder output and the unmasked crops.
        """
        c = self.config
        tau_cls, tau_patch = self.temperatures(step)
        parts: dict[str, torch.Tensor] = {}
        total = None  # the config guarantees at least one weight > 0
        if c.weight_cls > 0:
            probs = teacher_probabilities(teacher_cls.float(), self.cls_center.value, tau_cls)
            parts["cls"] = cross_view_cls_loss(student_cls.float(), probs, c.student_temp)
            total = c.weight_cls * parts["cls"]
        if c.weight_patch > 0:
            probs = teacher_probabilities(teacher_patch.float(), self.patch_center.value, tau_patch)
            parts["patch"] = same_view_patch_loss(student_patch.float(), probs, c.student_temp)
            total = c.weight_patch * parts["patch"] + (0 if total is None else total)
        if c.weight_rec > 0:
            parts["rec"] = reconstruction_loss(reconstruction.float(), target.float())
            total = c.weight_rec * parts["rec"] + (0 if total is None else total)
        if self.training:
            # After the loss, as officially: this step used the previous centre.
            if c.weight_cls > 0:
                self.cls_center.update(teacher_cls)
            if c.weight_patch > 0:
                self.patch_center.update(teacher_patch)
        return LossTerms(total=total, parts={k: v.detach() for k, v in parts.items()})
