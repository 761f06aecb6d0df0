"""Seeded geodesic competition on a voxel grid: every voxel takes the label of the seed it is closest to
along the grid, where a step between 6-neighbours costs the distance between their feature vectors.

With the intensity as the only feature this is the shortest-path form of GrowCut (Slicer's Grow from
seeds): homogeneous regions cost nothing to cross, edges are expensive. Adding class scores of a
classifier as features makes a change of predicted structure an edge too, where the image has none
(lobe boundaries inside grey matter, organs of equal intensity that touch). Multi-source Dijkstra
(`scipy.sparse.csgraph.dijkstra` with ``min_only``) on the 6-connected grid.
"""

from __future__ import annotations

import numpy as np

# Added to every step so that ties in flat regions resolve by (tiny) grid distance.
STEP_EPS = 1e-6


def grid_graph(features: np.ndarray):
    """The 6-connected grid of ``features`` (D, X, Y, Z) as a sparse upper-triangular matrix whose entries
    are the Euclidean feature distances between neighbours (+ `STEP_EPS`)."""
    from scipy import sparse

    shape = features.shape[1:]
    index = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    rows, cols, weights = [], [], []
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        step = features[(slice(None), *lo)] - features[(slice(None), *hi)]
        weights.append((np.sqrt(np.einsum("d...,d...->...", step, step)) + STEP_EPS).ravel().astype(np.float64))
        rows.append(index[tuple(lo)].ravel())
        cols.append(index[tuple(hi)].ravel())
    n = index.size
    return sparse.csr_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))


def geodesic_labels(graph, shape, seeds: np.ndarray, seed_classes: np.ndarray) -> np.ndarray:
    """Class of the nearest seed (geodesically) for every node of ``graph``.

    Args:
        graph: from `grid_graph`.
        shape: the grid's shape.
        seeds: (S,) flat node indices (repeats allowed; the first class given for a node wins).
        seed_classes: (S,) class indices.

    Returns:
        (X, Y, Z) int64 class indices; nodes no seed reaches (none on a connected grid) get class 0.
    """
    from scipy.sparse import csgraph

    nodes, first = np.unique(seeds, return_index=True)
    _, _, sources = csgraph.dijkstra(graph, directed=False, indices=nodes, min_only=True,
                                     return_predecessors=True)
    lookup = np.zeros(graph.shape[0], dtype=np.int64)
    lookup[nodes] = np.asarray(seed_classes)[first]
    return np.where(sources >= 0, lookup[np.maximum(sources, 0)], 0).reshape(shape)
