"""Structure-aware growing from seeds: the default of ``s2dc propagate``.

Three steps, each on the grid where it is cheapest and each fitted to the user's own seeds:

1. **Classifier on the work grid** (the model grid, coarsened to at most `MAX_WORK_NODES` nodes): a small
   MLP on the frozen encoder's features, the intensity with Gaussian blurs and the coordinates gives
   class probabilities ``P`` everywhere (class-balanced, so a structure with few seeds counts as much as
   the background).
2. **Geodesic competition** on the work grid (`S2DCCore.inference.geodesic`): a step between neighbours
   costs the change of ``[intensity, P]``, so seeds spread through homogeneous tissue (as Grow from seeds
   does) and stop at intensity edges *and* where the predicted structure changes.
3. **Refinement at the input's own resolution**: per class, ``β · log(G + δ) + W · f + b`` where ``G`` is
   the competition's label (one-hot, interpolated to the input grid) and ``f`` the input's normalised
   intensity, its square and a 1 mm blur. β, W and b are fitted on the seeds with ``G`` computed
   **without** each seed's own stroke (two folds of seed components), so β says how far the geodesic
   labels can be trusted on this image: near 0 where intensity alone separates the classes (brain
   tissue), large where it does not (organs of equal density, lobes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from S2DCCore.inference.geodesic import geodesic_labels, grid_graph
from S2DCCore.inference.geometry import Grid, index_map, resample_channels, sample_points, slab_points, strided_grid

# Work-grid size: the geodesic competition and the classifier run on at most this many nodes.
MAX_WORK_NODES = 1_500_000
# Blurs of the work-grid intensity (work voxels) fed to the classifier.
CONTEXT_SIGMAS = (1.0, 2.0, 4.0)
# The refinement's blur of the input intensity (mm).
FINE_SIGMA_MM = 1.0
# Floor added to the geodesic one-hot before the log (the refinement can overrule a label, never ignore it).
GEODESIC_FLOOR = 0.05
# Weight of the class probabilities against the intensity in the geodesic step cost.
PROBABILITY_WEIGHT = 1.0


@dataclass
class GrowResult:
    """Class indices on the input grid and what the fit decided."""

    classes: np.ndarray
    work_grid: Grid
    beta: float


def work_grid(model_grid: Grid) -> tuple[Grid, int]:
    """The model grid coarsened by the smallest integer stride that keeps ≤ `MAX_WORK_NODES` nodes."""
    stride = max(1, math.ceil((int(np.prod(model_grid.shape)) / MAX_WORK_NODES) ** (1 / 3)))
    shape = tuple(math.ceil(n / stride) for n in model_grid.shape)
    return (model_grid if stride == 1 else strided_grid(model_grid, stride, shape)), stride


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


def context_features(features: np.ndarray | None, feature_grid: Grid | None, intensity: np.ndarray,
                     work: Grid) -> np.ndarray:
    """(D, *work.shape): encoder features (if any) resampled to the work grid, the intensity and its blurs,
    and the coordinates in [−1, 1]."""
    from scipy import ndimage

    columns = [] if features is None else list(resample_channels(features, feature_grid, work))
    columns += [intensity] + [ndimage.gaussian_filter(intensity, s, mode="nearest") for s in CONTEXT_SIGMAS]
    columns += list(np.meshgrid(*[np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in work.shape], indexing="ij"))
    return np.stack(columns).astype(np.float32)


def fit_mlp(x: np.ndarray, y: np.ndarray, n_classes: int, *, hidden: int = 64, iterations: int = 300,
            seed: int = 0):
    """A class-balanced 2-layer MLP on standardised ``x`` (Adam, weight decay, input noise); returns a function
    mapping (N, D) features to (N, n_classes) probabilities."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    xt = torch.as_tensor((x - mean) / std, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    counts = torch.bincount(yt, minlength=n_classes).clamp(min=1).float()
    weight = counts.sum() / (n_classes * counts)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                              torch.nn.ReLU(), torch.nn.Linear(hidden, n_classes))
    params = list(net.parameters())
    with torch.enable_grad():
        adam = _Adam(params, lr=1e-2, weight_decay=1e-3)
        for _ in range(iterations):
            noisy = xt + 0.1 * torch.randn(xt.shape, generator=generator)
            loss = torch.nn.functional.cross_entropy(net(noisy), yt, weight=weight)
            adam.step(torch.autograd.grad(loss, params))
    net.eval()
    shift, scale = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)

    def predict(features: np.ndarray, chunk: int = 1 << 18) -> np.ndarray:
        out = np.empty((len(features), n_classes), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, len(features), chunk):
                part = (torch.as_tensor(features[start:start + chunk]) - shift) / scale
                out[start:start + chunk] = torch.softmax(net(part), dim=1).numpy()
        return out

    return predict


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
                   iterations: int = 300) -> tuple[float, np.ndarray, np.ndarray]:
    """Fit ``logits = β·log(G + δ) + f @ W + b`` on the seeds (class-balanced, Adam).

    Args:
        geodesic: (S, K) one-hot geodesic labels at the seeds, computed without each seed's own stroke.
        fine: (S, F) fine features (already standardised). y: (S,) classes.

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
    params = [raw_beta, w, b]
    with torch.enable_grad():
        adam = _Adam(params, lr=0.05)
        for _ in range(iterations):
            logits = torch.nn.functional.softplus(raw_beta) * g + f @ w + b
            loss = torch.nn.functional.cross_entropy(logits, yt, weight=weight) + l2 * (w**2).sum()
            adam.step(torch.autograd.grad(loss, params))
    beta = float(torch.nn.functional.softplus(raw_beta.detach()))
    return beta, w.detach().numpy(), b.detach().numpy()


def fine_features(intensity: np.ndarray, spacing) -> np.ndarray:
    """(3, X, Y, Z): the input's intensity in [0, 1], its square and a `FINE_SIGMA_MM` blur."""
    from scipy import ndimage

    unit = robust_unit(intensity)
    sigma = [FINE_SIGMA_MM / max(float(s), 1e-6) for s in spacing]
    return np.stack([unit, unit * unit, ndimage.gaussian_filter(unit, sigma, mode="nearest")])


