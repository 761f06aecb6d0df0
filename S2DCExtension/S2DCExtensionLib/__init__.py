"""Library of the S2DC Slicer module.

Qt-free parts (MRML, VTK and numpy only; tested with pytest on ``slicer-core``): `Logic` (``S2DCLogic``,
the console/batch API), `MRMLBridge`, `Segmentations`, `Terminology`, `VolumeFiles`, `WorkerProcess`,
`Protocol`, `Commands`, `ModelCards`, `Dependencies`, `Walkthrough`. Desktop-only parts (Qt): `Parameters`,
`Widget`, `SelfTest`. Nothing heavy (torch, monai) is imported here or anywhere in Slicer's process.
"""

import sys


def forgetModules(package: str = __name__) -> list[str]:
    """Drop ``package`` and its submodules from ``sys.modules`` so the next import reloads them (the
    module's Reload; ``importlib`` semantics, no ``imp``). Returns the names dropped."""
    names = [name for name in sys.modules if name == package or name.startswith(package + ".")]
    for name in names:
        del sys.modules[name]
    return names


def __getattr__(name: str):
    # ``from S2DCExtensionLib import S2DCLogic`` without importing MRML for the pure modules.
    if name in ("S2DCLogic", "Job", "EmbeddingNodes", "WorkerError", "JobCancelled"):
        from S2DCExtensionLib import Logic

        return getattr(Logic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
