"""Shared fixtures: the four grid geometries every geometry test runs on.

Under pytest-xdist (``tools/test.sh`` runs two workers) each worker, and every process a test starts, uses one
thread: two workers of two threads each on two cores would oversubscribe them.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, "1")
    import torch

    torch.set_num_threads(1)

from testdata import GEOMETRIES, make_affine


@pytest.fixture(params=GEOMETRIES)
def geometry(request) -> tuple[str, np.ndarray]:
    """(name, voxel→RAS affine) for RAS, LPS, oblique and anisotropic grids."""
    return request.param, make_affine(request.param)
