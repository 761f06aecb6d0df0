"""Alice pretraining as one module: student and EMA teacher SwinUNETRs, CASA, loss; views from matched volumes.

Per step (methods.md §2.2–2.4): a batch of query/key crop pairs (`S2DCCore.data.views.alice`) is
stacked ``[Q; K]``; the student sees the crops with column masks applied on the device, the teacher
the (augmented) crops; ``S = CASA(student query tokens, student decoder tokens)`` and
``T = CASA(student query tokens, teacher decoder tokens)`` (no gradient through ``T``); `AliceLoss`
gives ``cls``, ``patch`` and ``rec``. After each optimiser step the teacher follows the student with a
momentum rising from ``ema_momentum`` to 1 on a half cosine over the run; the step counter is a buffer,
so resumed runs continue every schedule exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from S2DCCore.data.views.alice import collate_pairs, make_alice_pair
from S2DCCore.data.views.masking import apply_column_mask, column_grid_shape
from S2DCCore.data.views.matching import EmbeddingMatcher, Matcher, SelfMatcher, load_encoder_features
from S2DCCore.errors import UsageError
from S2DCCore.losses.alice import AliceLoss, AliceLossConfig
from S2DCCore.losses.terms import LossTerms
from S2DCCore.models.alice_network import AliceModelConfig, AliceNetwork
from S2DCCore.models.casa import CASA
from S2DCCore.models.ema import cosine_momentum, make_teacher, update_momentum
from S2DCCore.models.encoders import EncoderConfig

log = logging.getLogger(__name__)
BUILTIN_MATCHERS = ("teacher", "self", "oracle")


@dataclass(frozen=True)
class AliceConfig:
    """Alice's views, matcher, networks and loss (the ``alice:`` section of a preset).

    Attributes:
        roi: crop size (sides multiples of 32; official 64³ with nnFormer, see the presets for ours).
        matcher: ``teacher`` (the EMA teacher's embeddings after ``matcher_warmup_steps``; before that
            each volume is paired with itself), ``self`` (always itself), ``oracle`` (phantom cohorts:
            the generator's exact correspondence) or the path of an S2DCCore encoder directory.
        matcher_threshold / matcher_tries: accept a match above this similarity, else redraw the query
            point, at most this many times (official 0.7, ~100).
        matcher_warmup_steps: steps before the ``teacher`` matcher is used.
        matcher_stages: encoder stages whose cosine similarities are averaged (official: SAM's fine and coarse maps).
        matcher_roi: sliding-window size of the matcher's dense embeddings.
        point_margin: query points stay this many voxels from the volume borders (official 10).
        mask_patch / mask_ratio: column masks through z (official 16 voxels, 0.75).
        augment / rotate_degrees / noise_std: teacher views rotated about z and noised (official values
            ±15°, σ 0.1, computed but unused upstream; ``augment: false`` reproduces that).
        ct_window: Alice's own CT window in HU (official −125..225: clipped, then scaled to [0, 1], so
            query points, drawn where the value is > 0, lie above −125 HU and the reconstruction target
            is soft tissue). None: the run's ``preprocess.ct_window`` (S²DC's −1000..1000). MR data is
            not affected. The encoder's model card records the window it was trained with.
        drop_path_rate: stochastic depth of the student encoder (official 0.2, nnFormer's encoder
            default); None keeps ``encoder.drop_path_rate`` (0). The EMA teacher never drops paths.
    """

    roi: tuple[int, int, int] = (96, 96, 96)
    matcher: str = "teacher"
    matcher_threshold: float = 0.7
    matcher_tries: int = 100
    matcher_warmup_steps: int = 2000
    matcher_stages: tuple[int, ...] = (2, 3)
    matcher_roi: tuple[int, int, int] = (96, 96, 96)
    point_margin: int = 10
    mask_patch: int = 16
    mask_ratio: float = 0.75
    augment: bool = True
    rotate_degrees: float = 15.0
    noise_std: float = 0.1
    ct_window: tuple[float, float] | None = (-125.0, 225.0)
    drop_path_rate: float | None = None
    model: AliceModelConfig = field(default_factory=AliceModelConfig)
    loss: AliceLossConfig = field(default_factory=AliceLossConfig)

    def __post_init__(self) -> None:
        if any(r % 32 or r < 32 for r in self.roi) or all(r < 64 for r in self.roi):
            # The decoder's bottleneck is roi/32 and instance-normalised: it needs more than one voxel.
            raise UsageError(f"alice.roi must be multiples of 32 with at least one side ≥ 64, not {tuple(self.roi)}")
        try:
            column_grid_shape(self.roi, self.mask_patch)
        except ValueError as exc:
            raise UsageError(f"alice: {exc}") from None
        if any(r % 32 for r in self.matcher_roi):
            raise UsageError(f"alice.matcher_roi must be multiples of 32, not {tuple(self.matcher_roi)}")
        if not 0.0 <= self.mask_ratio <= 1.0:
            raise UsageError(f"alice.mask_ratio must lie in [0, 1], not {self.mask_ratio}")
        if self.ct_window is not None and self.ct_window[0] >= self.ct_window[1]:
            raise UsageError(f"alice.ct_window must be (low, high) with low < high, not {self.ct_window}")
        if self.drop_path_rate is not None and not 0.0 <= self.drop_path_rate < 1.0:
            raise UsageError(f"alice.drop_path_rate must lie in [0, 1), not {self.drop_path_rate}")


class AliceMethod(nn.Module):
    """Student, EMA teacher, CASA and loss; ``forward(batch)`` returns `LossTerms`.

    Args:
        encoder: encoder architecture (the decoder follows its feature size).
        config: the ``alice`` section.
        total_steps: length of the run (the teacher momentum reaches 1 at its end).
    """

    def __init__(self, encoder: EncoderConfig, config: AliceConfig, total_steps: int) -> None:
        super().__init__()
        model, loss = config.model, config.loss
        if config.drop_path_rate is not None:
            encoder = replace(encoder, drop_path_rate=config.drop_path_rate)
        self.student = AliceNetwork(encoder, model)
        self.teacher = make_teacher(self.student)
        for module in self.teacher.modules():  # the teacher sees whole networks (iBOT/DINO teachers have none)
            if hasattr(module, "drop_prob"):
                module.drop_prob = 0.0
        self.casa = CASA(model.patch_out_dim, model.casa_inner, model.casa_heads, model.casa_head_dim,
                         model.casa_dropout)
        self.criterion = AliceLoss(loss, model.out_dim, model.patch_out_dim)
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self.base_momentum, self.total_steps = model.ema_momentum, total_steps
        self.freeze_steps = model.freeze_last_layer_steps
        self.use_cls, self.use_patch, self.use_rec = loss.weight_cls > 0, loss.weight_patch > 0, loss.weight_rec > 0

    def forward(self, batch: dict[str, torch.Tensor]) -> LossTerms:
        """One step.

        Args:
            batch: ``query``/``key``/``teacher_query``/``teacher_key`` (B, 1, *roi) crops and
                ``mask_query``/``mask_key`` (B, gx, gy) bool column masks (`collate_pairs`).
        """
        step = int(self.step)
        crops = torch.cat([batch["query"], batch["key"]])  # (2B, 1, *roi), stacked [Q; K]
        masks = torch.cat([batch["mask_query"], batch["mask_key"]])
        student = self.student(apply_column_mask(crops, masks), cls=self.use_cls, query=self.use_patch,
                               kv=self.use_patch, reconstruct=self.use_rec,
                               frozen_last_layer=step < self.freeze_steps)
        s_patch = t_patch = t_cls = None
        if self.use_cls or self.use_patch:
            with torch.no_grad():
                teacher = self.teacher(torch.cat([batch["teacher_query"], batch["teacher_key"]]), cls=self.use_cls,
                                       query=False, kv=self.use_patch, reconstruct=False)
                t_cls = teacher.cls
                if self.use_patch:
                    t_patch = self.casa(student.query, teacher.kv)  # same CASA weights as S (official)
            if self.use_patch:
                s_patch = self.casa(student.query, student.kv)
        return self.criterion(step=step, student_cls=student.cls, teacher_cls=t_cls, student_patch=s_patch,
                              teacher_patch=t_patch, reconstruction=student.reconstruction, target=crops)

    @torch.no_grad()
    def after_step(self) -> None:
        """EMA update of the teacher on the cosine momentum schedule, then count the step."""
        momentum = cosine_momentum(int(self.step), self.total_steps, self.base_momentum, 1.0)
        update_momentum(self.student, self.teacher, momentum)
        self.step += 1

    def encoder_state(self) -> dict[str, torch.Tensor]:
        """The student encoder's weights, keyed as ``SwinUNETR.swinViT.*``."""
        return {f"swinViT.{k}": v.detach().cpu() for k, v in self.student.backbone.swinViT.state_dict().items()}


