"""Pretraining methods by name. A method module provides ``build_method(config)`` → an ``nn.Module``
whose ``forward(batch)`` returns `LossTerms` (and optionally ``after_step()``), ``make_batch(regions, rng,
config)`` and ``has_unused_parameters(config)`` (for DDP when a loss weight of 0 leaves a head unused)."""

from __future__ import annotations

import importlib
from types import ModuleType

from S2DCCore.errors import UsageError

METHODS = {"s2dc": "S2DCCore.training.methods.s2dc"}


def get(name: str) -> ModuleType:
    """The method module registered as ``name``."""
    if name not in METHODS:
        raise UsageError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    return importlib.import_module(METHODS[name])
