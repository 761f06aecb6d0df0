"""Memory estimates and the budget check (the refusal itself runs end to end in test_segment / test_cli_infer)."""

from __future__ import annotations

import numpy as np
import pytest

from S2DCCore.errors import UsageError
from S2DCCore.inference import memory
from S2DCCore.geometry import Grid, model_grid
from S2DCCore.inference.memory import (MemoryBudgetError, available_host_memory, check_budget, estimate_inference,
                                       parse_size, window_activation_bytes)

GIB = 2**30
BASE = {"feature_size": 48, "patch_size": 2, "window_size": 7, "num_heads": [3, 6, 12, 24]}


@pytest.mark.parametrize("text, expected", [("6G", 6 * GIB), ("6GB", 6 * GIB), ("6 GiB", 6 * GIB),
                                            ("512m", 512 * 2**20), ("1.5g", int(1.5 * GIB)), ("1000", 1000),
                                            (2048, 2048)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["lots", "-1G", "0", "6X"])
def test_parse_size_refuses(text):
    with pytest.raises(UsageError):
        parse_size(text)


def test_available_host_memory_reads_meminfo():
    available = available_host_memory()
    assert available is not None and 0 < available < 2**50


def test_activation_estimate_grows_with_window_width_and_classes():
    small = window_activation_bytes((64,) * 3, feature_size=12, out_channels=2)
    assert window_activation_bytes((96,) * 3, feature_size=12, out_channels=2) > small
    assert window_activation_bytes((64,) * 3, feature_size=48, out_channels=2) > small
    assert window_activation_bytes((64,) * 3, feature_size=12, out_channels=20) > small
    assert window_activation_bytes((64,) * 3, feature_size=12, out_channels=2, decoder=False) <= small
    # An unknown network (a callable): only its output is counted.
    assert window_activation_bytes((32,) * 3, feature_size=None, out_channels=2) == 4 * 32**3 * 4


def _large_ct_estimate(shape=(512, 512, 400)):
    """The issue's case: a 512×512×400 CT (0.8×0.8×1 mm), paper-size model, 14 classes, 96³ windows."""
    grid = Grid(shape, np.diag([0.8, 0.8, 1.0, 1.0]))
    target = model_grid(grid, (1.5, 1.5, 1.5))
    return estimate_inference(input_shape=grid.shape, model_shape=target.shape, roi=(96, 96, 96), out_channels=14,
                              output_bytes_per_voxel=1, feature_size=48, n_parameters=62_000_000, architecture=BASE,
                              summary="large CT")


def test_a_large_ct_fits_a_machine_with_8_gb(monkeypatch):
    estimate = _large_ct_estimate()
    monkeypatch.setattr(memory, "available_host_memory", lambda: 8 * 10**9)
    check_budget(estimate, device="cpu")  # 80 % of 8 GB available
    assert 2 * GIB < estimate.host < 6 * GIB
    assert estimate.parts["stitched output"] == 4 * 15 * 274 * 274 * 267  # (K + 1) float32 maps on the 1.5 mm grid


def test_the_refusal_names_the_need_the_budget_and_its_origin(monkeypatch):
    estimate = _large_ct_estimate((1024, 1024, 800))
    monkeypatch.setattr(memory, "available_host_memory", lambda: 8 * 10**9)
    with pytest.raises(MemoryBudgetError) as info:
        check_budget(estimate, device="cpu", path="big.nii.gz")
    message = str(info.value)
    assert message.startswith("big.nii.gz: needs about ") and "80% of MemAvailable" in message
    assert "stitched output" in message and "--memory-budget" in message
    check_budget(estimate, device="cpu", budget=64 * GIB)  # an explicit budget overrides the default