def build_method(config) -> AliceMethod:
    """The Alice module for a `PretrainConfig`."""
    matcher = config.alice.matcher
    if matcher not in BUILTIN_MATCHERS and not Path(matcher).is_dir():
        raise UsageError(f"alice.matcher must be one of {', '.join(BUILTIN_MATCHERS)} or an encoder directory; "
                         f"{matcher!r} is neither")
    return AliceMethod(config.encoder, config.alice, config.steps)


def preprocess(config):
    """The intensity preprocessing of Alice's volumes: the run's, with ``alice.ct_window`` on CT."""
    if config.alice.ct_window is None or config.preprocess.preset != "ct":
        return config.preprocess
    return replace(config.preprocess, ct_window=tuple(config.alice.ct_window))


def build_matcher(config, store, method: AliceMethod, data: Path | None) -> Matcher:
    """The matcher named by ``config.alice.matcher`` (see `AliceConfig`)."""
    alice = config.alice
    if alice.matcher == "self":
        return SelfMatcher()
    if alice.matcher == "oracle":
        from S2DCCore.data.phantoms.matching import PhantomOracle

        return PhantomOracle(data, store.cases, store.transform)
    device = method.step.device
    if alice.matcher == "teacher":
        return EmbeddingMatcher(method.teacher.encoder_features, alice.matcher_stages, alice.matcher_roi, device,
                                config.encoder.patch_size, cache_size=0)  # the teacher changes every step
    features, card = load_encoder_features(alice.matcher, device)
    if (card.get("preprocess") or {}).get("preset", config.preprocess.preset) != config.preprocess.preset:
        log.warning("matcher %s was trained on %s intensities, this run uses %s", alice.matcher,
                    card["preprocess"]["preset"], config.preprocess.preset)
    patch = int((card.get("architecture") or {}).get("patch_size", 2))
    return EmbeddingMatcher(features, alice.matcher_stages, alice.matcher_roi, device, patch,
                            cache_size=getattr(store, "capacity", 64))


