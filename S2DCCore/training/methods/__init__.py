"""Pretraining methods by name.

A method module provides ``build_method(config)`` → an ``nn.Module`` whose ``forward(batch)`` returns
`LossTerms` (optionally ``after_step()``, e.g. the EMA update) and whose ``encoder_state()`` is the
encoder's ``swinViT.*`` state dict; ``has_unused_parameters(config)`` (for DDP when a loss weight of 0
leaves a head unused); and its batches, either ``make_batch(regions, rng, config)`` on random regions
of ``views.grid × views.roi``, or ``make_batches(store, rng, config, *, method, data)``, an endless
iterator of batches drawn from the `VolumeStore` itself (for views across volumes or method-sized
crops). Optionally ``card_extras(config)`` adds model-card entries (e.g. ``token_stage``).

Methods: ``s2dc`` (the project's), ``alice`` (Jiang et al., ICCV 2023) and ``swinssl`` (the
SwinUNETR self-supervised baseline of Tang et al., CVPR 2022).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from S2DCCore.errors import UsageError

METHODS = {
    "s2dc": "S2DCCore.training.methods.s2dc",
    "alice": "S2DCCore.training.methods.alice",
    "swinssl": "S2DCCore.training.methods.swinssl",
}


def get(name: str) -> ModuleType:
    """The method module registered as ``name``."""
    if name not in METHODS:
        raise UsageError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    return importlib.import_module(METHODS[name])
