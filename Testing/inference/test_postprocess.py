"""nnU-Net's largest-component post-processing: the pure functions on hand-made masks, the decision rule, and
`segment_image` applying the model card's choice on the input grid (``--no-postprocess`` turns it off)."""

from __future__ import annotations

import numpy as np
import pytest

from S2DCCore.inference.postprocess import (choose_largest_component, dice_with_largest_component,
                                            keep_largest_components, largest_component)


def two_blobs() -> np.ndarray:
    mask = np.zeros((10, 10, 10), dtype=bool)
    mask[1:5, 1:5, 1:5] = True  # 64 voxels
    mask[7:9, 7:9, 7:9] = True  # 8 voxels
    return mask


def test_largest_component_keeps_the_bigger_blob_and_counts_diagonal_neighbours():
    kept = largest_component(two_blobs())
    assert kept.sum() == 64 and kept[1:5, 1:5, 1:5].all()
    diagonal = np.zeros((4, 4, 4), dtype=bool)
    diagonal[0, 0, 0] = diagonal[1, 1, 1] = True  # 26-connected: one component
    assert largest_component(diagonal).sum() == 2
    assert not largest_component(np.zeros((3, 3, 3), dtype=bool)).any()


def test_keep_largest_components_only_touches_the_chosen_values():
    labels = np.zeros((10, 10, 10), dtype=np.uint8)
    labels[two_blobs()] = 3
    labels[0, 9, 0] = labels[9, 0, 9] = 5  # two single voxels of another structure
    out = keep_largest_components(labels, [3])
    assert (out == 3).sum() == 64 and out[7:9, 7:9, 7:9].max() == 0
    assert (out == 5).sum() == 2  # not chosen: untouched
    assert (labels == 3).sum() == 72  # the input is not modified


def test_dice_with_largest_component_by_hand():
    pred = np.zeros((10, 10, 10), dtype=np.int64)
    pred[two_blobs()] = 1
    target = np.zeros_like(pred)
    target[1:5, 1:5, 1:5] = 1  # the big blob is right, the small one is a false island
    target[0, 0, 9] = 2        # class 2 is in the target but never predicted
    dice = dice_with_largest_component(pred, target, 4)
    assert dice[0] == pytest.approx(1.0)          # raw Dice would be 2·64 / (72 + 64)
    assert dice[1] == pytest.approx(0.0) and np.isnan(dice[2])


def test_choose_keeps_only_structures_that_improve():
    raw = {"lung": 0.70, "fat": 0.81, "heart": float("nan"), "liver": 0.8}
    kept = {"lung": 0.90, "fat": 0.71, "heart": 0.5, "liver": 0.8}
    assert choose_largest_component(raw, kept) == ["lung"]


def test_segment_applies_the_cards_choice(tmp_path):
    """Two bright balls, one small: with the card's ``largest_component: [1]`` only the large one stays."""
    import torch

    from S2DCCore.inference.model_io import LoadedModel
    from S2DCCore.inference.segment import segment_image
    from S2DCCore.io.image import Image

    spacing = 1.5
    affine = np.diag([spacing, spacing, spacing, 1.0])
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in (40, 36, 32)], indexing="ij"), axis=-1) * spacing
    big = 9.0 - np.linalg.norm(ijk - np.array([18.0, 18.0, 18.0]), axis=-1)
    small = 4.0 - np.linalg.norm(ijk - np.array([48.0, 40.0, 36.0]), axis=-1)
    image = Image(np.where((big > 0) | (small > 0), 40.0, -40.0).astype(np.float32), affine)  # far from 0.5

    def predict(x):
        inside = (x > 0.5).float()
        return torch.cat([1.0 - inside, inside], dim=1)

    card = {"kind": "segmenter", "roi": [32, 32, 32], "spacing": [spacing] * 3, "orientation": "RAS",
            "preprocess": {"preset": "ct", "ct_window": [-50.0, 50.0]}, "labels": {"0": "background", "1": "ball"},
            "postprocess": {"largest_component": [1]}}
    model = LoadedModel(card=card, segmenter=predict)
    raw = segment_image(image, model, postprocess=False).labels
    kept = segment_image(image, model).labels
    assert np.array_equal(raw == 1, (big > 0) | (small > 0))
    assert np.array_equal(kept == 1, big > 0) and (small > 0).sum() > 50
