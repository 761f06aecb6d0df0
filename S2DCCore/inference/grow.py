"""Growing a segmentation from seeds: the default of ``s2dc propagate``.

Three steps, each fitted to the user's own seeds, on the input's intensity corrected for a smooth MR gain
where one is found (`S2DCCore.inference.bias_field`: fitted to a quick competition on a ≤ `BIAS_NODES`
grid; non-negative images only, applied only if it explains a good part of the within-class spread):

1. **Geodesic competition** (`S2DCCore.inference.geodesic`, Slicer's Grow from seeds computed the same
   way) on the input grid, coarsened by the smallest integer stride that keeps at most
   `MAX_COMPETITION_NODES` voxels, on the intensity mapped to [0, 1] and lightly denoised (Gaussian,
   `DENOISE_SIGMA` grid voxels): noise no longer adds up along the paths, so fronts stop at real edges;
   entering a voxel whose intensity is unlike the class's own seeds costs extra (`seed_penalties`), so a
   front that leaked through a faint edge does not take the region behind it.
2. **Refinement at the input's own resolution**: per class, ``β · log(G + δ) + W · f + b`` where ``G`` is
   the competition's label (one-hot, interpolated to the input grid) and ``f`` the input's normalised
   intensity, its square and a 1 mm blur. β, W and b are fitted on the seeds with ``G`` computed
   **without** each seed's own stroke (two folds of seed components, on a grid of at most
   `MAX_FOLD_NODES` voxels), so β says how far the geodesic labels can be trusted on this image: near 0
   where intensity alone separates the classes (brain tissue), large where it does not (organs of equal
   density, lobes). The intensity model is kept only if it also predicts held-out strokes better than
   the geodesic labels alone (`intensity_generalises`); otherwise the refinement is β·log(G + δ) alone.
3. **Edge-preserving smoothing of the class posteriors** (softmax of the refinement), by the guided filter
   (`S2DCCore.inference.guided_filter`, `FILTER_RADIUS` voxels, guided by the intensity), when it predicts
   held-out strokes better (`filter_generalises`): on a noisy image it outvotes voxels that noise tipped
   into a neighbour's class; on a clean one with thin structures (the MNI152 template's grey matter) the
   held-out seeds refuse it.

Measured against Grow from seeds on the same seeds (``benchmarks/propagate.py``; benchmarks/README.md):
≥ +0.05 Dice on all 8 rows (CT and MR phantoms, Colin27 lobes, MNI152 tissue; random seeds and strokes).
It replaced a default that added class probabilities of an MLP on the encoder's embeddings to the
competition's step cost (worse on 7 of 8 rows: fitted from 20 seeds per class or a few strokes, those
probabilities were worse evidence than the intensity; the encoder-based classifiers remain available as
``--method knn|linear``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from S2DCCore.inference.bias_field import BiasField, evaluate, fit_bias_field, unit_coordinates
from S2DCCore.inference.geodesic import geodesic_labels, seed_penalties
from S2DCCore.geometry import SLAB, Grid, index_map, sample_points, slab_points, strided_grid
from S2DCCore.inference.guided_filter import guided_filter

# The competition runs on the input grid coarsened to at most this many voxels (the 160³ phantoms stay
# native; 1 mm brains of 7–9 M voxels run at 2 mm).
MAX_COMPETITION_NODES = 4_500_000
# The two held-out competitions that fit β run on at most this many voxels.
MAX_FOLD_NODES = 1_000_000
# The quick competition the gain is fitted to runs on at most this many voxels.
BIAS_NODES = 300_000
# Gaussian denoising of the competition's intensity (grid voxels).
DENOISE_SIGMA = 0.7
# The refinement's blur of the input intensity (mm).
FINE_SIGMA_MM = 1.0
# The guided filter of the class posteriors (`filter_generalises`): window half-width (input voxels), ridge term
# (squared units of the [0, 1] intensity), held-out seeds scored per class and fold, and the voxels filtered
# at a time (slabs of whole slices).
FILTER_RADIUS = 3
FILTER_EPS = 0.01
FILTER_PATCHES_PER_CLASS = 64
FILTER_SLAB_VOXELS = 4_000_000
# Floor added to the geodesic one-hot before the log (the refinement can overrule a label, never ignore it).
GEODESIC_FLOOR = 0.05


@dataclass
class GrowResult:
    """Class indices on the input grid and what the fit decided."""

    classes: np.ndarray
    competition_grid: Grid
    beta: float
    bias: BiasField | None = None  # the gain fitted (None: not fitted); applied if ``bias.useful``
    intensity_model: bool = True  # the refinement's intensity model was used (`intensity_generalises`)
    filtered: bool = False  # the class posteriors were guided-filtered (`filter_generalises`)


def coarsened(grid: Grid, max_nodes: int) -> tuple[Grid, int]:
    """``grid`` coarsened by the smallest integer stride that keeps ≤ ``max_nodes`` voxels."""
    stride = max(1, math.ceil((int(np.prod(grid.shape)) / max_nodes) ** (1 / 3)))
    shape = tuple(math.ceil(n / stride) for n in grid.shape)
    return (grid if stride == 1 else strided_grid(grid, stride, shape)), stride


def block_mean(volume: np.ndarray, stride: int, shape) -> np.ndarray:
    """Mean of each ``stride³`` block (edge-padded), i.e. the volume on the strided grid."""
    if stride == 1:
        return volume.astype(np.float32, copy=False)
    padded = np.pad(volume, [(0, s * stride - n) for s, n in zip(shape, volume.shape)], mode="edge")
    return padded.reshape(shape[0], stride, shape[1], stride, shape[2], stride).mean(axis=(1, 3, 5)).astype(np.float32)


def robust_unit(volume: np.ndarray) -> np.ndarray:
    """``volume`` mapped from its 0.5–99.5 percentiles to [0, 1] (clipped), float32."""
    low, high = (float(v) for v in np.percentile(volume, (0.5, 99.5)))
    return np.clip((volume - low) / (high - low if high > low else 1.0), 0.0, 1.0).astype(np.float32)


def competition_intensity(unit: np.ndarray, input_grid: Grid, max_nodes: int) -> tuple[Grid, np.ndarray]:
    """The competition grid (`coarsened`) and the denoised intensity on it, from ``unit`` in [0, 1]."""
    from scipy import ndimage

    grid, stride = coarsened(input_grid, max_nodes)
    volume = block_mean(unit, stride, grid.shape)
    return grid, ndimage.gaussian_filter(volume, DENOISE_SIGMA, mode="nearest").astype(np.float32)


def seed_nodes(voxels: np.ndarray, input_grid: Grid, grid: Grid) -> np.ndarray:
    """Flat indices on ``grid`` of the input ``voxels`` (S, 3) (nearest node)."""
    mapping = index_map(grid, input_grid)
    points = voxels.astype(np.float64) @ mapping[:3, :3].T + mapping[:3, 3]
    cells = np.clip(np.round(points).astype(np.int64), 0, np.asarray(grid.shape) - 1)
    return np.ravel_multi_index(tuple(cells.T), grid.shape)


class _Adam:
    """Adam with decoupled weight decay on a fixed list of tensors (no ``torch.optim``: importing it pulls in
    TorchDynamo, seconds of start-up for a fit that takes a fraction of that)."""

    def __init__(self, params, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999), eps: float = 1e-8):
        import torch

        self.params, self.lr, self.wd, self.betas, self.eps, self.t = params, lr, weight_decay, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    def step(self, grads) -> None:
        import torch

        self.t += 1
        b1, b2 = self.betas
        with torch.no_grad():
            for p, g, m, v in zip(self.params, grads, self.m, self.v):
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v / (1 - b2**self.t)).sqrt_().add_(self.eps)
                if self.wd:
                    p.mul_(1 - self.lr * self.wd)
                p.addcdiv_(m, denom, value=-self.lr / (1 - b1**self.t))


def seed_folds(nodes: np.ndarray, classes: np.ndarray, shape, seed: int = 0) -> np.ndarray:
    """Fold (0 or 1) of every seed node: its connected stroke (per class, 26-connected on the work grid)
    goes to a random fold; a class with a single stroke is in both folds (fold −1)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    folds = np.full(len(nodes), -1, dtype=np.int64)
    for c in np.unique(classes):
        own = classes == c
        mask = np.zeros(int(np.prod(shape)), dtype=bool)
        mask[nodes[own]] = True
        components, n = ndimage.label(mask.reshape(shape), structure=np.ones((3, 3, 3)))
        if n < 2:
            continue
        parity = rng.permutation(n) % 2  # balanced halves
        folds[own] = parity[components.reshape(-1)[nodes[own]] - 1]
    return folds


