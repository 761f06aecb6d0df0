"""The EMA teacher, written once for every method: make it, update it, schedule its momentum."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def make_teacher(student: nn.Module) -> nn.Module:
    """A frozen copy of ``student`` (same weights; no gradients)."""
    teacher = copy.deepcopy(student)
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


@torch.no_grad()
def update_momentum(student: nn.Module, teacher: nn.Module, momentum: float) -> None:
    """``teacher ← momentum · teacher + (1 − momentum) · student`` for every parameter (buffers copied)."""
    s_params = [p.detach() for p in student.parameters()]
    t_params = list(teacher.parameters())
    if len(s_params) != len(t_params):
        raise ValueError("student and teacher have different parameter lists")
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, s_params, alpha=1.0 - momentum)
    for s_buf, t_buf in zip(student.buffers(), teacher.buffers()):
        t_buf.copy_(s_buf)


def cosine_momentum(step: int, total_steps: int, base: float, final: float = 1.0) -> float:
    """Momentum rising from ``base`` to ``final`` on a half cosine (DINO/iBOT's teacher schedule)."""
    if total_steps <= 1:
        return final
    progress = min(max(step / (total_steps - 1), 0.0), 1.0)
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2
