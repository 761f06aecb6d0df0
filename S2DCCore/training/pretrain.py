"""``pretrain``: wire data, method, optimiser, checkpoints and logging around the loop.

Run folder: ``config.json`` (resolved config), ``metrics.jsonl`` (+ ``tb/``), ``checkpoints/last/``
(resumable state) and ``encoder/`` (the exported encoder: safetensors + model card). Under ``torchrun``
each process trains on its own samples with DDP; only rank 0 writes. Every method (``s2dc``, ``alice``,
``swinssl``) exports the same encoder format; method hooks are described in `S2DCCore.training.methods`.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from S2DCCore.checkpoint import save_model_dir
from S2DCCore.config import to_dict
from S2DCCore.data.cohort import load_cohort
from S2DCCore.data.regions import VolumeStore, random_region
from S2DCCore.errors import DataError
from S2DCCore.models.ema import cosine_momentum
from S2DCCore.training import methods
from S2DCCore.training.config import PretrainConfig
from S2DCCore.training.ddp import DistInfo, cleanup_distributed, setup_run
from S2DCCore.training.loop import StepResult, run_loop, unwrap
from S2DCCore.training.metrics import MetricsWriter
from S2DCCore.training.optim import make_scheduler, param_groups
from S2DCCore.training.progress import Progress
from S2DCCore.training.space import check_run_space
from S2DCCore.training.state import prepare_run_dir, restore_training_state, save_training_state
from S2DCCore.utils.run_lock import run_lock

log = logging.getLogger(__name__)


def pretrain(data: str | Path, out: str | Path, config: PretrainConfig, *, resume: bool = False) -> Path:
    """Pretrain an encoder on the cohort at ``data`` into the run folder ``out``; return ``out/encoder``.

    Raises:
        UsageError: ``out`` is not empty without ``resume``, or ``resume`` finds no checkpoint.
        FolderBusyError: another process is writing ``out``.
        DataError: the cohort is unusable; `StorageError` when ``out``'s disk is too small, full or read-only.
    """
    out = Path(out)
    device, dist_info = setup_run(config.runtime)
    try:
        with run_lock(out, enabled=dist_info.is_main):  # one writer per run folder (S2DCCore.utils.run_lock)
            return _pretrain(Path(data), out, config, resume, device, dist_info)
    finally:
        cleanup_distributed()


def _pretrain(data: Path, out: Path, config: PretrainConfig, resume: bool, device: torch.device,
              dist_info: DistInfo) -> Path:
    recipe = methods.get(config.method)
    if dist_info.is_main:
        prepare_run_dir(out, resume, to_dict(config))
    cohort = load_cohort(data)
    cases = cohort.split("training") or cohort.cases
    store = VolumeStore(cases, config.preprocess, config.cache_volumes)
    method = recipe.build_method(config).to(device)
    optimizer = torch.optim.AdamW(param_groups(method, config.optim.weight_decay), lr=config.optim.lr)
    for group in optimizer.param_groups:  # which groups a weight-decay schedule may change (saved with the optimiser)
        group["decayed"] = group["weight_decay"] > 0
    scheduler = make_scheduler(optimizer, config.optim.warmup_steps, config.steps, config.optim.min_lr_ratio)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and config.precision == "fp16")
    rng = np.random.default_rng([config.runtime.seed, dist_info.rank])
    if dist_info.is_main:
        check_run_space(out, method, optimizer, steps=config.steps, log_every=config.log_every, resume=resume)
    start_step = 0
    if resume:
        start_step, _ = restore_training_state(out / "checkpoints" / "last", method, optimizer, scheduler, scaler, rng,
                                               restore_global_rng=dist_info.is_main)
        log.info("resuming %s from step %d", out, start_step)
    _schedule_weight_decay(optimizer, start_step, config)
    model = method
    if dist_info.world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            method, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=recipe.has_unused_parameters(config))
    writer = MetricsWriter(out, resume_step=start_step) if dist_info.is_main else None
    progress = Progress(f"pretrain {config.method}", config.steps, start_step,
                        config.progress if dist_info.is_main else "none", config.log_every)
    region_shape = tuple(g * r for g, r in zip(config.views.grid, config.views.roi))

    def on_step(step: int, result: StepResult) -> None:
        _schedule_weight_decay(optimizer, step, config)
        metrics = {"loss": result.loss, **result.parts, "lr": result.lr, "grad_norm": result.grad_norm,
                   "step_s": result.seconds}
        if writer is not None and (step % config.log_every == 0 or step == config.steps):
            writer.write(step, metrics)
        progress.update(step, {k: metrics[k] for k in ("loss", *result.parts)})
        if dist_info.is_main and (step % config.save_every == 0 or step == config.steps):
            _save(out, step, method, optimizer, scheduler, scaler, rng, config, data)

    try:
        batches = _batch_source(store, rng, region_shape, config, recipe, method, data)
        run_loop(model, batches, optimizer, scheduler, scaler, device=device, start_step=start_step,
                 total_steps=config.steps, precision=config.precision, grad_clip=config.optim.grad_clip,
                 on_step=on_step)
    finally:
        if writer is not None:
            writer.close()
    if dist_info.is_main and start_step >= config.steps:
        _export_encoder(out, config.steps, method, config, data)  # nothing left to train: re-export
    progress.done(encoder=str(out / "encoder"), steps=config.steps)
    return out / "encoder"


def _schedule_weight_decay(optimizer: torch.optim.Optimizer, step: int, config: PretrainConfig) -> None:
    """Set the weight decay of the decayed groups for ``step`` (half cosine to ``optim.weight_decay_end``)."""
    optim = config.optim
    if optim.weight_decay_end is None:
        return
    value = cosine_momentum(step, config.steps, optim.weight_decay, optim.weight_decay_end)  # DINO's cosine schedule
    for group in optimizer.param_groups:
        if group.get("decayed"):
            group["weight_decay"] = value


def _batch_source(store: VolumeStore, rng: np.random.Generator, region_shape, config, recipe, method,
                  data: Path) -> Iterator[dict]:
    """The method's own batch iterator (``make_batches``) or batches of random regions (``make_batch``)."""
    if len(store) == 0:
        raise DataError("the cohort has no training images", store.cases[0].image if store.cases else None)
    make_batches = getattr(recipe, "make_batches", None)
    if make_batches is not None:
        return make_batches(store, rng, config, method=method, data=data)
    return _batches(store, rng, region_shape, config, recipe)