def fit_refinement(geodesic: np.ndarray, fine: np.ndarray, y: np.ndarray, n_classes: int, *, l2: float = 1e-3,
                   iterations: int = 300, intensity: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """Fit ``logits = β·log(G + δ) + f @ W + b`` on the seeds (class-balanced, Adam).

    Args:
        geodesic: (S, K) one-hot geodesic labels at the seeds, computed without each seed's own stroke.
        fine: (S, F) fine features (already standardised). y: (S,) classes.
        intensity: False fits β alone (W = 0, b = 0: the geodesic labels as they are).

    Returns:
        (β ≥ 0, W (F, K), b (K,)).
    """
    import torch

    g = torch.log(torch.as_tensor(geodesic, dtype=torch.float32) + GEODESIC_FLOOR)
    f = torch.as_tensor(fine, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    counts = torch.bincount(yt, minlength=n_classes).clamp(min=1).float()
    weight = counts.sum() / (n_classes * counts)
    raw_beta = torch.zeros((), requires_grad=True)
    w = torch.zeros(f.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    params = [raw_beta, w, b] if intensity else [raw_beta]
    with torch.enable_grad():
        adam = _Adam(params, lr=0.05)
        for _ in range(iterations):
            logits = torch.nn.functional.softplus(raw_beta) * g + f @ w + b
            loss = torch.nn.functional.cross_entropy(logits, yt, weight=weight) + l2 * (w**2).sum()
            adam.step(torch.autograd.grad(loss, params))
    beta = float(torch.nn.functional.softplus(raw_beta.detach()))
    return beta, w.detach().numpy(), b.detach().numpy()


def balanced_log_loss(logits: np.ndarray, y: np.ndarray, n_classes: int) -> float:
    """Class-balanced mean negative log-likelihood of ``y`` under softmax(``logits``) (S, K)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    counts = np.bincount(y, minlength=n_classes).clip(min=1)
    weight = (counts.sum() / (n_classes * counts))[y]
    return float((-log_p[np.arange(len(y)), y] * weight).sum() / weight.sum())


def intensity_generalises(geodesic: np.ndarray, fine: np.ndarray, y: np.ndarray, folds: np.ndarray,
                          n_classes: int) -> bool:
    """Whether the refinement's intensity model predicts strokes it was not fitted on better than the
    geodesic labels alone: both fitted on one fold of strokes and scored (`balanced_log_loss`) on the other,
    both ways. True without two folds (nothing to hold out).

    On lobes painted on three slices, a class's strokes happen to cross more grey or more white matter than
    another's; fitted on all strokes, the intensity model learns that accident and overrules the geodesic
    labels off the painted slices. Held out by stroke, the accident does not repeat and this says no.
    """
    totals = {True: 0.0, False: 0.0}
    scored = False
    for fold in (0, 1):
        train, test = folds != fold, folds == fold
        if not test.any() or not train.any():
            continue
        scored = True
        for intensity in (True, False):
            beta, w, b = fit_refinement(geodesic[train], fine[train], y[train], n_classes, intensity=intensity)
            logits = beta * np.log(geodesic[test] + GEODESIC_FLOOR) + fine[test] @ w + b
            totals[intensity] += balanced_log_loss(logits, y[test], n_classes) * int(test.sum())
    return not scored or totals[True] <= totals[False]


def fine_features(intensity: np.ndarray, spacing) -> np.ndarray:
    """(3, X, Y, Z): the input's intensity in [0, 1], its square and a `FINE_SIGMA_MM` blur."""
    from scipy import ndimage

    unit = robust_unit(intensity)
    sigma = [FINE_SIGMA_MM / max(float(s), 1e-6) for s in spacing]
    return np.stack([unit, unit * unit, ndimage.gaussian_filter(unit, sigma, mode="nearest")])


def compete(intensity: np.ndarray, nodes: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The geodesic competition with each class's intensity penalty from these seeds (`seed_penalties`)."""
    return geodesic_labels(intensity, nodes, classes, seed_penalties(intensity, nodes, classes))


def fitted_gain(input_grid: Grid, intensity: np.ndarray, voxels: np.ndarray, classes: np.ndarray
                ) -> tuple[BiasField | None, np.ndarray | None]:
    """The smooth gain of a non-negative ``intensity``, fitted to a competition from the seeds on the input
    grid coarsened to ≤ `BIAS_NODES` voxels; returns (the fit, its log-gain on the input grid if useful)."""
    if float(intensity.min()) < 0:  # CT in HU, or anything not a magnitude: no multiplicative gain
        return None, None
    _, stride = coarsened(input_grid, BIAS_NODES)
    grid, coarse = competition_intensity(robust_unit(intensity), input_grid, BIAS_NODES)
    labels = compete(coarse, seed_nodes(voxels, input_grid, grid), classes)
    centres = [unit_coordinates(np.arange(m) * stride + (stride - 1) / 2, n)
               for m, n in zip(grid.shape, input_grid.shape)]
    fit = fit_bias_field(block_mean(intensity, stride, grid.shape), labels, *centres)
    if fit is None or not fit.useful:
        return fit, None
    return fit, evaluate(fit.coefficients, *(unit_coordinates(np.arange(n), n) for n in input_grid.shape))


def unstandardised(w: np.ndarray, b: np.ndarray, mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The refinement's (W, b) for raw fine features: the standardisation folded into the weights."""
    return (w / std[:, None]).astype(np.float32), (b - (mean / std) @ w).astype(np.float32)


def refined_logits(geodesic: np.ndarray, fine: np.ndarray, beta: float, w_raw: np.ndarray, b_raw: np.ndarray
                   ) -> np.ndarray:
    """(K, M) float32 logits ``β·log(G + δ) + Wᵀf + b`` from the geodesic labels (K, M) and raw fine features
    (F, M) (torch: threaded)."""
    import torch

    with torch.no_grad():
        logits = torch.log(torch.as_tensor(np.ascontiguousarray(geodesic, dtype=np.float32)) + GEODESIC_FLOOR)
        logits.mul_(beta).add_(torch.as_tensor(b_raw, dtype=torch.float32)[:, None])
        logits.addmm_(torch.as_tensor(np.ascontiguousarray(w_raw.T, dtype=np.float32)),
                      torch.as_tensor(np.ascontiguousarray(fine, dtype=np.float32)))
        return logits.numpy()


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the first axis, float32 (torch: threaded, several times NumPy's speed on a volume)."""
    import torch

    with torch.no_grad():
        return torch.softmax(torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32)), dim=0).numpy()


def as_probabilities(scores: np.ndarray) -> np.ndarray:
    """(K, ...) class scores (a filtered posterior can leave [0, 1] slightly) floored at 1e-4, renormalised."""
    floored = np.maximum(scores, 1e-4)
    return floored / floored.sum(axis=0, keepdims=True)


def patch_points(centres: np.ndarray, radius: int, shape) -> np.ndarray:
    """(P, d, d, d, 3) int64 voxel indices of the (d = 4·radius + 1)³ patch around each centre (P, 3), clamped
    into ``shape``: the guided filter's value at a centre needs exactly this patch (`S2DCCore.inference.guided_filter`;
    exact ≥ 2·radius voxels inside the volume, approximate nearer its border)."""
    offsets = np.arange(-2 * radius, 2 * radius + 1)
    grid = np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"), axis=-1)  # (d, d, d, 3)
    points = np.asarray(centres, dtype=np.int64)[:, None, None, None, :] + grid[None]
    return np.clip(points, 0, np.asarray(shape) - 1)


def balanced_subset(indices: np.ndarray, y: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``per_class`` of ``indices`` of each class ``y[indices]`` (classes in increasing order, each
    subsampled without replacement only where it has more), sorted."""
    chosen = []
    for c in np.unique(y[indices]):
        where = indices[y[indices] == c]
        chosen.append(rng.choice(where, per_class, replace=False) if len(where) > per_class else where)
    return np.sort(np.concatenate(chosen))


def filter_generalises(*, fine: np.ndarray, fold_labels: dict, fold_grid: Grid, input_grid: Grid, voxels: np.ndarray,
                       y: np.ndarray, folds: np.ndarray, geodesic: np.ndarray, standardised: np.ndarray,
                       mean: np.ndarray, std: np.ndarray, intensity: bool, n_classes: int, seed: int = 0) -> bool:
    """Whether the guided filter of the class posteriors predicts held-out strokes better than the posteriors
    themselves. Per fold: the refinement is fitted on the other fold's seeds, the posteriors are computed
    around (at most `FILTER_PATCHES_PER_CLASS` per class of) this fold's seeds from the competition that never
    saw their strokes (``fold_labels[fold]`` on ``fold_grid``), and the two are scored at the seeds
    (`balanced_log_loss`). False without two folds (no evidence: the posteriors stay as they are).

    On noisy images the filter outvotes voxels that noise tipped into a neighbour's class (MR phantoms,
    +0.02–0.03 Dice); on the noiseless MNI152 template it erodes the thin grey-matter ribbon (−0.1), and the
    held-out seeds there say so.
    """
    rng = np.random.default_rng(seed)
    to_fold = index_map(fold_grid, input_grid)
    upper = np.asarray(fold_grid.shape, dtype=np.float64) - 1
    centre = 2 * FILTER_RADIUS
    totals = {False: 0.0, True: 0.0}
    scored = False
    for fold in (0, 1):
        test, train = np.flatnonzero(folds == fold), folds != fold
        if not len(test) or not train.any():
            continue
        scored = True
        test = balanced_subset(test, y, FILTER_PATCHES_PER_CLASS, rng)
        beta, w, b = fit_refinement(geodesic[train], standardised[train], y[train], n_classes, intensity=intensity)
        w_raw, b_raw = unstandardised(w, b, mean, std)
        points = patch_points(voxels[test], FILTER_RADIUS, input_grid.shape)
        flat = points.reshape(-1, 3)
        onehot = np.stack([fold_labels[fold] == c for c in range(n_classes)]).astype(np.float32)
        at_fold = np.clip(flat @ to_fold[:3, :3].T + to_fold[:3, 3], 0, upper).astype(np.float32)
        logits = refined_logits(sample_points(onehot, at_fold), fine[:, flat[:, 0], flat[:, 1], flat[:, 2]],
                                beta, w_raw, b_raw)
        posterior = softmax(logits).reshape((n_classes,) + points.shape[:4])
        guide = fine[0][points[..., 0], points[..., 1], points[..., 2]]
        filtered = guided_filter(posterior, guide, FILTER_RADIUS, FILTER_EPS)
        for use, scores in ((False, posterior), (True, filtered)):
            at_seeds = as_probabilities(scores[:, :, centre, centre, centre])  # (K, P)
            totals[use] += balanced_log_loss(np.log(at_seeds.T), y[test], n_classes) * len(test)
    return scored and totals[True] < totals[False]


def grow(*, input_grid: Grid, input_intensity: np.ndarray, voxels: np.ndarray, classes: np.ndarray,
         n_classes: int, fit_voxels: np.ndarray | None = None, seed: int = 0) -> GrowResult:
    """Classes (indices into the seeds' classes) of every input voxel (see the module docstring).

    Args:
        input_grid / input_intensity: the input's grid and raw intensities.
        voxels: (S, 3) every seed voxel on the input grid; classes: (S,) their class indices.
        fit_voxels: indices into ``voxels`` the refinement is fitted on (default: all).
    """
    input_intensity = np.asarray(input_intensity, dtype=np.float32)
    bias, log_gain = fitted_gain(input_grid, input_intensity, voxels, classes)
    if log_gain is not None:
        input_intensity = input_intensity * np.exp(-log_gain)
        del log_gain
    unit = robust_unit(input_intensity)
    grid, intensity = competition_intensity(unit, input_grid, MAX_COMPETITION_NODES)
    labels = compete(intensity, seed_nodes(voxels, input_grid, grid), classes)

    fit = np.arange(len(voxels)) if fit_voxels is None else np.asarray(fit_voxels)
    fold_grid, fold_intensity = competition_intensity(unit, input_grid, MAX_FOLD_NODES)
    nodes = seed_nodes(voxels[fit], input_grid, fold_grid)
    y = classes[fit]
    # Each fitted seed's label from a competition that never saw its stroke (single-stroke classes are in
    # both folds, and keep the label of the full competition).
    folds = seed_folds(nodes, y, fold_grid.shape, seed)
    held_out = labels.reshape(-1)[seed_nodes(voxels[fit], input_grid, grid)].copy()
    fold_labels = {}
    if (folds >= 0).any():
        for fold in (0, 1):
            keep = folds != fold
            fold_labels[fold] = compete(fold_intensity, nodes[keep], y[keep])
            held_out[folds == fold] = fold_labels[fold].reshape(-1)[nodes[folds == fold]]
    del fold_intensity
    fine = fine_features(input_intensity, input_grid.spacing)
    at_seeds = fine[:, voxels[fit, 0], voxels[fit, 1], voxels[fit, 2]].T
    mean, std = at_seeds.mean(axis=0), at_seeds.std(axis=0) + 1e-6
    geodesic = np.eye(n_classes, dtype=np.float32)[held_out]
    standardised = ((at_seeds - mean) / std).astype(np.float32)
    use_intensity = intensity_generalises(geodesic, standardised, y, folds, n_classes)
    use_filter = filter_generalises(fine=fine, fold_labels=fold_labels, fold_grid=fold_grid, input_grid=input_grid,
                                    voxels=voxels[fit], y=y, folds=folds, geodesic=geodesic,
                                    standardised=standardised, mean=mean, std=std, intensity=use_intensity,
                                    n_classes=n_classes, seed=seed)
    del fold_labels
    beta, w, b = fit_refinement(geodesic, standardised, y, n_classes, intensity=use_intensity)
    w_raw, b_raw = unstandardised(w, b, mean, std)
    onehot = np.stack([labels == c for c in range(n_classes)]).astype(np.float32)
    out = np.empty(input_grid.shape, dtype=np.uint8 if n_classes <= 256 else np.uint16)
    to_grid = index_map(grid, input_grid)

    def logits_of(k0: int, k1: int) -> np.ndarray:
        """(K, X, Y, k1 − k0) refined logits of the input's slices k0…k1 − 1."""
        if grid is input_grid:  # competition at the input's resolution: nothing to interpolate
            f = fine[:, :, :, k0:k1].reshape(fine.shape[0], -1)
            g = onehot[:, :, :, k0:k1].reshape(n_classes, -1)
            shape = (n_classes,) + tuple(input_grid.shape[:2]) + (k1 - k0,)
            return refined_logits(g, f, beta, w_raw, b_raw).reshape(shape)
        parts = []
        for j0, j1, pts in slab_points(to_grid, input_grid.shape, grid.shape, start=k0, stop=k1):
            f = fine[:, :, :, j0:j1].reshape(fine.shape[0], -1)
            parts.append(refined_logits(sample_points(onehot, pts.reshape(-1, 3)), f, beta, w_raw, b_raw
                                        ).reshape((n_classes,) + pts.shape[:3]))
        return np.concatenate(parts, axis=3)

    depth = input_grid.shape[2]
    if not use_filter:
        for k0 in range(0, depth, SLAB):
            k1 = min(k0 + SLAB, depth)
            out[:, :, k0:k1] = logits_of(k0, k1).argmax(axis=0)
    else:  # filtered in slabs with a halo of 2r slices: the kept slices are exactly the whole-volume result
        halo = 2 * FILTER_RADIUS
        step = max(SLAB, FILTER_SLAB_VOXELS // max(input_grid.shape[0] * input_grid.shape[1], 1))
        for k0 in range(0, depth, step):
            k1 = min(k0 + step, depth)
            a0, a1 = max(0, k0 - halo), min(depth, k1 + halo)
            posterior = softmax(logits_of(a0, a1))
            filtered = guided_filter(posterior, fine[0, :, :, a0:a1], FILTER_RADIUS, FILTER_EPS, inplace=True)
            out[:, :, k0:k1] = filtered[:, :, :, k0 - a0:k1 - a0].argmax(axis=0)
    return GrowResult(classes=out, competition_grid=grid, beta=beta, bias=bias, intensity_model=use_intensity,
                      filtered=use_filter)