def make_batches(store, rng: np.random.Generator, config, *, method: AliceMethod,
                 data: Path | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches of ``config.batch_size`` matched pairs (see `make_alice_pair` and `collate_pairs`)."""
    alice = config.alice
    matcher = build_matcher(config, store, method, data)
    warmup = SelfMatcher()
    draws = accepted = total = 0
    while True:
        current = warmup if alice.matcher == "teacher" and int(method.step) < alice.matcher_warmup_steps else matcher
        pairs = [make_alice_pair(store, rng, current, roi=alice.roi, threshold=alice.matcher_threshold,
                                 tries=alice.matcher_tries, margin=alice.point_margin, mask_patch=alice.mask_patch,
                                 mask_ratio=alice.mask_ratio, augment=alice.augment,
                                 rotate_degrees=alice.rotate_degrees, noise_std=alice.noise_std)
                 for _ in range(config.batch_size)]
        draws, total = draws + sum(p.draws for p in pairs), total + len(pairs)
        accepted += sum(p.score > alice.matcher_threshold for p in pairs)
        log.debug("alice pairs: scores %s; %d of %d pairs accepted in %d draws so far",
                  [round(p.score, 3) for p in pairs], accepted, total, draws)
        yield collate_pairs(pairs)


def has_unused_parameters(config) -> bool:
    """Skipped terms and the frozen last layers leave parameters without gradients (DDP must be told)."""
    loss = config.alice.loss
    return config.alice.model.freeze_last_layer_steps > 0 or min(loss.weight_cls, loss.weight_patch,
                                                                  loss.weight_rec) == 0


def card_extras(config) -> dict:
    """Model-card entries: the stage whose tokens Alice trained (the default stage of ``embed``) and the matcher."""
    return {"token_stage": config.alice.model.query_stage, "matcher": config.alice.matcher}
