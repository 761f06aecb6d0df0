"""S²DC pretraining as one module: student and EMA teacher networks, views in, named loss terms out.

Per step (methods.md §1.3–1.4): the student sees the grid crops of a region; the teacher sees the
same grid cut after one affine of the whole region (for ``L_p2p`` and ``L_p2s``, with token matches from
the affine) and per-crop augmented crops (positives of ``L_g``); the teacher's features of the plain
crops feed the queue. The teacher is an EMA of the whole student network (encoder and heads), as in the
official code, updated after each optimiser step (the official update at the start of the next step
is the same sequence of weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from S2DCCore.data.views.correspondence import crop_tokens_to_region, region_slices
from S2DCCore.losses.queue import FeatureQueue
from S2DCCore.losses.s2dc import S2DCLoss, S2DCLossConfig, select_global_pairs
from S2DCCore.losses.terms import LossTerms
from S2DCCore.models.ema import make_teacher, update_momentum
from S2DCCore.models.encoders import EncoderConfig, build_encoder
from S2DCCore.models.heads import ProjectionHead


@dataclass(frozen=True)
class S2DCModelConfig:
    """The S²DC networks around the encoder.

    Attributes:
        token_stage: encoder stage whose tokens are matched (official: 4, the last; 3³ tokens per 96³ crop).
        head_hidden / head_out: projection MLP sizes (official 2048 / 512).
        head_norm: ``features`` (fixed BatchNorm) or ``slices`` (the official quirk, see `ProjectionHead`).
        ema_momentum: constant teacher momentum (official 0.999).
    """

    token_stage: int = 4
    head_hidden: int = 2048
    head_out: int = 512
    head_norm: str = "features"
    ema_momentum: float = 0.999


class S2DCNetwork(nn.Module):
    """Encoder + geo (token) head + global head; the student and the teacher are two of these."""

    def __init__(self, encoder: EncoderConfig, model: S2DCModelConfig) -> None:
        super().__init__()
        channels = encoder.stage_channels()
        self.token_stage = model.token_stage
        self.encoder = build_encoder(encoder)
        self.geo_head = ProjectionHead(channels[model.token_stage], model.head_hidden, model.head_out, model.head_norm)
        self.global_head = ProjectionHead(channels[-1], model.head_hidden, model.head_out)

    def forward(self, crops: torch.Tensor, grid, tokens_per_crop, *, tokens: bool = True, pooled: bool = True):
        """crops (B·G, 1, rx, ry, rz) → (tokens (B, X·Y·Z, D) L2-normalised or None, pooled (B·G, D) or None)."""
        stages = self.encoder.forward_features(crops)
        token_out = pooled_out = None
        if tokens:
            region = crop_tokens_to_region(stages[self.token_stage], grid, tokens_per_crop)  # (B, X·Y·Z, C)
            token_out = nn.functional.normalize(self._geo(region, grid, tokens_per_crop), dim=-1)
        if pooled:
            pooled_out = self.global_head(stages[-1].mean(dim=(2, 3, 4)))  # (B·G, D), not normalised (official)
        return token_out, pooled_out

    def _geo(self, region: torch.Tensor, grid, tokens_per_crop) -> torch.Tensor:
        if self.geo_head.norm_over == "features":
            return self.geo_head(region)
        # Official layout for the quirk: per sample, (X·Y tokens, Z slices, C).
        b, n, c = region.shape
        z = grid[2] * tokens_per_crop[2]
        per_sample = region.reshape(b, n // z, z, c)  # region order is (x, y, z), z fastest
        return torch.stack([self.geo_head(s) for s in per_sample]).reshape(b, n, -1)


class S2DCMethod(nn.Module):
    """Student, EMA teacher, queue and loss; ``forward(batch)`` returns `LossTerms`.

    Args:
        encoder: encoder architecture.
        model: heads and EMA settings.
        loss: loss weights and hyper-parameters (a weight of 0 skips that term and its teacher passes).
        grid / tokens_per_crop: the crop grid of a region and the tokens per crop at ``token_stage``.
        mode: ``slice`` (official: one token set per depth slice) or ``volume`` (all region tokens).
    """

    def __init__(self, encoder: EncoderConfig, model: S2DCModelConfig, loss: S2DCLossConfig,
                 grid: tuple[int, int, int], tokens_per_crop: tuple[int, int, int], mode: str = "slice") -> None:
        super().__init__()
        self.student = S2DCNetwork(encoder, model)
        self.teacher = make_teacher(self.student)
        self.criterion = S2DCLoss(loss)
        self.queue = FeatureQueue(loss.queue_size, model.head_out, loss.normalize_global) if loss.weight_global > 0 else None
        self.momentum = model.ema_momentum
        self.grid, self.tokens_per_crop, self.mode = tuple(grid), tuple(tokens_per_crop), mode
        self.use_tokens = loss.weight_p2p > 0 or loss.weight_p2s > 0
        self.use_global = loss.weight_global > 0

    def forward(self, batch: dict[str, torch.Tensor]) -> LossTerms:
        """batch: ``student``/``teacher``/``teacher_aug`` (B·G, 1, r, r, r) crops, ``matches`` (B, N, N) bool."""
        g, t = self.grid, self.tokens_per_crop
        q_tokens, q_global = self.student(batch["student"], g, t, tokens=self.use_tokens, pooled=self.use_global)
        k_tokens = g_query = g_positive = g_negatives = None
        matches = batch["matches"]
        with torch.no_grad():
            if self.use_tokens:
                k_tokens, _ = self.teacher(batch["teacher"], g, t, pooled=False)
            if self.use_global:
                _, k_aug = self.teacher(batch["teacher_aug"], g, t, tokens=False)
                _, k_plain = self.teacher(batch["student"], g, t, tokens=False)
        if self.use_tokens and self.mode == "slice":
            # (B, X·Y·Z, D) → (B·Z, X·Y, D); every depth slice of a sample shares its in-plane matches.
            q_tokens, k_tokens = region_slices(q_tokens, g, t), region_slices(k_tokens, g, t)
            z = q_tokens.shape[0] // matches.shape[0]
            matches = matches.repeat_interleave(z, dim=0)
        if self.use_global:
            n_crops = g[0] * g[1] * g[2]
            q_cl = q_global.reshape(-1, n_crops, q_global.shape[-1])  # (B, G, D)
            k_cl = k_aug.reshape(-1, n_crops, k_aug.shape[-1])
            g_query, g_positive, in_batch, chosen = select_global_pairs(q_cl, k_cl)
            g_negatives = torch.cat([in_batch, self.queue.features().to(in_batch.dtype)], dim=0)
            keys = k_plain.reshape(-1, n_crops, k_plain.shape[-1])[torch.arange(len(chosen), device=chosen.device), chosen]
        terms = self.criterion(q_tokens=q_tokens, k_tokens=k_tokens, matches=matches, g_query=g_query,
                               g_positive=g_positive, g_negatives=g_negatives)
        if self.use_global and self.training:
            self.queue.enqueue(keys.float())
        return terms

    @torch.no_grad()
    def after_step(self) -> None:
        """EMA update of the teacher after each optimiser step."""
        update_momentum(self.student, self.teacher, self.momentum)

    def encoder_state(self) -> dict[str, torch.Tensor]:
        """The student encoder's weights, keyed as ``SwinUNETR.swinViT.*``."""
        return {k: v.detach().cpu() for k, v in self.student.encoder.state_dict().items()}


