"""Seeded geodesic competition on a voxel grid: every voxel takes the class of the seed it is closest to
along the grid, where a step between two of the 26 neighbours costs their intensity difference.

This is the shortest-path form of GrowCut that Slicer's Grow from seeds computes
(``vtkImageGrowCutSegment``: 26 neighbours, step cost ``|I_p − I_q|``, no distance penalty): homogeneous
regions cost nothing to cross, edges are expensive. It runs Dial's bucket-queue Dijkstra on the intensity
quantised to `LEVELS` steps (edge costs are whole numbers, so the queue needs no heap), compiled with
numba: about as fast as Slicer's C++ filter on the same volume.
"""

from __future__ import annotations

import functools

import numpy as np

# Quantisation of a [0, 1] intensity into whole-number step costs: fine enough that ties between classes
# are rare (255 levels lost 0.15 mean Dice on a noisy CT phantom to tie-breaking; 1000 matched floats).
LEVELS = 1000


def geodesic_labels(intensity: np.ndarray, seeds: np.ndarray, seed_classes: np.ndarray) -> np.ndarray:
    """Class of the geodesically nearest seed for every voxel of ``intensity``.

    Args:
        intensity: (X, Y, Z) values in [0, 1] (clipped; quantised to `LEVELS` steps).
        seeds: (S,) flat voxel indices (repeats allowed: the first class given for a voxel wins).
        seed_classes: (S,) class indices ≥ 0.

    Returns:
        (X, Y, Z) int64 class indices (every voxel of a grid is reachable).
    """
    shape = tuple(int(n) for n in intensity.shape)
    if len(shape) != 3:
        raise ValueError(f"intensity must be 3-D, got shape {shape}")
    levels = np.round(np.clip(intensity, 0.0, 1.0) * LEVELS).astype(np.int32).reshape(-1)
    seeds = np.asarray(seeds, dtype=np.int64).reshape(-1)
    seed_classes = np.asarray(seed_classes, dtype=np.int32).reshape(-1)
    if len(seeds) == 0:
        raise ValueError("no seeds")
    if seeds.min() < 0 or seeds.max() >= levels.size:
        raise ValueError("a seed lies outside the grid")
    labels = _compiled()(levels, shape[0], shape[1], shape[2], seeds, seed_classes, LEVELS)
    return labels.astype(np.int64).reshape(shape)


@functools.cache
def _compiled():
    """`_dial_py` compiled on first use (importing numba costs a second; most commands never grow)."""
    from numba import njit

    return njit(cache=True, nogil=True)(_dial_py)


def _dial_py(levels, nx, ny, nz, seeds, seed_classes, max_step):
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
                    candidate = current + (step if step >= 0 else -step)
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
