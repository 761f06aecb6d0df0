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
from S2DCCore.training.ddp import DistInfo, cleanup_distributed, leave_together, setup_run
from S2DCCore.training.loop import StepResult, make_scaler, run_loop, unwrap
from S2DCCore.training.metrics import MetricsWriter
from S2DCCore.training.optim import make_scheduler, param_groups
from S2DCCore.training.progress import Progress
from S2DCCore.training.space import check_run_space
from S2DCCore.training.state import gather_rng_states, prepare_run_dir, restore_training_state, save_training_state
from S2DCCore.utils.run_lock import run_lock
from S2DCCore.utils.runtime import resolve_precision

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
            result = _pretrain(Path(data), out, config, resume, device, dist_info)
        leave_together()
        return result
    finally:
        cleanup_distributed()


def _pretrain(data: Path, out: Path, config: PretrainConfig, resume: bool, device: torch.device,
              dist_info: DistInfo) -> Path:
    recipe = methods.get(config.method)
    if dist_info.is_main:
        prepare_run_dir(out, resume, to_dict(config))
    cohort = load_cohort(data)
    cases = cohort.split("training") or cohort.cases
    preprocess = run_preprocess(config)
    store = VolumeStore(cases, preprocess, config.cache_volumes)
    method = recipe.build_method(config).to(device)
    optimizer = torch.optim.AdamW(param_groups(method, config.optim.weight_decay, config.optim.decay_norms_and_biases), lr=config.optim.lr)
    for group in optimizer.param_groups:  # which groups a weight-decay schedule may change (saved with the optimiser)
        group["decayed"] = group["weight_decay"] > 0
    scheduler = make_scheduler(optimizer, config.optim.warmup_steps, config.steps, config.optim.min_lr_ratio)
    precision = resolve_precision(device, config.precision)  # bf16 → fp16 on GPUs that only emulate bf16
    if precision != config.precision and device.type == "cuda":
        log.warning("precision %s is not native on %s; training in %s with loss scaling", config.precision,
                    device, precision)
    scaler = make_scaler(device, precision)
    rng = np.random.default_rng([config.runtime.seed, dist_info.rank])
    if dist_info.is_main:
        check_run_space(out, method, optimizer, steps=config.steps, log_every=config.log_every, resume=resume)
    start_step = 0
    if resume:
        start_step, _ = restore_training_state(out / "checkpoints" / "last", method, optimizer, scheduler, scaler, rng,
                                               rank=dist_info.rank, world_size=dist_info.world_size)
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

    def logged(step: int) -> bool:
        return step % config.log_every == 0 or step == config.steps

    def saved(step: int) -> bool:
        return step % config.save_every == 0 or step == config.steps

    def on_step(step: int, result: StepResult) -> None:
        _schedule_weight_decay(optimizer, step, config)
        if not result.synced:  # numbers stay on the device between log/save steps
            return
        metrics = {"loss": result.loss, **result.parts, "lr": result.lr, "grad_norm": result.grad_norm,
                   "step_s": result.seconds}
        if writer is not None and logged(step):
            writer.write(step, metrics)
        progress.update(step, {k: metrics[k] for k in ("loss", *result.parts)})
        if saved(step):
            rng_states = gather_rng_states(rng)  # a collective: every rank's sampler goes into the checkpoint
            if dist_info.is_main:
                _save(out, step, method, optimizer, scheduler, scaler, rng, config, data, preprocess, rng_states)

    try:
        batches = _batch_source(store, rng, region_shape, config, recipe, method, data)
        run_loop(model, batches, optimizer, scheduler, scaler, device=device, start_step=start_step,
                 total_steps=config.steps, precision=precision, grad_clip=config.optim.grad_clip,
                 on_step=on_step, sync_at=lambda step: logged(step) or saved(step))
    finally:
        if writer is not None:
            writer.close()
    if dist_info.is_main and start_step >= config.steps:
        _export_encoder(out, config.steps, method, config, data, preprocess)  # nothing left to train: re-export
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
        regions = [random_region(store[int(rng.integers(len(store)))], region_shape, rng, config.small_regions)
                   for _ in range(config.batch_size)]
        yield recipe.make_batch(regions, rng, config)


def run_preprocess(config: PretrainConfig):
    """The intensity preprocessing the run's method trains with (Alice: its own CT window, see `AliceConfig`)."""
    own = getattr(methods.get(config.method), "preprocess", None)
    return own(config) if own is not None else config.preprocess


def _save(out: Path, step: int, method, optimizer, scheduler, scaler, rng, config: PretrainConfig, data: Path,
          preprocess, rng_states: list[dict] | None = None) -> None:
    save_training_state(out / "checkpoints" / "last", step, method, optimizer, scheduler, scaler, rng, to_dict(config),
                        rng_states=rng_states)
    _export_encoder(out, step, method, config, data, preprocess)


def _export_encoder(out: Path, step: int, method, config: PretrainConfig, data: Path, preprocess=None) -> None:
    preprocess = preprocess or config.preprocess
    card = {
        "kind": "encoder",
        "method": config.method,
        "architecture": to_dict(config.encoder),
        "encoder": config.encoder.name,
        "feature_size": config.encoder.feature_size,
        "patch_size": config.encoder.patch_size,
        "preset": config.preset,
        "key_prefix": "swinViT.",
        "preprocess": to_dict(preprocess),
        "intensity_preset": preprocess.preset,
        "spacing": None if preprocess.spacing is None else list(preprocess.spacing),
        "orientation": preprocess.orientation,
        "step": step,
        "trained_on": str(data),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    extras = getattr(methods.get(config.method), "card_extras", None)
    card.update(extras(config) if extras is not None else {"token_stage": config.s2dc_model.token_stage})
    save_model_dir(out / "encoder", unwrap(method).encoder_state(), card)
