"""``finetune``: SwinUNETR segmentation from a pretrained encoder (``init``) or from scratch.

DiceCE loss on foreground-aware random crops, sliding-window validation on held-out cases, the model
with the best mean validation Dice exported to ``RUN/model/`` (safetensors + model card). The same
machinery as pretraining: one loop, AMP on CUDA only, resumable state, DDP under torchrun, progress,
``metrics.jsonl``.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from S2DCCore.checkpoint import load_model_dir, save_model_dir
from S2DCCore.config import PreprocessConfig, to_dict
from S2DCCore.data.cohort import Case, Cohort, load_cohort
from S2DCCore.errors import DataError
from S2DCCore.losses.terms import LossTerms
from S2DCCore.models.encoders import EncoderConfig
from S2DCCore.models.segmenter import ENCODER_PREFIX, SegmenterConfig, build_segmenter, load_pretrained_encoder
from S2DCCore.training.config import FinetuneConfig
from S2DCCore.training.ddp import DistInfo, cleanup_distributed, setup_run
from S2DCCore.training.loop import StepResult, run_loop, unwrap
from S2DCCore.training.metrics import MetricsWriter
from S2DCCore.training.optim import make_scheduler, param_groups
from S2DCCore.training.progress import Progress
from S2DCCore.training.space import check_run_space
from S2DCCore.training.state import prepare_run_dir, restore_training_state, save_training_state
from S2DCCore.utils.run_lock import run_lock

log = logging.getLogger(__name__)


class SegmentationTask(nn.Module):
    """The network and its DiceCE loss; ``forward(batch)`` returns `LossTerms` like every method."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        from monai.losses import DiceCELoss

        self.network = network
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)

    def forward(self, batch: dict[str, torch.Tensor]) -> LossTerms:
        logits = self.network(batch["image"])  # (N, K, x, y, z)
        loss = self.loss(logits.float(), batch["label"])
        return LossTerms(total=loss, parts={"dice_ce": loss.detach()})


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
            return _finetune(Path(data), out, config, None if init is None else Path(init), resume, device, dist_info)
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
    train = [_load(transform, c, lookup) for c in train_cases]
    val = [_load(transform, c, lookup) for c in val_cases]

    network = build_segmenter(SegmenterConfig(encoder=encoder_cfg, out_channels=len(values)))
    if encoder_state is not None:
        load_pretrained_encoder(network, encoder_state, source=str(init))
    task = SegmentationTask(network).to(device)
    optimizer = torch.optim.AdamW(param_groups(task, config.optim.weight_decay), lr=config.optim.lr)
    scheduler = make_scheduler(optimizer, config.optim.warmup_steps, config.steps, config.optim.min_lr_ratio)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and config.precision == "fp16")
    rng = np.random.default_rng([config.runtime.seed, dist_info.rank])
    if dist_info.is_main:
        check_run_space(out, task, optimizer, steps=config.steps, log_every=config.log_every, resume=resume)
    start_step, best = 0, {"mean_dice": -1.0, "dice": {}, "step": 0}
    if resume:
        start_step, extra = restore_training_state(out / "checkpoints" / "last", task, optimizer, scheduler, scaler,
                                                   rng, restore_global_rng=dist_info.is_main)
        best = extra.get("best", best)
    model = task
    if dist_info.world_size > 1:
        model = nn.parallel.DistributedDataParallel(task, device_ids=[device.index] if device.type == "cuda" else None)
    writer = MetricsWriter(out, resume_step=start_step) if dist_info.is_main else None
    progress = Progress("finetune", config.steps, start_step, config.progress if dist_info.is_main else "none",
                        config.log_every)
    names = [cohort.labels[v] for v in values]
    card = {
        "kind": "segmenter",
        "architecture": {"encoder": to_dict(encoder_cfg), "out_channels": len(values), "norm_name": "instance"},
        "labels": {str(v): cohort.labels[v] for v in values},
        "preprocess": to_dict(preprocess),
        "intensity_preset": preprocess.preset,
        "spacing": list(preprocess.spacing),
        "orientation": preprocess.orientation,
        "roi": list(config.roi),
        "preset": config.preset,
        "encoder_provenance": provenance,
        "train_cases": [c.name for c in train_cases],
        "validation_cases": [c.name for c in val_cases],
        "trained_on": str(data),
    }

    def on_step(step: int, result: StepResult) -> None:
        nonlocal best
        metrics = {"loss": result.loss, "lr": result.lr, "grad_norm": result.grad_norm, "step_s": result.seconds}
        last = step == config.steps
        if step % config.val_every == 0 or last:
            if dist_info.is_main and val:
                dice = validate(unwrap(model).network, val, config, device, names)
                metrics["val_mean_dice"] = float(np.nanmean(list(dice.values()))) if dice else float("nan")
                if metrics["val_mean_dice"] > best["mean_dice"]:
                    best = {"mean_dice": metrics["val_mean_dice"], "dice": dice, "step": step}
                    _export(out, task, card, best)
            elif dist_info.is_main and last:
                _export(out, task, card, {"mean_dice": None, "dice": {}, "step": step})
        if writer is not None and (step % config.log_every == 0 or last or "val_mean_dice" in metrics):
            writer.write(step, metrics)
        progress.update(step, {k: metrics[k] for k in ("loss", "val_mean_dice") if k in metrics})
        if dist_info.is_main and (step % config.save_every == 0 or last):
            save_training_state(out / "checkpoints" / "last", step, task, optimizer, scheduler, scaler, rng,
                                to_dict(config), extra={"best": best})

    try:
        run_loop(model, _batches(train, rng, config), optimizer, scheduler, scaler, device=device,
                 start_step=start_step, total_steps=config.steps, precision=config.precision,
                 grad_clip=config.optim.grad_clip, on_step=on_step)
    finally:
        if writer is not None:
            writer.close()
    progress.done(model=str(out / "model"), best_mean_dice=best["mean_dice"])
    return out / "model"


