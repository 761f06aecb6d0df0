"""``finetune``: SwinUNETR segmentation from a pretrained encoder (``init``) or from scratch.

DiceCE loss on foreground-aware random crops, sliding-window validation on held-out cases, the model
with the best mean validation Dice exported to ``RUN/model/`` (safetensors + model card). The same
machinery as pretraining: one loop, AMP on CUDA only, resumable state, DDP under torchrun, progress,
``metrics.jsonl``.
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from S2DCCore.checkpoint import load_model_dir, save_model_dir
from S2DCCore.config import PreprocessConfig, to_dict
from S2DCCore.data.cohort import Case, Cohort, load_cohort
from S2DCCore.errors import DataError
from S2DCCore.inference.postprocess import choose_largest_component
from S2DCCore.losses.terms import LossTerms
from S2DCCore.models.encoders import EncoderConfig
from S2DCCore.models.segmenter import ENCODER_PREFIX, SegmenterConfig, build_segmenter, load_pretrained_encoder
from S2DCCore.training.config import FinetuneConfig
from S2DCCore.training.ddp import DistInfo, cleanup_distributed, leave_together, setup_run
from S2DCCore.training.loop import StepResult, make_scaler, run_loop, unwrap
from S2DCCore.training.metrics import MetricsWriter
from S2DCCore.training import crops
from S2DCCore.training.optim import finetune_param_groups, make_scheduler
from S2DCCore.training.progress import Progress
from S2DCCore.training.space import check_run_space
from S2DCCore.training.state import gather_rng_states, prepare_run_dir, restore_training_state, save_training_state
from S2DCCore.training.validation import validate_with_postprocess
from S2DCCore.utils.run_lock import run_lock

log = logging.getLogger(__name__)


class SegmentationTask(nn.Module):
    """The network and its DiceCE loss; ``forward(batch)`` returns `LossTerms` like every method.

    While ``frozen_encoder`` is set (the linear-probing phase of LP-FT) the encoder runs without
    gradients, so a step costs its forward pass and the head's backward only.
    """

    def __init__(self, network: nn.Module, *, batch_dice: bool = True, class_weights: torch.Tensor | None = None
                 ) -> None:
        super().__init__()
        from monai.losses import DiceCELoss

        self.network = network
        # Batch Dice (nnU-Net): each class's Dice over all crops of the step together, so a small structure
        # absent from one crop is not pushed towards "never predicted" by that crop's empty-class term.
        # Held in a list, not as a sub-module: its weight buffers (one tensor shared by three names) are
        # derived from the training labels and stay out of the checkpoints.
        self._loss = [DiceCELoss(to_onehot_y=True, softmax=True, batch=batch_dice, weight=class_weights)]
        self.frozen_encoder = False

    def forward(self, batch: dict[str, torch.Tensor]) -> LossTerms:
        logits = segmenter_logits(self.network, batch["image"], encoder_grad=not self.frozen_encoder)
        loss = self._loss[0].to(logits.device)(logits.float(), batch["label"])
        return LossTerms(total=loss, parts={"dice_ce": loss.detach()})


def class_weights(cases: list, n_classes: int, kind: str) -> torch.Tensor | None:
    """Per-class loss weights from the training labels: ``sqrt_inverse`` = frequency^−½ normalised to mean 1
    (a class of 0.1 % of the voxels weighs ~30× the background, not 1000×); ``none`` = None. A class absent
    from the training cases gets the largest weight of the others."""
    if kind == "none":
        return None
    counts = torch.zeros(n_classes, dtype=torch.float64)
    for case in cases:
        counts += torch.bincount(case.label.reshape(-1), minlength=n_classes)[:n_classes].double()
    freq = counts / counts.sum()
    weights = torch.where(freq > 0, freq.clamp(min=1e-12) ** -0.5, torch.zeros_like(freq))
    weights[freq == 0] = weights.max()
    return (weights / weights.mean()).float()


def segmenter_logits(network: nn.Module, image: torch.Tensor, *, encoder_grad: bool = True) -> torch.Tensor:
    """Logits (N, K, x, y, z) of a segmenter (SwinUNETR or `LightSegmenter`), its encoder with or without
    gradients."""
    if encoder_grad:
        return network(image)
    with torch.no_grad():
        hidden = [h.detach() for h in network.swinViT(image, normalize=True)]
    if hasattr(network, "head"):
        return network.head(image, hidden)
    from S2DCCore.models.swinunetr_stages import swinunetr_stages

    return swinunetr_stages(network, image, output=True, hidden=hidden).output


def finetune(data: str | Path, out: str | Path, config: FinetuneConfig, *, init: str | Path | None = None,
             resume: bool = False) -> Path:
    """Fine-tune on the labelled cohort at ``data`` into ``out``; return ``out/model``.

    Raises:
        UsageError: ``out`` not empty without ``resume`` (or nothing to resume).
        FolderBusyError: another process is writing ``out``.
        DataError: the cohort has no labels, or ``init`` is not a usable encoder directory; `StorageError`
            when ``out``'s disk is too small, full or read-only.
    """
    out = Path(out)
    device, dist_info = setup_run(config.runtime)
    try:
        with run_lock(out, enabled=dist_info.is_main):  # one writer per run folder (S2DCCore.utils.run_lock)
            result = _finetune(Path(data), out, config, None if init is None else Path(init), resume, device, dist_info)
        leave_together()
        return result
    finally:
        cleanup_distributed()


def split_cases(cohort: Cohort, config: FinetuneConfig) -> tuple[list[Case], list[Case]]:
    """Training cases (first ``train_cases`` labelled training cases) and validation cases (the cohort's
    validation split, else the next ``val_cases`` labelled training cases)."""
    labelled = [c for c in cohort.split("training") if c.label is not None]
    if not labelled:
        raise DataError("no labelled training cases (dataset.json 'training' entries need a 'label')", cohort.root)
    k = config.train_cases or len(labelled)
    train = labelled[:k]
    val = [c for c in cohort.split("validation") if c.label is not None]
    if not val:
        val = labelled[k:k + config.val_cases]
    return train, val


def _finetune(data: Path, out: Path, config: FinetuneConfig, init: Path | None, resume: bool, device: torch.device,
              dist_info: DistInfo) -> Path:
    from S2DCCore.data.transforms import preprocess_transforms

    cohort = load_cohort(data)
    if not cohort.labels:
        raise DataError("dataset.json has no 'labels'; fine-tuning needs label names", data / "dataset.json")
    train_cases, val_cases = split_cases(cohort, config)
    encoder_cfg, encoder_state, provenance = _encoder_source(init, config.encoder)
    preprocess = _resolve_spacing(config.preprocess, train_cases)
    values = sorted(cohort.labels)
    if dist_info.is_main:
        prepare_run_dir(out, resume, to_dict(config))
    transform = preprocess_transforms(preprocess)
    lookup = _label_lookup(values)
    train = [_indexed(_load(transform, c, lookup), config.roi) for c in train_cases]
    val = [_load(transform, c, lookup) for c in val_cases]

    network = build_segmenter(SegmenterConfig(encoder=encoder_cfg, out_channels=len(values), decoder=config.decoder))
    # LP-FT (Kumar et al. 2022): with a pretrained encoder, the head trains alone first.
    head_steps = min(config.head_warmup_steps, config.steps) if encoder_state is not None else 0
    if encoder_state is not None:
        load_pretrained_encoder(network, encoder_state, source=str(init))
    weights = class_weights(train, len(values), config.class_weights)
    task = SegmentationTask(network, batch_dice=config.batch_dice, class_weights=weights).to(device)
    groups = finetune_param_groups(task, config.optim.lr, config.optim.weight_decay,
                                   encoder_lr_scale=config.encoder_lr_scale if encoder_state is not None else 1.0,
                                   layer_decay=config.layer_decay if encoder_state is not None else 1.0,
                                   encoder_start=head_steps)
    optimizer = torch.optim.AdamW(groups, lr=config.optim.lr)
    scheduler = make_scheduler(optimizer, config.optim.warmup_steps, config.steps, config.optim.min_lr_ratio,
                               kind=config.optim.schedule)
    scaler = make_scaler(device, config.precision)
    rng = np.random.default_rng([config.runtime.seed, dist_info.rank])
    if dist_info.is_main:
        check_run_space(out, task, optimizer, steps=config.steps, log_every=config.log_every, resume=resume)
    start_step, best = 0, {"mean_dice": -1.0, "dice": {}, "step": 0}
    if resume:
        start_step, extra = restore_training_state(out / "checkpoints" / "last", task, optimizer, scheduler, scaler,
                                                   rng, rank=dist_info.rank, world_size=dist_info.world_size)
        best = extra.get("best", best)
    model = task
    if dist_info.world_size > 1:
        model = nn.parallel.DistributedDataParallel(task, device_ids=[device.index] if device.type == "cuda" else None,
                                                    find_unused_parameters=head_steps > start_step)
    task.frozen_encoder = start_step < head_steps
    writer = MetricsWriter(out, resume_step=start_step) if dist_info.is_main else None
    progress = Progress("finetune", config.steps, start_step, config.progress if dist_info.is_main else "none",
                        config.log_every)
    names = [cohort.labels[v] for v in values]
    card = {
        "kind": "segmenter",
        "architecture": {"encoder": to_dict(encoder_cfg), "out_channels": len(values), "norm_name": "instance",
                         "decoder": config.decoder},
        "labels": {str(v): cohort.labels[v] for v in values},
        "preprocess": to_dict(preprocess),
        "intensity_preset": preprocess.preset,
        "spacing": list(preprocess.spacing),
        "orientation": preprocess.orientation,
        "roi": list(config.roi),
        "preset": config.preset,
        "encoder_provenance": provenance,
        "recipe": {"decoder": config.decoder, "steps": config.steps, "head_warmup_steps": head_steps,
                   "crops_per_step": config.batch_size * config.crops_per_volume, "lr": config.optim.lr,
                   "schedule": config.optim.schedule, "sampling": to_dict(config.sampling)},
        "train_cases": [c.name for c in train_cases],
        "validation_cases": [c.name for c in val_cases],
        "trained_on": str(data),
    }

    def on_step(step: int, result: StepResult) -> None:
        nonlocal best
        task.frozen_encoder = step < head_steps
        metrics = {"loss": result.loss, "lr": result.lr, "grad_norm": result.grad_norm, "step_s": result.seconds}
        last = step == config.steps
        if step % config.val_every == 0 or last:
            if val:  # every rank validates its share of the cases (a collective)
                raw, kept = validate_with_postprocess(unwrap(model).network, val, roi=config.roi,
                                                      overlap=config.sw_overlap, device=device,
                                                      precision=config.precision, names=names)
                # nnU-Net's post-processing, decided on validation: the structures whose Dice rises when only
                # their largest component is kept; the score is that of the post-processed prediction.
                chosen = choose_largest_component(raw, kept)
                dice = {name: kept[name] if name in chosen else value for name, value in raw.items()}
                metrics["val_mean_dice"] = _nanmean(dice)
                metrics["val_mean_dice_raw"] = _nanmean(raw)
                if dist_info.is_main and metrics["val_mean_dice"] > best["mean_dice"]:
                    best = {"mean_dice": metrics["val_mean_dice"], "dice": dice, "step": step,
                            "largest_component": [values[names.index(n)] for n in chosen]}
                    _export(out, task, card, best)
            elif dist_info.is_main and last:
                _export(out, task, card, {"mean_dice": None, "dice": {}, "step": step})
        if writer is not None and (step % config.log_every == 0 or last or "val_mean_dice" in metrics):
            writer.write(step, metrics)
        progress.update(step, {k: metrics[k] for k in ("loss", "val_mean_dice") if k in metrics})
        if step % config.save_every == 0 or last:
            rng_states = gather_rng_states(rng)  # a collective: every rank's sampler goes into the checkpoint
            if dist_info.is_main:
                save_training_state(out / "checkpoints" / "last", step, task, optimizer, scheduler, scaler, rng,
                                    to_dict(config), extra={"best": best}, rng_states=rng_states)

    try:
        run_loop(model, crops.batches(train, config.roi, config.batch_size * config.crops_per_volume, config.sampling,
                                      rng), optimizer, scheduler, scaler, device=device,
                 start_step=start_step, total_steps=config.steps, precision=config.precision,
                 grad_clip=config.optim.grad_clip, on_step=on_step)
    finally:
        if writer is not None:
            writer.close()
    progress.done(model=str(out / "model"), best_mean_dice=best["mean_dice"])
    return out / "model"


def _encoder_source(init: Path | None, default: EncoderConfig):
    if init is None:
        return default, None, None
    tensors, card = load_model_dir(init)
    if card.get("kind") not in ("encoder", "segmenter"):
        raise DataError(f"model card kind {card.get('kind')!r} is not an encoder", init / "model.json")
    arch = card["architecture"]["encoder"] if card["kind"] == "segmenter" else card["architecture"]
    from S2DCCore.config import from_dict

    encoder_cfg = from_dict(EncoderConfig, arch)
    state = {k: v for k, v in tensors.items() if card["kind"] == "encoder" or k.startswith(ENCODER_PREFIX)}
    provenance = {"path": str(init), "kind": card["kind"], "method": card.get("method"), "step": card.get("step"),
                  "preset": card.get("preset"), "trained_on": card.get("trained_on")}
    return encoder_cfg, state, provenance


def _resolve_spacing(preprocess: PreprocessConfig, cases: list[Case]) -> PreprocessConfig:
    """``spacing: None`` → the median spacing of the training cases (the model card records it)."""
    if preprocess.spacing is not None:
        return preprocess
    from dataclasses import replace

    from S2DCCore.io.image import read_image

    spacings = np.array([read_image(c.image).spacing for c in cases])
    return replace(preprocess, spacing=tuple(float(s) for s in np.median(spacings, axis=0)))


def _label_lookup(values: list[int]) -> np.ndarray:
    lookup = np.zeros(max(values) + 1, dtype=np.int64)
    lookup[values] = np.arange(len(values))
    return lookup


def _load(transform, case: Case, lookup: np.ndarray) -> dict:
    item = transform({"image": case.image, "label": case.label})
    label = np.asarray(item["label"]).astype(np.int64)
    if label.max() >= len(lookup) or label.min() < 0:
        raise DataError(f"label values outside dataset.json 'labels' (max {label.max()})", case.label)
    return {"image": torch.as_tensor(np.asarray(item["image"]), dtype=torch.float32),
            "label": torch.as_tensor(lookup[label])}


def _indexed(case: dict, roi) -> crops.IndexedCase:
    return crops.index_case(case["image"], case["label"], roi)


def _nanmean(scores: dict[str, float]) -> float:
    return float(np.nanmean(list(scores.values()))) if scores else float("nan")


def _export(out: Path, task: SegmentationTask, card: dict, best: dict) -> None:
    full = {**card, "validation_dice": best["dice"], "validation_mean_dice": best["mean_dice"], "step": best["step"],
            "postprocess": {"largest_component": [int(v) for v in best.get("largest_component", [])]},
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    save_model_dir(out / "model", task.network.state_dict(), full)
