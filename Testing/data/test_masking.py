"""Alice's column masks: counts, columns through the depth, the image's device, error paths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from S2DCCore.data.views.masking import apply_column_mask, sample_column_mask


def test_mask_count_follows_the_official_ceiling():
    rng = np.random.default_rng(0)
    for roi, ratio in (((64, 64, 64), 0.75), ((64, 32, 32), 0.75), ((48, 48, 16), 0.5), ((32, 32, 8), 0.0)):
        grid = sample_column_mask(rng, roi, 16, ratio)
        assert grid.shape == (roi[0] // 16, roi[1] // 16) and grid.dtype == bool
        assert grid.sum() == math.ceil(grid.size * ratio)


def test_masked_voxels_are_whole_columns_through_z():
    rng = np.random.default_rng(1)
    x = torch.rand(2, 1, 32, 48, 8) + 1.0  # no zeros before masking
    grids = torch.from_numpy(np.stack([sample_column_mask(rng, (32, 48, 8), 16, 0.5) for _ in range(2)]))
    masked = apply_column_mask(x, grids)
    zero = masked == 0
    assert torch.equal(zero.all(dim=-1), zero.any(dim=-1))  # a voxel is masked iff its whole z column is
    expected = grids.repeat_interleave(16, 1).repeat_interleave(16, 2)
    assert torch.equal(zero[:, 0, :, :, 0], expected)
    assert torch.equal(masked[~zero], x[~zero])


def test_mask_is_applied_on_the_images_device():
    x = torch.ones(1, 1, 32, 32, 4, device="meta")  # any non-CPU device: the mask must follow the image
    grid = torch.zeros(1, 2, 2, dtype=torch.bool)
    assert apply_column_mask(x, grid).device == x.device


def test_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="multiples"):
        sample_column_mask(rng, (40, 32, 32), 16)
    with pytest.raises(ValueError, match="ratio"):
        sample_column_mask(rng, (32, 32, 32), 16, 1.5)
    with pytest.raises(ValueError, match="does not fit"):
        apply_column_mask(torch.ones(2, 1, 32, 32, 4), torch.zeros(1, 2, 2, dtype=torch.bool))