def validate(network: nn.Module, cases: list[dict], config: FinetuneConfig, device: torch.device,
             names: list[str]) -> dict[str, float]:
    """Mean Dice per foreground structure over ``cases`` (sliding window on the preprocessed grid)."""
    from monai.inferers import sliding_window_inference
    from monai.metrics import compute_dice

    network.eval()
    scores = []
    with torch.no_grad():
        for case in cases:
            image = case["image"][None].to(device)  # (1, 1, X, Y, Z)
            logits = sliding_window_inference(image, config.roi, 2, network, overlap=config.sw_overlap)
            k = logits.shape[1]
            pred = nn.functional.one_hot(logits.argmax(1), k).permute(0, 4, 1, 2, 3).float()
            target = nn.functional.one_hot(case["label"][0].long().to(device), k).permute(3, 0, 1, 2)[None].float()
            scores.append(compute_dice(pred, target, include_background=False, ignore_empty=True)[0].cpu())
    network.train()
    mean = torch.nanmean(torch.stack(scores), dim=0)
    return {name: float(d) for name, d in zip(names[1:], mean)}


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


def _batches(cases: list[dict], rng: np.random.Generator, config: FinetuneConfig) -> Iterator[dict]:
    from monai import transforms as mt

    augment = mt.Compose([
        mt.SpatialPadd(keys=["image", "label"], spatial_size=config.roi),
        mt.RandCropByPosNegLabeld(keys=["image", "label"], label_key="label", spatial_size=config.roi, pos=1, neg=1,
                                  num_samples=config.crops_per_volume),
        mt.RandFlipd(keys=["image", "label"], prob=0.2, spatial_axis=0),
        mt.RandFlipd(keys=["image", "label"], prob=0.2, spatial_axis=1),
        mt.RandFlipd(keys=["image", "label"], prob=0.2, spatial_axis=2),
        mt.RandScaleIntensityd(keys="image", factors=0.1, prob=0.1),
        mt.RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
    ])
    while True:
        # Re-seed the MONAI transforms from our generator every step: resumable and rank-specific.
        augment.set_random_state(seed=int(rng.integers(2**31)))
        crops = []
        for _ in range(config.batch_size):
            crops += augment(cases[int(rng.integers(len(cases)))])
        yield {"image": torch.stack([torch.as_tensor(c["image"]) for c in crops]).float(),
               "label": torch.stack([torch.as_tensor(c["label"]) for c in crops]).long()}


def _export(out: Path, task: SegmentationTask, card: dict, best: dict) -> None:
    full = {**card, "validation_dice": best["dice"], "validation_mean_dice": best["mean_dice"], "step": best["step"],
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    save_model_dir(out / "model", task.network.state_dict(), full)
