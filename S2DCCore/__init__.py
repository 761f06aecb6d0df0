"""S2DCCore: the headless core of the S2DC 3D Slicer extension.

Structure-aware self-supervised learning (S²DC, ICCV 2025; Alice, ICCV 2023) for 3D medical images:
data layer, pretraining, fine-tuning and inference. The core never imports Slicer, Qt or VTK, and
``import S2DCCore`` does not import torch: the heavy parts are imported where they are used.

``S2DCCore.segment`` and ``S2DCCore.embed`` (from `S2DCCore.inference`) are loaded on first access
(PEP 562), so they are available here without importing torch at package import.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "embed", "segment"]

_LAZY = {"segment": "S2DCCore.inference.segment", "embed": "S2DCCore.inference.embed"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this hook
        return value
    raise AttributeError(f"module 'S2DCCore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
