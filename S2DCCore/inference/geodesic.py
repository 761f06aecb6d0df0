"""Seeded geodesic competition on a voxel grid: every voxel takes the class of the seed it is closest to
along the grid, where a step between two of the 26 neighbours costs their intensity difference.

This is the shortest-path form of GrowCut that Slicer's Grow from seeds computes
(``vtkImageGrowCutSegment``: 26 neighbours, step cost ``|I_p − I_q|``, no distance penalty): homogeneous
regions cost nothing to cross, edges are expensive. It runs Dial's bucket-queue Dijkstra on the intensity
quantised to `LEVELS` steps (edge costs are whole numbers, so the queue needs no heap), compiled with
numba: about as fast as Slicer's C++ filter on the same volume.

`grow` adds one thing Grow from seeds lacks: a per-class **intensity penalty** on entering a voxel
(`seed_penalties`), ``w · min(−ln r_c(I), MAX_PENALTY_NATS)`` levels, where ``r_c`` is a kernel density
of class c's seed intensities scaled to peak 1. A class still crosses homogeneous regions for free
where its seeds say it belongs, but a front that has leaked into a region of another intensity (a kidney
into the liver through a faint edge) pays for every voxel it takes there, so the long path from the
region's own seed wins. Without a penalty the competition is exactly Grow from seeds'.
"""

from __future__ import annotations

import functools

import numpy as np

# Quantisation of a [0, 1] intensity into whole-number step costs: fine enough that ties between classes
# are rare (255 levels lost 0.15 mean Dice on a noisy CT phantom to tie-breaking; 1000 matched floats).
LEVELS = 1000
# `seed_penalties`: levels per nat of the class's own intensity improbability, the cap in nats, and the
# narrowest kernel (levels). Weight 1 measured 2026-12-01 on 3 CT and 4 MR phantoms and both brains:
# CT +0.02 to +0.05 Dice, MR −0.01 to +0.01, brains −0.02 to +0.01; weights 2–3 gave CT more and MR less.
PENALTY_WEIGHT = 1.0
MAX_PENALTY_NATS = 10.0
MIN_BANDWIDTH_LEVELS = 10.0


def quantised(intensity: np.ndarray) -> np.ndarray:
    """``intensity`` in [0, 1] (clipped) as whole levels 0…`LEVELS`, int32, flat."""
    return np.round(np.clip(intensity, 0.0, 1.0) * LEVELS).astype(np.int32).reshape(-1)


def seed_penalties(intensity: np.ndarray, seeds: np.ndarray, seed_classes: np.ndarray, *,
                   weight: float = PENALTY_WEIGHT) -> np.ndarray:
    """(K, `LEVELS` + 1) int32: what a front of class c pays (in levels) to enter a voxel of each level.

    ``weight · min(−ln r_c(l), MAX_PENALTY_NATS)`` rounded, where ``r_c`` is the Gaussian kernel density of
    class c's seed levels (bandwidth: Silverman's rule, at least `MIN_BANDWIDTH_LEVELS`) divided by its
    maximum; K = max(seed_classes) + 1 (a class without seeds pays nothing).
    """
    levels = quantised(np.asarray(intensity).reshape(-1)[np.asarray(seeds, dtype=np.int64).reshape(-1)])
    levels = levels.astype(np.float64)
    seed_classes = np.asarray(seed_classes).reshape(-1)
    grid = np.arange(LEVELS + 1, dtype=np.float64)
    table = np.zeros((int(seed_classes.max()) + 1, LEVELS + 1), dtype=np.int32)
    for c in np.unique(seed_classes):
        own = levels[seed_classes == c]
        bandwidth = max(MIN_BANDWIDTH_LEVELS, 1.06 * float(own.std()) * len(own) ** -0.2)
        density = np.exp(-0.5 * ((grid[None, :] - own[:, None]) / bandwidth) ** 2).sum(axis=0)
        nats = np.minimum(-np.log(np.maximum(density / density.max(), 1e-300)), MAX_PENALTY_NATS)
        table[c] = np.round(weight * nats).astype(np.int32)
    return table


