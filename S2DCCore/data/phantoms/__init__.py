"""Synthetic torso phantoms, the project's embedded default data: the cohort generator (`torso`), the
anatomy painted from canonical body coordinates (`anatomy`), each case's warp and random fields
(`geometry`), and the oracle cross-case matcher (`matching`). The generator's API is re-exported here."""

from S2DCCore.data.phantoms.torso import (STRUCTURES, Phantom, PhantomConfig, PhantomGeometry, canonical_grid,
                                          canonical_to_voxel, make_phantom, voxel_to_canonical, write_phantom_cohort)

__all__ = ["STRUCTURES", "PhantomConfig", "Phantom", "make_phantom", "write_phantom_cohort",
           "voxel_to_canonical", "canonical_to_voxel", "canonical_grid", "PhantomGeometry"]
