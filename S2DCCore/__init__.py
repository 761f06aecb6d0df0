"""S2DCCore: the headless core of the S2DC 3D Slicer extension.

Structure-aware self-supervised learning (S²DC, ICCV 2025; Alice, ICCV 2023) for 3D medical images:
data layer, pretraining, fine-tuning and inference. The core never imports Slicer, Qt or VTK, and
``import S2DCCore`` does not import torch: the heavy parts are imported where they are used.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