def geodesic_labels(intensity: np.ndarray, seeds: np.ndarray, seed_classes: np.ndarray,
                    penalties: np.ndarray | None = None) -> np.ndarray:
    """Class of the geodesically nearest seed for every voxel of ``intensity``.

    Args:
        intensity: (X, Y, Z) values in [0, 1] (clipped; quantised to `LEVELS` steps).
        seeds: (S,) flat voxel indices (repeats allowed: the first class given for a voxel wins).
        seed_classes: (S,) class indices ≥ 0.
        penalties: optional (≥ K, `LEVELS` + 1) whole-number cost of entering a voxel of each level, per
            class (`seed_penalties`); none: Grow from seeds' competition.

    Returns:
        (X, Y, Z) int64 class indices (every voxel of a grid is reachable).
    """
    shape = tuple(int(n) for n in intensity.shape)
    if len(shape) != 3:
        raise ValueError(f"intensity must be 3-D, got shape {shape}")
    levels = quantised(intensity)
    seeds = np.asarray(seeds, dtype=np.int64).reshape(-1)
    seed_classes = np.asarray(seed_classes, dtype=np.int32).reshape(-1)
    if len(seeds) == 0:
        raise ValueError("no seeds")
    if seeds.min() < 0 or seeds.max() >= levels.size:
        raise ValueError("a seed lies outside the grid")
    k = int(seed_classes.max()) + 1
    if penalties is None:
        penalties = np.zeros((k, LEVELS + 1), dtype=np.int32)
    penalties = np.ascontiguousarray(penalties, dtype=np.int32)
    if penalties.ndim != 2 or penalties.shape[0] < k or penalties.shape[1] != LEVELS + 1 or penalties.min() < 0:
        raise ValueError(f"penalties must be ≥ 0 with shape (≥ {k}, {LEVELS + 1}), got {penalties.shape}")
    labels = _compiled()(levels, shape[0], shape[1], shape[2], seeds, seed_classes, penalties,
                         LEVELS + int(penalties.max()))
    return labels.astype(np.int64).reshape(shape)


@functools.cache
def _compiled():
    """`_dial_py` compiled on first use (importing numba costs a second; most commands never grow)."""
    from numba import njit

    return njit(cache=True, nogil=True)(_dial_py)


def _dial_py(levels, nx, ny, nz, seeds, seed_classes, penalties, max_step):
    """Dial's algorithm: buckets ``d mod (max_step + 1)`` of singly linked entries; a voxel is settled when
    it is popped with its current distance (stale entries are skipped)."""
    n = nx * ny * nz
    infinite = np.iinfo(np.int32).max
    dist = np.full(n, infinite, dtype=np.int32)
    label = np.full(n, -1, dtype=np.int32)
    buckets = max_step + 1
    head = np.full(buckets, -1, dtype=np.int32)
    capacity = max(1024, n)
    entry_node = np.empty(capacity, dtype=np.int32)
    entry_next = np.empty(capacity, dtype=np.int32)
    used = 0
    free = -1
    pending = 0
    for s in range(seeds.shape[0]):
        i = seeds[s]
        if label[i] < 0:
            dist[i] = 0
            label[i] = seed_classes[s]
            entry_node[used] = i
            entry_next[used] = head[0]
            head[0] = used
            used += 1
            pending += 1
    current = 0
    plane = ny * nz
    while pending > 0:
        bucket = current % buckets
        e = head[bucket]
        if e < 0:
            current += 1
            continue
        head[bucket] = entry_next[e]
        i = entry_node[e]
        entry_next[e] = free
        free = e
        pending -= 1
        if dist[i] != current:
            continue  # stale: the voxel was reached more cheaply since this entry was queued
        x = i // plane
        r = i - x * plane
        y = r // nz
        z = r - y * nz
        own = label[i]
        level = levels[i]
        for dx in range(-1, 2):
            xx = x + dx
            if xx < 0 or xx >= nx:
                continue
            for dy in range(-1, 2):
                yy = y + dy
                if yy < 0 or yy >= ny:
                    continue
                row = (xx * ny + yy) * nz
                for dz in range(-1, 2):
                    zz = z + dz
                    if zz < 0 or zz >= nz:
                        continue
                    j = row + zz
                    step = levels[j] - level
                    candidate = current + (step if step >= 0 else -step) + penalties[own, levels[j]]
                    if candidate < dist[j]:
                        dist[j] = candidate
                        label[j] = own
                        if free >= 0:
                            f = free
                            free = entry_next[f]
                        else:
                            if used == entry_node.shape[0]:
                                grown = np.empty(2 * used, dtype=np.int32)
                                grown[:used] = entry_node
                                entry_node = grown
                                grown = np.empty(2 * used, dtype=np.int32)
                                grown[:used] = entry_next
                                entry_next = grown
                            f = used
                            used += 1
                        target = candidate % buckets
                        entry_node[f] = j
                        entry_next[f] = head[target]
                        head[target] = f
                        pending += 1
    return label
