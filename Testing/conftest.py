"""Shared fixtures: the four grid geometries every geometry test runs on."""

from __future__ import annotations

import numpy as np
import pytest

from testdata import GEOMETRIES, make_affine


@pytest.fixture(params=GEOMETRIES)
def geometry(request) -> tuple[str, np.ndarray]:
    """(name, voxel→RAS affine) for RAS, LPS, oblique and anisotropic grids."""
    return request.param, make_affine(request.param)
