"""AdamW parameter groups (layer-wise rates for fine-tuning) and the warm-up + cosine/poly schedules."""

from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float, decay_all: bool = False) -> list[dict]:
    """Trainable parameters split so that biases and norm weights (1-D tensors) get no weight decay
    (``decay_all``: every parameter is decayed, as the official S²DC code; the second group is then empty)."""
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 and not decay_all else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """LR multiplier: linear warm-up from 0 to 1, then half-cosine down to ``min_ratio`` (≤ 1, so the floor
    never exceeds the peak — the Alice quirk fixed)."""
    min_ratio = min(max(min_ratio, 0.0), 1.0)
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_poly_factor(step: int, warmup_steps: int, total_steps: int, exponent: float = 0.9) -> float:
    """LR multiplier: linear warm-up, then nnU-Net's poly decay ``(1 − progress)^0.9`` to 0."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    return max(0.0, 1.0 - (step - warmup_steps) / span) ** exponent


SCHEDULES = {"cosine": warmup_cosine_factor, "poly": lambda s, w, t, m: warmup_poly_factor(s, w, t)}


def schedule_factor(kind: str, step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0,
                    start: int = 0) -> float:
    """The ``kind`` schedule (``cosine`` or ``poly``) for a group that starts training at step ``start``
    (0 before it: a frozen phase), with warm-up and decay counted from ``start``."""
    if step < start:
        return 0.0
    try:
        factor = SCHEDULES[kind]
    except KeyError:
        raise ValueError(f"unknown schedule {kind!r}; choose from {', '.join(SCHEDULES)}") from None
    return factor(step - start, warmup_steps, max(1, total_steps - start), min_ratio)


def make_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                   min_ratio: float = 0.0, kind: str = "cosine") -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepping the ``kind`` schedule once per optimiser step; a group with a ``start_step``
    key stays at 0 until then and warms up from there."""
    lambdas = [lambda step, s=group.get("start_step", 0): schedule_factor(kind, step, warmup_steps, total_steps,
                                                                           min_ratio, s)
               for group in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


# Depth of each top-level block of MONAI's SwinTransformer (SwinUNETR-v2): the patch embedding, then the four
# stages with their residual conv blocks (``layersNc``).
SWIN_DEPTH = {"patch_embed": 0, "layers1": 1, "layers1c": 1, "layers2": 2, "layers2c": 2, "layers3": 3,
              "layers3c": 3, "layers4": 4, "layers4c": 4}


def finetune_param_groups(model: nn.Module, lr: float, weight_decay: float, *, encoder_lr_scale: float = 1.0,
                          layer_decay: float = 1.0, encoder_start: int = 0, prefix: str = "swinViT.") -> list[dict]:
    """Groups for fine-tuning a pretrained encoder under a fresh head.

    The head (every parameter outside ``prefix``) trains at ``lr``; encoder block ``d`` (0 = patch
    embedding … 4 = last stage, `SWIN_DEPTH`) at ``lr · encoder_lr_scale · layer_decay^(4 − d)`` (layer-wise
    decay: early blocks, the most general, move least), starting at step ``encoder_start`` (LP-FT: the head
    first). Biases and norm weights get no weight decay.
    """
    groups: dict[tuple, dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        inner = name.split(prefix, 1)[1] if prefix in name else None
        if inner is None:
            key, rate, start = ("head",), lr, 0
        else:
            depth = SWIN_DEPTH.get(inner.split(".")[0], 4)
            key, rate, start = ("encoder", depth), lr * encoder_lr_scale * layer_decay ** (4 - depth), encoder_start
        decay = weight_decay if param.ndim > 1 else 0.0
        group = groups.setdefault(key + (decay,), {"params": [], "lr": rate, "weight_decay": decay,
                                                   "start_step": start, "name": "/".join(map(str, key))})
        group["params"].append(param)
    return list(groups.values())