def _batches(store: VolumeStore, rng: np.random.Generator, region_shape, config, recipe) -> Iterator[dict]:
    while True:
        regions = [random_region(store[int(rng.integers(len(store)))], region_shape, rng)
                   for _ in range(config.batch_size)]
        yield recipe.make_batch(regions, rng, config)


def _save(out: Path, step: int, method, optimizer, scheduler, scaler, rng, config: PretrainConfig, data: Path) -> None:
    save_training_state(out / "checkpoints" / "last", step, method, optimizer, scheduler, scaler, rng, to_dict(config))
    _export_encoder(out, step, method, config, data)


def _export_encoder(out: Path, step: int, method, config: PretrainConfig, data: Path) -> None:
    card = {
        "kind": "encoder",
        "method": config.method,
        "architecture": to_dict(config.encoder),
        "encoder": config.encoder.name,
        "feature_size": config.encoder.feature_size,
        "patch_size": config.encoder.patch_size,
        "preset": config.preset,
        "key_prefix": "swinViT.",
        "preprocess": to_dict(config.preprocess),
        "intensity_preset": config.preprocess.preset,
        "spacing": None if config.preprocess.spacing is None else list(config.preprocess.spacing),
        "orientation": config.preprocess.orientation,
        "step": step,
        "trained_on": str(data),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    extras = getattr(methods.get(config.method), "card_extras", None)
    card.update(extras(config) if extras is not None else {"token_stage": config.s2dc_model.token_stage})
    save_model_dir(out / "encoder", unwrap(method).encoder_state(), card)
