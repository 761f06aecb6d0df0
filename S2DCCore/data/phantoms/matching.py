"""The oracle matcher: exact cross-case correspondence of a phantom cohort (tests and oracle studies).

A phantom cohort's ``dataset.json`` carries an ``s2dc`` block with the generator's seed and
`PhantomConfig`, and case ``n`` is written as ``case_NNN``. Regenerating case ``n`` gives its
``Phantom.geometry``, so a point travels exactly between cases:

    preprocessed voxel → RAS (the preprocessed volume's affine) → the case's voxel (its phantom affine)
    → canonical body mm (`voxel_to_canonical`) → the other case's voxel (`canonical_to_voxel`) → RAS
    → the other preprocessed voxel.

The preprocessed affine (after reorientation, resampling and the foreground crop) is read by running
the cohort's preprocessing once more per case, so any `PreprocessConfig` is handled. A match scores 1
when it lands inside the key volume and 0 otherwise (the view generator then draws another point).
The same canonical point is the same anatomy up to each case's own organ jitter (`phantom_anatomy`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from S2DCCore.data.cohort import Case
from S2DCCore.errors import DataError

CASE_PATTERN = re.compile(r"case_(\d+)$")


def phantom_spec(root: str | Path) -> dict:
    """The ``s2dc`` generator block of a phantom cohort's ``dataset.json``.

    Raises:
        DataError: the cohort was not written by `write_phantom_cohort`.
    """
    manifest = Path(root) / "dataset.json"
    spec = json.loads(manifest.read_text()).get("s2dc") if manifest.is_file() else None
    if not isinstance(spec, dict) or spec.get("generator") != "S2DCCore.data.phantoms":
        raise DataError("the oracle matcher needs a phantom cohort (dataset.json with an 's2dc' generator block, "
                        "written by `s2dc phantoms`)", manifest)
    return spec


def _homogeneous(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return points @ affine[:3, :3].T + affine[:3, 3]


class PhantomOracle:
    """Exact correspondence between the preprocessed volumes of a phantom cohort.

    Args:
        root: the cohort folder (its ``dataset.json`` has the generator block).
        cases: the cases in `VolumeStore` order (index ``i`` of a pair is ``cases[i]``).
        transform: the store's preprocessing (``VolumeStore.transform``), re-run once per case for its affine.
    """

    cross_volume = True

    def __init__(self, root: str | Path, cases: Sequence[Case], transform) -> None:
        from S2DCCore.data.phantoms import PhantomConfig

        spec = phantom_spec(root)
        self.seed = int(spec["seed"])
        self.config = PhantomConfig(**spec["config"])
        self.cases, self.transform = list(cases), transform
        self._phantom: dict[int, tuple] = {}
        self._affine: dict[int, np.ndarray] = {}

    def case_number(self, index: int) -> int:
        """The generator's case number of store case ``index`` (from its ``case_NNN`` name)."""
        found = CASE_PATTERN.search(self.cases[index].name)
        if found is None:
            raise DataError("not a phantom case name (case_NNN)", self.cases[index].image)
        return int(found.group(1))

    def geometry(self, index: int):
        """(PhantomGeometry, phantom voxel → RAS affine) of store case ``index``, regenerated once."""
        if index not in self._phantom:
            from S2DCCore.data.phantoms import make_phantom

            phantom = make_phantom(self.case_number(index), self.seed, self.config)
            self._phantom[index] = (phantom.geometry, phantom.affine)
        return self._phantom[index]

    def preprocessed_affine(self, index: int) -> np.ndarray:
        """(4, 4) voxel → RAS of store case ``index`` after preprocessing."""
        if index not in self._affine:
            image = self.transform({"image": self.cases[index].image})["image"]
            self._affine[index] = np.asarray(image.affine, dtype=np.float64)
        return self._affine[index]

    def map_points(self, query_index: int, points: np.ndarray, key_index: int) -> np.ndarray:
        """Continuous preprocessed voxel coordinates in case ``key_index`` of ``points`` (N, 3) of ``query_index``."""
        from S2DCCore.data.phantoms import canonical_to_voxel, voxel_to_canonical

        q_geometry, q_affine = self.geometry(query_index)
        k_geometry, k_affine = self.geometry(key_index)
        world = _homogeneous(np.atleast_2d(np.asarray(points, dtype=np.float64)), self.preprocessed_affine(query_index))
        canonical = voxel_to_canonical(q_geometry, _homogeneous(world, np.linalg.inv(q_affine)))
        key_world = _homogeneous(canonical_to_voxel(k_geometry, canonical), k_affine)
        return _homogeneous(key_world, np.linalg.inv(self.preprocessed_affine(key_index)))

    def pair(self, query_index: int, query: torch.Tensor, key_index: int, key: torch.Tensor):
        shape = np.asarray(key.shape[1:])

        def match(point: np.ndarray) -> tuple[np.ndarray, float]:
            mapped = np.rint(self.map_points(query_index, point, key_index)[0]).astype(np.int64)
            inside = bool(np.all(mapped >= 0) and np.all(mapped < shape))
            return np.clip(mapped, 0, shape - 1), 1.0 if inside else 0.0

        return match