def token_grid(view_roi: tuple[int, int, int], token_stage: int, patch_size: int = 2) -> tuple[int, int, int]:
    """Tokens per crop side at ``token_stage`` (stage s has stride patch_size · 2^s)."""
    stride = patch_size * 2**token_stage
    if any(r % stride for r in view_roi):
        raise ValueError(f"crop size {view_roi} is not a multiple of the stage-{token_stage} stride {stride}")
    return tuple(r // stride for r in view_roi)


def build_method(config) -> S2DCMethod:
    """The S²DC module for a `PretrainConfig`."""
    views = config.views
    tokens = token_grid(tuple(views.roi), config.s2dc_model.token_stage, config.encoder.patch_size)
    if tuple(views.tokens_per_crop) != tokens:
        raise ValueError(f"views.tokens_per_crop={tuple(views.tokens_per_crop)} but crops of {tuple(views.roi)} at "
                         f"stage {config.s2dc_model.token_stage} give {tokens}; set views.tokens_per_crop={tokens}")
    return S2DCMethod(config.encoder, config.s2dc_model, config.s2dc, tuple(views.grid), tokens, views.mode)


def make_batch(regions: list[torch.Tensor], rng, config) -> dict[str, torch.Tensor]:
    """Views of ``regions`` (each (1, X, Y, Z) of shape grid·roi) collated into one batch.

    Returns ``student``/``teacher``/``teacher_aug`` (B·G, 1, rx, ry, rz) and ``matches`` (B, N, N) bool.
    """
    from dataclasses import asdict

    from S2DCCore.data.views.s2dc import make_s2dc_views

    views = [make_s2dc_views(region, rng, **asdict(config.views)) for region in regions]
    return {
        "student": torch.cat([v.student for v in views]),
        "teacher": torch.cat([v.teacher for v in views]),
        "teacher_aug": torch.cat([v.teacher_aug for v in views]),
        "matches": torch.stack([torch.as_tensor(v.matches, dtype=torch.bool) for v in views]),
    }


def has_unused_parameters(config) -> bool:
    """A zero loss weight leaves a head without gradients (DDP must be told)."""
    loss = config.s2dc
    return loss.weight_global == 0 or (loss.weight_p2p == 0 and loss.weight_p2s == 0)
