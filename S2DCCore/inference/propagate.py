"""Segmentation from a few scribbles.

Scribbles are a labelmap on the image's grid: 0 = not scribbled, every positive value a class (the
user scribbles the background too). The default, ``grow`` (`S2DCCore.inference.grow`), grows the
scribbles through the image by a geodesic competition and refines the result per class at the input's
resolution; it needs no encoder. ``knn`` and ``linear`` classify every location from the frozen
encoder's embeddings; their steps:

1. dense encoder features on the model grid (as `S2DCCore.inference.embed`), interpolated to the
   **work grid** at stride 2 (the patch size: one location per 2³ model voxels);
2. optional extra features per location: the normalised intensity, a Gaussian-smoothed copy
   (σ = 2 work voxels) and the normalised coordinates (0..1 along each model axis). Columns are
   standardised and each group (embedding, intensity, coordinates) weighted equally;
3. the features at every scribbled voxel (interpolated at its position) train a class-wise k-NN
   (default) or a linear softmax probe (`S2DCCore.inference.few_shot`);
4. class scores on the work grid are interpolated at every input voxel centre and the argmax is
   written with the scribbles' own values, so the output has the input's shape and affine.

Measured (mean foreground Dice, 13-structure synthetic torso, ≤ 20 random scribbled voxels per structure,
random-weight tiny encoder; Testing/inference/test_propagate.py prints the 32³ column):

=========================================  =======  =======
phantom size, voxel spacing (stage 1)       32³,     40³,
                                            12.5 mm  10 mm
=========================================  =======  =======
k-NN, embeddings + intensity + coordinates  0.35     0.40
k-NN, embeddings only                       0.28     0.25
linear probe, embeddings + extras           —        0.35
nearest scribble (Voronoi, no image)        0.23     0.27
=========================================  =======  =======

so the extra features are on and k-NN is the default (a random encoder keeps little intensity
information after its LayerNorms; a pretrained one should need the extras less — measure with
``extra_features=False``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from S2DCCore.errors import DataError, UsageError
from S2DCCore.inference.embed import dense_features, embedding_setup
from S2DCCore.inference.few_shot import fit_linear, knn_scores, linear_scores, standardize
from S2DCCore.geometry import (Grid, argmax_resample, index_map, resample_channels, same_grid,
                                         sample_points, strided_grid)
from S2DCCore.inference.memory import check_budget, estimate_inference
from S2DCCore.inference.model_input import input_grid, prepare_input, read_input, target_grid
from S2DCCore.inference.model_io import LoadedModel, as_model, default_model_dir
from S2DCCore.inference.sliding import ProgressCallback, as_device
from S2DCCore.io.image import Image, read_image

log = logging.getLogger(__name__)
METHODS = ("grow", "knn", "linear")
# Work-grid smoothing of the intensity feature (in work voxels): regional context for noisy images.
SMOOTH_SIGMA = 2.0
# Scribbled voxels used per class (a seeded subsample beyond this): painted areas add little over a few
# thousand samples and would make k-NN slow.
MAX_SAMPLES_PER_CLASS = 2000


@dataclass
class Propagation:
    """A labelmap grown from scribbles.

    Attributes:
        labels: (X, Y, Z) on the input grid, with the scribbles' values.
        affine: (4, 4) the input's voxel → RAS affine.
        values: the scribbled class values, in class-index order.
        label_names: value → name (from a ``.seg.nrrd``'s segment names, else ``class v``).
        work_grid: the grid the classifier (``knn``/``linear``) or the competition (``grow``) ran on.
        samples_per_class: scribbled voxels used per value (at most `MAX_SAMPLES_PER_CLASS`).
    """

    labels: np.ndarray
    affine: np.ndarray
    values: tuple[int, ...]
    label_names: dict[int, str]
    work_grid: Grid
    samples_per_class: dict[int, int]


def propagate(image: Image | str | Path, model: str | Path | LoadedModel, scribbles: Image | str | Path,
              **options) -> np.ndarray:
    """Segment ``image`` from ``scribbles``; return the labelmap on the input grid (see `propagate_image`).

    Examples:
        >>> labels = propagate("ct.nii.gz", "runs/pretrain/encoder", "scribbles.nii.gz")
    """
    return propagate_image(image, model, scribbles, **options).labels


def propagate_image(image: Image | str | Path, model: str | Path | LoadedModel | None, scribbles: Image | str | Path, *,
                    method: str = "grow", extra_features: bool = True, stage: int | None = None, device=None,
                    roi=None, sw_batch_size: int = 1, memory_budget: int | None = None,
                    progress: ProgressCallback | None = None, precision: str = "bf16") -> Propagation:
    """Grow a full segmentation from a few labelled voxels per structure.

    Args:
        image: a path or an `Image`.
        model: an encoder or segmenter directory, a `LoadedModel` with an ``encoder``, or None for the
            default encoder shipped with S2DCCore (`S2DCCore.inference.model_io.default_model_dir`);
            ``knn`` and ``linear`` use it, ``grow`` does not (nothing is loaded).
        scribbles: a labelmap on the image's grid (path or `Image`); 0 = unlabelled.
        method: ``grow`` (geodesic competition on the image + per-class refinement,
            `S2DCCore.inference.grow`; the default), ``knn`` (class-wise k-NN distance) or ``linear``
            (softmax probe) on the embeddings.
        extra_features: add normalised intensity (raw and smoothed) and coordinates to the embeddings.
        stage: encoder stage (None: the model's embedding stage).
        device: ``torch.device``, a name or None for the CPU.
        roi: sliding-window size (an int or three; default: the card's ``roi``, else 96³).
        sw_batch_size: windows per forward pass.
        memory_budget: bytes allowed (None: the default of `S2DCCore.inference.memory`).
        progress: called with (windows done, windows in total).

    Raises:
        DataError: bad image, model or scribbles (not on the image grid, fewer than two classes, not integer).
    """
    if method not in METHODS:
        raise UsageError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    image, source = read_input(image)
    marks, values, names = read_scribbles(scribbles, input_grid(image))
    if method == "grow":
        return _grown(image, source, marks, values, names, memory_budget)
    model = as_model(default_model_dir() if model is None else model)
    target = target_grid(image, model.spacing, model.orientation)
    stage, stride, window = embedding_setup(model, stage, roi, target.shape)
    device = as_device(device)
    channels = (model.feature_size or 1) * 2**stage
    estimate = estimate_inference(
        input_shape=image.array.shape, model_shape=target.shape, roi=window, out_channels=channels + 5,
        out_stride=model.patch_size, output_bytes_per_voxel=2, feature_size=model.feature_size,
        n_parameters=model.n_parameters(), sw_batch_size=sw_batch_size, decoder=False,
        on_device=device.type == "cuda", architecture=model.architecture, mapped_channels=len(values),
        summary=f"model grid {'×'.join(map(str, target.shape))}, stage {stage} ({channels} channels)")
    check_budget(estimate, device=device, budget=memory_budget, path=source)
    prepared = prepare_input(image, model.preprocess, model.spacing, model.orientation, source)
    model.to(device)
    features, feature_grid = dense_features(prepared, model, stage=stage, stride=stride, roi=window,
                                            device=device, sw_batch_size=sw_batch_size, progress=progress,
                                            precision=precision)
    work_stride = min(model.patch_size, stride)
    work = strided_grid(prepared.model_grid, work_stride,
                        tuple(math.ceil(n / work_stride) for n in prepared.model_grid.shape))
    columns = list(resample_channels(features, feature_grid, work))
    groups = [slice(0, len(columns))]
    if extra_features:
        extras = _extra_features(prepared.volume, work_stride, work)
        groups += [slice(len(columns), len(columns) + 2), slice(len(columns) + 2, len(columns) + 5)]
        columns += extras
    stack = np.stack(columns)  # (D, X2, Y2, Z2)
    voxels = _training_voxels(marks, values)  # (S, 3)
    samples = _sample_at(stack, index_map(work, prepared.grid), voxels)  # (S, D)
    sample_classes = np.searchsorted(values, marks[tuple(voxels.T)])
    flat = stack.reshape(stack.shape[0], -1).T  # (N, D)
    shift, scale = standardize(flat, groups)
    flat = (flat - shift) / scale
    samples = (samples - shift) / scale
    if method == "knn":
        scores = knn_scores(samples, sample_classes, flat, len(values))
    else:
        scores = linear_scores(*fit_linear(samples, sample_classes, len(values)), flat)
    scores = scores.T.reshape((len(values),) + tuple(work.shape))
    classes = argmax_resample(scores, work, prepared.grid)
    out_dtype = marks.dtype if np.issubdtype(marks.dtype, np.integer) else np.min_scalar_type(int(values.max()))
    labels = np.asarray(values, dtype=out_dtype)[classes]
    counts = {int(v): int(n) for v, n in zip(values, np.bincount(sample_classes, minlength=len(values)))}
    log.info("propagated %d classes from %s scribbled voxels with %s", len(values), sum(counts.values()), method)
    return Propagation(labels=labels, affine=prepared.grid.affine.copy(), values=tuple(int(v) for v in values),
                       label_names=names, work_grid=work, samples_per_class=counts)


def _grown(image: Image, source, marks, values, names, memory_budget) -> Propagation:
    """The ``grow`` method (`S2DCCore.inference.grow`): no encoder, the image and the seeds alone."""
    from S2DCCore.inference import grow

    grid = input_grid(image)
    check_budget(grow_estimate(grid.shape, len(values)), device=as_device(None), budget=memory_budget, path=source)
    voxels = np.argwhere(marks > 0)  # every scribbled voxel seeds the competition
    classes = np.searchsorted(values, marks[tuple(voxels.T)])
    fit = _subsample(classes)  # the refinement is fitted on at most MAX_SAMPLES_PER_CLASS each
    result = grow.grow(input_grid=grid, input_intensity=np.asarray(image.array, dtype=np.float32), voxels=voxels,
                       classes=classes, n_classes=len(values), fit_voxels=fit)
    out_dtype = marks.dtype if np.issubdtype(marks.dtype, np.integer) else np.min_scalar_type(int(values.max()))
    labels = np.asarray(values, dtype=out_dtype)[result.classes]
    counts = {int(v): int(n) for v, n in zip(values, np.bincount(classes[fit], minlength=len(values)))}
    gain = ("no gain fitted" if result.bias is None else
            f"gain {'applied' if result.bias.useful else 'not applied'}: within-class spread ×{result.bias.spread_ratio:.2f}")
    log.info("grew %d classes from %d seed voxels (competition grid %s, geodesic weight β = %.2f, %s, %s, %s)",
             len(values), len(classes), "×".join(map(str, result.competition_grid.shape)), result.beta, gain,
             "intensity model used" if result.intensity_model else "intensity model dropped: it did not predict "
             "held-out strokes", "posteriors smoothed (guided filter)" if result.filtered else
             "posteriors not smoothed: smoothing did not predict held-out strokes better")
    return Propagation(labels=labels, affine=grid.affine.copy(), values=tuple(int(v) for v in values),
                       label_names=names, work_grid=result.competition_grid, samples_per_class=counts)


def grow_estimate(shape, n_classes: int):
    """Host memory of ``grow`` on an input of ``shape``: the image, its gain and corrected copy, the three
    fine features (float32), the competition's one-hot and queues, the labels, and one slab of class
    posteriors with its logits and the guided filter's temporaries (two threads)."""
    from S2DCCore.geometry import SLAB
    from S2DCCore.inference.grow import FILTER_RADIUS, FILTER_SLAB_VOXELS, MAX_COMPETITION_NODES
    from S2DCCore.inference.memory import MemoryEstimate

    voxels = int(np.prod(shape))
    nodes = min(voxels, MAX_COMPETITION_NODES)
    plane = int(shape[0]) * int(shape[1])
    slab = min(voxels, plane * (max(SLAB, FILTER_SLAB_VOXELS // max(plane, 1)) + 4 * FILTER_RADIUS))
    parts = {"image, its gain-corrected copy and fine features": voxels * 4 * 7,
             "competition": nodes * (4 * n_classes + 16), "labels": voxels * 2,
             "class posteriors (a slab)": slab * (8 * n_classes + 40)}
    return MemoryEstimate(host=sum(parts.values()), device=0, parts=parts,
                          summary=f"input {'×'.join(map(str, shape))}, {n_classes} classes, competition on "
                                  f"≤ {nodes} voxels",
                          advice="free memory, crop the image to the region to segment, or set --memory-budget")


def read_scribbles(scribbles: Image | str | Path, grid: Grid) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """The scribble labelmap, its sorted positive values and their names, checked against the image ``grid``.

    Raises:
        DataError: not on the image grid (shape or affine), non-integer or negative values, or fewer than
            two scribbled classes.
    """
    name = scribbles if isinstance(scribbles, (str, Path)) else "<scribbles>"
    image = read_image(scribbles) if isinstance(scribbles, (str, Path)) else scribbles
    marks = np.asarray(image.array)
    own = Grid(tuple(marks.shape), np.asarray(image.affine, dtype=np.float64))
    if not same_grid(own, grid):
        if tuple(own.shape) != tuple(grid.shape):
            why = f"shape {list(own.shape)} but the image is {list(grid.shape)}"
        else:
            gap = np.abs(own.affine - grid.affine).max()
            why = f"voxel-to-world matrix differs from the image's by up to {gap:.3g} mm"
        raise DataError(f"scribbles are not on the image grid ({why}); draw them on the image itself", name)
    if np.issubdtype(marks.dtype, np.floating):
        if not np.all(np.isfinite(marks)) or np.any(marks != np.round(marks)):
            raise DataError("scribble values must be whole numbers (0 = not scribbled, 1, 2, ... classes)", name)
        marks = marks.astype(np.int64)
    if np.any(marks < 0):
        raise DataError("scribble values must not be negative (0 = not scribbled)", name)
    values = np.unique(marks[marks > 0])
    if len(values) < 2:
        raise DataError(f"scribbles name {len(values)} class(es); scribble at least two, the background "
                        "included", name)
    names = {int(v): image.label_names.get(int(v), f"class {int(v)}") for v in values}
    return marks, values, names


def _extra_features(volume: np.ndarray, stride: int, work: Grid) -> list[np.ndarray]:
    """Normalised intensity (mean of each ``stride³`` block), its Gaussian-smoothed copy, and normalised
    coordinates, on ``work``."""
    from scipy import ndimage

    padded = np.pad(volume, [(0, w * stride - n) for w, n in zip(work.shape, volume.shape)], mode="edge")
    intensity = padded.reshape(work.shape[0], stride, work.shape[1], stride, work.shape[2], stride).mean(axis=(1, 3, 5))
    smooth = ndimage.gaussian_filter(intensity, SMOOTH_SIGMA, mode="nearest")
    coords = np.meshgrid(*[np.linspace(0.0, 1.0, n, dtype=np.float32) for n in work.shape], indexing="ij")
    return [intensity.astype(np.float32), smooth.astype(np.float32)] + [c for c in coords]


def _subsample(classes: np.ndarray, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most `MAX_SAMPLES_PER_CLASS` entries of each class (seeded subsample)."""
    from S2DCCore.inference.grow import balanced_subset

    return balanced_subset(np.arange(len(classes)), np.asarray(classes), MAX_SAMPLES_PER_CLASS,
                           np.random.default_rng(seed))


def _training_voxels(marks: np.ndarray, values: np.ndarray, seed: int = 0) -> np.ndarray:
    """(S, 3) scribbled voxels, at most `MAX_SAMPLES_PER_CLASS` per value (seeded subsample)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for value in values:
        voxels = np.argwhere(marks == value)
        if len(voxels) > MAX_SAMPLES_PER_CLASS:
            voxels = voxels[np.sort(rng.choice(len(voxels), MAX_SAMPLES_PER_CLASS, replace=False))]
        chosen.append(voxels)
    return np.concatenate(chosen)


def _sample_at(stack: np.ndarray, input_to_work: np.ndarray, voxels: np.ndarray) -> np.ndarray:
    """(S, D) features of ``stack`` (D, X2, Y2, Z2) interpolated at input ``voxels`` (S, 3)."""
    points = voxels.astype(np.float64) @ input_to_work[:3, :3].T + input_to_work[:3, 3]  # (S, 3)
    points = np.clip(points, 0.0, np.asarray(stack.shape[1:], dtype=np.float64) - 1.0)
    return sample_points(stack, points).T