def grow(*, work: Grid, work_intensity: np.ndarray, context: np.ndarray, input_grid: Grid,
         input_intensity: np.ndarray, voxels: np.ndarray, classes: np.ndarray, n_classes: int,
         seed: int = 0) -> GrowResult:
    """Classes (indices into the seeds' classes) of every input voxel (see the module docstring).

    Args:
        work: the work grid; work_intensity: (work.shape) intensity in [0, 1] on it.
        context: (D, *work.shape) classifier features (`context_features`).
        input_grid / input_intensity: the input's grid and raw intensities.
        voxels: (S, 3) seed voxels on the input grid; classes: (S,) their class indices.
    """
    to_work = index_map(work, input_grid)
    points = voxels.astype(np.float64) @ to_work[:3, :3].T + to_work[:3, 3]
    points = np.clip(points, 0.0, np.asarray(work.shape, dtype=np.float64) - 1.0)
    x = sample_points(context, points).T  # (S, D)
    flat = np.ascontiguousarray(context.reshape(context.shape[0], -1).T)
    cells = np.round(points).astype(np.int64)
    nodes = np.ravel_multi_index(tuple(cells.T), work.shape)

    def competition(keep: np.ndarray) -> np.ndarray:
        """Geodesic labels from the seeds in ``keep``, with a classifier fitted on those seeds only."""
        predict = fit_mlp(x[keep], classes[keep], n_classes, seed=seed)
        probabilities = predict(flat).T.reshape((n_classes,) + tuple(work.shape))
        graph = grid_graph(np.concatenate([work_intensity[None], PROBABILITY_WEIGHT * probabilities]))
        return geodesic_labels(graph, work.shape, nodes[keep], classes[keep])

    labels = competition(np.ones(len(nodes), dtype=bool))
    # Each seed's label from a competition that never saw its stroke: the other fold's seeds fit the
    # classifier and seed the growing (single-stroke classes are in both folds).
    folds = seed_folds(nodes, classes, work.shape, seed)
    held_out = labels.reshape(-1)[nodes].copy()
    if (folds >= 0).any():
        for fold in (0, 1):
            fold_labels = competition(folds != fold)
            held_out[folds == fold] = fold_labels.reshape(-1)[nodes[folds == fold]]
    fine = fine_features(input_intensity, input_grid.spacing)
    at_seeds = fine[:, voxels[:, 0], voxels[:, 1], voxels[:, 2]].T
    mean, std = at_seeds.mean(axis=0), at_seeds.std(axis=0) + 1e-6
    beta, w, b = fit_refinement(np.eye(n_classes, dtype=np.float32)[held_out], (at_seeds - mean) / std, classes,
                                n_classes)
    onehot = np.stack([labels == c for c in range(n_classes)]).astype(np.float32)
    out = np.empty(input_grid.shape, dtype=np.uint8 if n_classes <= 256 else np.uint16)
    w_raw = (w / std[:, None]).astype(np.float32)  # standardisation folded into the weights
    b_raw = (b - (mean / std) @ w).astype(np.float32)
    for k0, k1, pts in slab_points(to_work, input_grid.shape, work.shape):
        g = sample_points(onehot, pts.reshape(-1, 3))  # (K, M)
        f = fine[:, :, :, k0:k1].reshape(fine.shape[0], -1)  # (F, M)
        logits = beta * np.log(g + GEODESIC_FLOOR) + w_raw.T @ f + b_raw[:, None]
        out[:, :, k0:k1] = logits.argmax(axis=0).reshape(pts.shape[:3])
    return GrowResult(classes=out, work_grid=work, beta=beta)
