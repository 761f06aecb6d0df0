"""nnU-Net's post-processing: per structure, keep only its largest connected component, where validation
showed that this helps.

A segmenter can label a few stray islands of a structure far from the structure itself (air outside the
body predicted as lung, a bright spot as bone). nnU-Net removes all but the largest 26-connected component
of a class (the removed voxels become background) and decides per class, on the validation cases, whether
that improves Dice: fat or bowel are legitimately made of many pieces, a lung or the liver is one. Fine-tuning
records the decision in the model card (``postprocess.largest_component``: label values) and `segment`
applies it (``--no-postprocess`` turns it off).
"""

from __future__ import annotations

import numpy as np

# 26-connectivity: diagonal neighbours belong to the same component (the conservative choice for removal).
STRUCTURE = np.ones((3, 3, 3), dtype=bool)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of the boolean ``mask`` (the mask itself when it has ≤ 1)."""
    from scipy import ndimage

    components, n = ndimage.label(mask, structure=STRUCTURE)
    if n <= 1:
        return mask.astype(bool, copy=False)
    sizes = np.bincount(components.reshape(-1), minlength=n + 1)
    sizes[0] = 0
    return components == int(sizes.argmax())


def keep_largest_components(labels: np.ndarray, values, background: int = 0) -> np.ndarray:
    """A copy of ``labels`` where each label value in ``values`` keeps only its largest component; the other
    voxels of that value become ``background``."""
    out = np.array(labels, copy=True)
    for value in values:
        mask = out == value
        if mask.any():
            out[mask & ~largest_component(mask)] = background
    return out


def dice_with_largest_component(pred: np.ndarray, target: np.ndarray, n_classes: int) -> np.ndarray:
    """(K − 1,) Dice of each foreground class c of the index map ``pred`` against ``target`` when only c's
    largest component is kept (removing islands of c changes no other foreground class). NaN where the
    target has no voxel of c, as `S2DCCore.training.validation.dice_from_counts`."""
    dice = np.full(n_classes - 1, np.nan)
    for c in range(1, n_classes):
        truth = target == c
        n_truth = int(truth.sum())
        if n_truth == 0:
            continue
        kept = largest_component(pred == c)
        dice[c - 1] = 2.0 * float((kept & truth).sum()) / max(int(kept.sum()) + n_truth, 1)
    return dice


def choose_largest_component(raw: dict[str, float], kept: dict[str, float]) -> list[str]:
    """Structures (names) whose mean validation Dice is higher with only the largest component kept."""
    return [name for name, value in raw.items()
            if name in kept and np.isfinite(value) and np.isfinite(kept[name]) and kept[name] > value]
