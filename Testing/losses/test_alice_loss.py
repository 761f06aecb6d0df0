"""Alice's loss terms: hand-computed cases, the official pairing of views, centring, schedules, weights of 0."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from S2DCCore.errors import UsageError
from S2DCCore.losses.alice import (AliceLoss, AliceLossConfig, cross_view_cls_loss, distillation_cross_entropy,
                                   reconstruction_loss, same_view_patch_loss, teacher_probabilities,
                                   teacher_temperature)


def _official_pairs(student, teacher_probs, tau, cross: bool):
    """The official double loop over chunks q (teacher) and v (student) of ``loss.py``."""
    s, t = student.chunk(2), teacher_probs.chunk(2)
    total, n = 0.0, 0
    for q in (0, 1):
        for v in (0, 1):
            if (v != q) == cross:
                total = total + torch.sum(-t[q] * F.log_softmax(s[v] / tau, dim=-1), dim=-1).mean()
                n += 1
    return total / n


def test_cross_entropy_by_hand():
    # Uniform student logits: -Σ p log(1/D) = log D whatever the teacher.
    probs = torch.tensor([[0.7, 0.2, 0.1]])
    assert distillation_cross_entropy(torch.zeros(1, 3), probs, 0.1).item() == pytest.approx(math.log(3))
    # One-hot teacher on class 0, student logits (1, 0) at τ = 0.5: −log(e² / (e² + 1)).
    one_hot = torch.tensor([[1.0, 0.0]])
    expected = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert distillation_cross_entropy(torch.tensor([[1.0, 0.0]]), one_hot, 0.5).item() == pytest.approx(expected)


def test_teacher_probabilities_centre_and_sharpen():
    t = torch.tensor([[2.0, 1.0]])
    probs = teacher_probabilities(t, torch.tensor([[1.0, 1.0]]), 0.5)  # (1, 0) / 0.5 = (2, 0)
    torch.testing.assert_close(probs, torch.softmax(torch.tensor([[2.0, 0.0]]), -1))
    assert not probs.requires_grad


def test_cls_term_pairs_query_with_key_and_patch_term_pairs_each_view_with_itself():
    torch.manual_seed(0)
    s_cls, t_cls = torch.randn(4, 6), torch.softmax(torch.randn(4, 6), -1)
    s_patch, t_patch = torch.randn(4, 5, 6), torch.softmax(torch.randn(4, 5, 6), -1)
    torch.testing.assert_close(cross_view_cls_loss(s_cls, t_cls, 0.1), _official_pairs(s_cls, t_cls, 0.1, True))
    torch.testing.assert_close(same_view_patch_loss(s_patch, t_patch, 0.1),
                               _official_pairs(s_patch, t_patch, 0.1, False))
    # Swapping the student's views changes the cross term into the same-view one.
    swapped = torch.cat(s_cls.chunk(2)[::-1])
    torch.testing.assert_close(cross_view_cls_loss(swapped, t_cls, 0.1), _official_pairs(s_cls, t_cls, 0.1, False))


def test_reconstruction_is_the_halved_mse():
    assert reconstruction_loss(torch.zeros(2, 1, 2, 2, 2), torch.full((2, 1, 2, 2, 2), 2.0)).item() == 2.0  # 4 / 2


def test_teacher_temperature_warms_up_linearly():
    values = [teacher_temperature(s, 3, 0.008, 0.01) for s in range(5)]
    assert values == pytest.approx([0.008, 0.009, 0.01, 0.01, 0.01])
    assert teacher_temperature(0, 0, 0.008, 0.01) == 0.01


def _inputs(b=2, d=4, tokens=3, grad=True):
    torch.manual_seed(1)
    return dict(student_cls=torch.randn(2 * b, d, requires_grad=grad), teacher_cls=torch.randn(2 * b, d),
                student_patch=torch.randn(2 * b, tokens, d, requires_grad=grad),
                teacher_patch=torch.randn(2 * b, tokens, d),
                reconstruction=torch.rand(2 * b, 1, 2, 2, 2, requires_grad=grad), target=torch.rand(2 * b, 1, 2, 2, 2))


def test_total_is_weighted_sum_and_centres_update_after_the_loss():
    config = AliceLossConfig(teacher_temp_warmup_steps=1)
    loss = AliceLoss(config, out_dim=4, patch_out_dim=4).train()
    x = _inputs()
    terms = loss(step=0, **x)
    # Step 0 used zero centres and the final temperatures (warm-up of one step).
    expected_cls = cross_view_cls_loss(x["student_cls"], torch.softmax(x["teacher_cls"] / 0.01, -1), 0.1)
    expected_patch = same_view_patch_loss(x["student_patch"], torch.softmax(x["teacher_patch"] / 0.01, -1), 0.1)
    torch.testing.assert_close(terms.parts["cls"], expected_cls.detach())
    torch.testing.assert_close(terms.parts["patch"], expected_patch.detach())
    torch.testing.assert_close(terms.total, terms.parts["cls"] + terms.parts["patch"] + 10 * terms.parts["rec"])
    torch.testing.assert_close(loss.cls_center.value, 0.1 * x["teacher_cls"].mean(0, keepdim=True))
    torch.testing.assert_close(loss.patch_center.value, 0.1 * x["teacher_patch"].mean((0, 1)).reshape(1, 1, -1))
    assert all(not v.requires_grad for v in terms.parts.values())
    terms.total.backward()
    assert all(torch.isfinite(x[k].grad).all() for k in ("student_cls", "student_patch", "reconstruction"))


def test_eval_mode_keeps_centres_and_zero_weights_skip_terms():
    loss = AliceLoss(AliceLossConfig(weight_patch=0.0, weight_rec=0.0), out_dim=4, patch_out_dim=4).eval()
    x = _inputs(grad=False)
    terms = loss(step=0, student_cls=x["student_cls"], teacher_cls=x["teacher_cls"])  # no patch or rec inputs
    assert sorted(terms.parts) == ["cls"]
    assert torch.equal(loss.cls_center.value, torch.zeros(1, 4))  # not updated outside training
    with pytest.raises(UsageError, match="at least one"):
        AliceLossConfig(weight_cls=0.0, weight_patch=0.0, weight_rec=0.0)
    with pytest.raises(UsageError, match="temperatures"):
        AliceLossConfig(student_temp=0.0)
