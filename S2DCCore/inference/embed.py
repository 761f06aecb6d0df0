"""Dense encoder embeddings over a whole volume, and the overlays made from them.

The encoder runs in sliding windows on the model grid (see `S2DCCore.inference.model_input`); the
stitched stage-``s`` features live on the **feature grid**: stride ``p·2^s`` model voxels (``p`` the
patch size), whose affine is the model grid's with direction columns scaled by the stride and the
origin moved by ``(stride − 1)/2`` model voxels (a token sits at the centre of the block it summarises;
`S2DCCore.geometry.strided_grid`). The model grid is the input grid reoriented to the closest
RAS axes and resampled to the model spacing, so both grids map to the same physical space as the input.

Overlays are computed on the feature grid and then sampled at every input voxel centre, so
``pca_rgb``, ``structures`` and ``similarity`` have exactly the input's shape and affine:

* ``pca_rgb``: the first three principal components of all tokens, each mapped from its 1st–99th
  percentile range to 0–255 (R, G, B), interpolated trilinearly;
* ``structures``: k-means clusters of the tokens (labels 1..K; every voxel gets one), the argmax of
  the interpolated negative squared distances to the centroids;
* ``similarity``: cosine similarity of every token to the embedding interpolated at a RAS point (mm).

Stage: the card's ``token_stage`` for encoders, `SEGMENTER_EMBED_STAGE` (2) for segmenters, or ``stage``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from S2DCCore.errors import UsageError
from S2DCCore.geometry import (Grid, argmax_resample, resample_channels, sample_points,
                                         strided_grid, world_to_index)
from S2DCCore.inference.memory import MemoryEstimate, check_budget, estimate_inference
from S2DCCore.inference.model_input import ModelInput, prepare_input, read_input, target_grid
from S2DCCore.inference.model_io import LoadedModel, as_model, default_model_dir
from S2DCCore.inference.overlays import (cosine_similarity, kmeans, pca_components, robust_range, scale_to_uint8,
                                         squared_distances)
from S2DCCore.inference.sliding import ProgressCallback, as_device, run_sliding_window
from S2DCCore.io.image import Image

log = logging.getLogger(__name__)
# Fraction of the window shared by neighbours (rounded to whole tokens so windows align with the stride).
EMBED_OVERLAP = 0.25
# Model grids up to this many voxels (padded) are embedded in one pass (about 1.5 GB for the tiny encoder).
WHOLE_PASS_VOXELS = 160**3


@dataclass
class Embedding:
    """Dense embeddings of one volume and the overlays requested.

    Attributes:
        features: (X', Y', Z', C) float32 embeddings on ``feature_grid``.
        feature_grid: the features' grid (coarser than, and in the same physical space as, the input).
        model_grid / input_grid: the grid the encoder saw, and the input's grid.
        stage / stride: encoder stage, and its stride in model voxels.
        pca_rgb: (X, Y, Z, 3) uint8 on the input grid, or None.
        structures: (X, Y, Z) uint8 cluster labels 1..K on the input grid, or None.
        similarity: (X, Y, Z) float32 cosine similarity in [−1, 1] on the input grid, or None.
        point: the RAS point (mm) of ``similarity``, or None.
        clusters: the number of k-means structures, or None.
        estimate / source / model_source: the memory estimate checked; provenance.
    """

    features: np.ndarray
    feature_grid: Grid
    model_grid: Grid
    input_grid: Grid
    stage: int
    stride: int
    pca_rgb: np.ndarray | None = None
    structures: np.ndarray | None = None
    similarity: np.ndarray | None = None
    point: tuple[float, float, float] | None = None
    clusters: int | None = None
    estimate: MemoryEstimate | None = None
    source: str = ""
    model_source: str = ""


def embed(image: Image | str | Path, model: str | Path | LoadedModel | None = None, *, pca: bool = True,
          clusters: int | None = None, point=None, stage: int | None = None, device=None,
          roi=None, sw_batch_size: int = 1, memory_budget: int | None = None, seed: int = 0,
          progress: ProgressCallback | None = None, precision: str = "bf16") -> Embedding:
    """Embed ``image`` with the encoder of ``model`` and compute the requested overlays.

    Args:
        image: a path (NIfTI, NRRD, DICOM folder) or an `Image`.
        model: an encoder or segmenter directory, a `LoadedModel` with an ``encoder``, or None for the
            default encoder shipped with S2DCCore.
        pca: compute ``pca_rgb``.
        clusters: number of k-means structures (None: none).
        point: (x, y, z) RAS point in mm for ``similarity`` (None: none); must lie inside the image.
        stage: encoder stage (None: see the module docstring).
        device: ``torch.device``, a name (``auto``, ``cpu``, ``cuda``) or None for the CPU.
        roi: sliding-window size (an int or three; default: the card's ``roi``, else 96³).
        sw_batch_size: windows per forward pass.
        memory_budget: bytes allowed (None: the default of `S2DCCore.inference.memory`).
        seed: k-means seed.
        progress: called with (windows done, windows in total).

    Examples:
        >>> result = S2DCCore.embed("ct.nii.gz", "runs/pretrain/encoder", clusters=8, point=(10.0, -20.0, 35.0))
        >>> result.structures.shape == result.input_grid.shape
        True
    """
    image, source = read_input(image)
    if clusters is not None and clusters < 1:
        raise UsageError(f"--clusters must be at least 1, not {clusters}")
    if point is not None:
        _check_point(point, Grid(tuple(image.array.shape), image.affine), source)
    model = as_model(default_model_dir() if model is None else model)
    target = target_grid(image, model.spacing, model.orientation)
    stage, stride, roi = embedding_setup(model, stage, roi, target.shape)
    device = as_device(device)
    channels = (model.feature_size or 1) * 2**stage
    continuous = 3 * bool(pca) + (point is not None)  # float32 maps resampled to the input grid together
    # Per input voxel: RGB, similarity, structures, the resampled maps, and one float32 temporary.
    outputs = 3 * bool(pca) + 4 * (point is not None) + (clusters is not None) + 4 * continuous + 4
    estimate = estimate_inference(
        input_shape=image.array.shape, model_shape=target.shape, roi=roi, out_channels=channels, out_stride=stride,
        output_bytes_per_voxel=outputs, feature_size=model.feature_size, n_parameters=model.n_parameters(),
        sw_batch_size=sw_batch_size, decoder=False, on_device=device.type == "cuda", architecture=model.architecture,
        mapped_channels=max(continuous, clusters or 0),
        summary=f"model grid {'×'.join(map(str, target.shape))}, stage {stage} ({channels} channels, stride "
                f"{stride}), window {'×'.join(map(str, roi))}")
    check_budget(estimate, device=device, budget=memory_budget, path=source)
    prepared = prepare_input(image, model.preprocess, model.spacing, model.orientation, source)
    model.to(device)
    features, grid = dense_features(prepared, model, stage=stage, stride=stride, roi=roi, device=device,
                                    sw_batch_size=sw_batch_size, progress=progress, precision=precision)
    result = Embedding(features=np.moveaxis(features, 0, -1), feature_grid=grid, model_grid=prepared.model_grid,
                       input_grid=prepared.grid, stage=stage, stride=stride, estimate=estimate, source=source,
                       model_source=model.source)
    flat = features.reshape(features.shape[0], -1).T  # (N tokens, C)
    # PCA colours and similarity are resampled in one pass (their channels stacked) on the feature grid.
    continuous, low, high = [], None, None
    if pca:
        components, low, high = pca_components_on_grid(flat, grid)
        continuous += list(components)
    if point is not None:
        result.point = tuple(float(v) for v in point)
        continuous.append(similarity_on_grid(features, grid, result.point))
    if continuous:
        sampled = resample_channels(np.stack(continuous), grid, prepared.grid)  # (n, X, Y, Z)
        if pca:
            result.pca_rgb = np.zeros(tuple(prepared.grid.shape) + (3,), dtype=np.uint8)
            for c in range(len(low)):
                result.pca_rgb[..., c] = scale_to_uint8(sampled[c], low[c], high[c])
        if point is not None:
            result.similarity = np.clip(sampled[-1], -1.0, 1.0)
    if clusters is not None:
        result.clusters = min(int(clusters), len(flat))
        result.structures = cluster_overlay(flat, grid, prepared.grid, result.clusters, seed=seed)
    return result


def embedding_setup(model: LoadedModel, stage: int | None, roi, model_shape=None
                    ) -> tuple[int, int, tuple[int, int, int]]:
    """Encoder stage, its stride in model voxels and the sliding window, checked against each other.

    Without an explicit ``roi``, a model grid of ``model_shape`` that fits in `WHOLE_PASS_VOXELS` once padded
    to multiples of 32 is embedded in one pass (one window covering it: no overlap computed twice, no seams),
    as the study's probe does; larger grids use the card's window.

    Raises:
        UsageError: the model has no encoder, or the window is not a multiple of the stage's stride.
    """
    if model.encoder is None:
        raise UsageError(f"{model.source} has no encoder to embed with")
    stage = model.embed_stage if stage is None else int(stage)
    stride = model.patch_size * 2**stage
    window = model.window(roi)
    if roi is None and model_shape is not None and model.feature_size is not None:
        whole = tuple(max(32, math.ceil(n / 32) * 32) for n in model_shape)
        if int(np.prod(whole)) <= WHOLE_PASS_VOXELS:
            window = whole
    if stage < 0 or any(r % stride for r in window):
        raise UsageError(f"stage {stage} (stride {stride}) does not fit the window {window}; windows must be "
                         f"multiples of the stride")
    return stage, stride, window


def dense_features(prepared: ModelInput, model: LoadedModel, *, stage: int, stride: int, roi, device=None,
                   sw_batch_size: int = 1, progress: ProgressCallback | None = None,
                   precision: str = "bf16") -> tuple[np.ndarray, Grid]:
    """Stage-``stage`` features over the whole model grid.

    The volume is zero-padded at its far end to whole strides (and at least one window), so every window
    starts on a token boundary and the feature grid's origin stays that of the model grid.

    Returns:
        ((C, X', Y', Z') float32 features, their grid), X' = ceil(X / stride).
    """
    volume = prepared.volume
    padded = [max(int(r), math.ceil(n / stride) * stride) for n, r in zip(volume.shape, roi)]
    volume = np.pad(volume, [(0, p - n) for p, n in zip(padded, volume.shape)])
    overlap = [_token_overlap(int(r), stride) for r in roi]
    encoder = model.encoder

    def predictor(window):
        return encoder(window)[stage]

    features = run_sliding_window(volume, predictor, roi=roi, device=device, overlap=overlap,
                                  sw_batch_size=sw_batch_size, progress=progress, precision=precision)
    shape = tuple(math.ceil(n / stride) for n in prepared.model_grid.shape)
    features = np.ascontiguousarray(features[:, : shape[0], : shape[1], : shape[2]].numpy())
    return features, strided_grid(prepared.model_grid, stride, shape)


def pca_components_on_grid(flat: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first three principal components of the tokens as maps on ``grid``, and their colour ranges.

    Returns:
        (components (n ≤ 3, X', Y', Z') float32, low (n,), high (n,)): ``low``/``high`` map to 0/255.
    """
    mean, axes = pca_components(flat, 3)
    projected = ((flat - mean) @ axes.T).astype(np.float32)  # (N, n)
    low, high = robust_range(projected)
    return projected.T.reshape((-1,) + tuple(grid.shape)), low, high


def cluster_overlay(flat: np.ndarray, grid: Grid, target: Grid, k: int, *, seed: int = 0) -> np.ndarray:
    """(X, Y, Z) uint8 k-means structure labels 1..k on ``target``."""
    k = min(int(k), len(flat))
    centroids, _ = kmeans(flat, k, seed=seed)
    scores = -squared_distances(flat.astype(np.float32), centroids).T.reshape((k,) + tuple(grid.shape))
    return (argmax_resample(scores, grid, target) + 1).astype(np.uint8 if k < 255 else np.uint16)


def similarity_on_grid(features: np.ndarray, grid: Grid, point) -> np.ndarray:
    """(X', Y', Z') cosine similarity of every token to the feature interpolated at ``point`` (RAS, mm)."""
    # The image may extend half a token past the outer token centres: clamp, as the interpolation does.
    index = np.clip(world_to_index(grid, point), 0, np.asarray(grid.shape) - 1)
    query = sample_points(features, index[None])[:, 0]
    flat = features.reshape(features.shape[0], -1).T
    return cosine_similarity(flat, query).reshape(grid.shape)


def _token_overlap(roi: int, stride: int) -> float:
    """An overlap fraction of whole tokens near `EMBED_OVERLAP` (a hair under, so MONAI's int() rounds right)."""
    tokens = round(EMBED_OVERLAP * roi / stride)
    return max(tokens * stride / roi - 1e-7, 0.0) if tokens * stride < roi else 0.0


def _check_point(point, grid: Grid, source: str) -> None:
    index = world_to_index(grid, point)
    if np.any(index < -0.5) or np.any(index > np.asarray(grid.shape) - 0.5):
        raise UsageError(f"point {tuple(float(v) for v in point)} (RAS, mm) lies outside the image {source} "
                         f"(voxel {np.round(index, 1).tolist()} of {list(grid.shape)})")
