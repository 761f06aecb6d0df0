"""Segmentation in the input's exact geometry.

``input grid → model grid`` (orientation + spacing of the model, trilinear) → intensity preset →
sliding-window logits on the model grid → logits interpolated (trilinear) at every input voxel centre →
argmax. The labelmap therefore has exactly the input's shape and affine, for any orientation (RAS, LPS,
oblique), spacing and size. Memory is estimated first and the run refused if it would not fit
(`S2DCCore.inference.memory`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from S2DCCore.errors import DataError, UsageError
from S2DCCore.geometry import Grid, argmax_resample
from S2DCCore.inference.label_table import write_labelmap
from S2DCCore.inference.memory import MemoryEstimate, check_budget, estimate_inference
from S2DCCore.inference.model_input import foreground_box, prepare_input, read_input, target_grid
from S2DCCore.inference.model_io import LoadedModel, as_model
from S2DCCore.inference.sliding import ProgressCallback, as_device, run_sliding_window
from S2DCCore.io.image import Image

log = logging.getLogger(__name__)


@dataclass
class Segmentation:
    """A labelmap on the input grid and what it was made from.

    Attributes:
        labels: (X, Y, Z) label values (the card's ``labels`` keys; uint8 or wider) on the input grid.
        affine: (4, 4) the input's voxel → RAS affine.
        label_names: label value → name.
        model_grid: the grid the network ran on.
        estimate: the memory estimate that was checked.
        source / model_source: the input and the model, for provenance.
    """

    labels: np.ndarray
    affine: np.ndarray
    label_names: dict[int, str]
    model_grid: Grid
    estimate: MemoryEstimate
    source: str
    model_source: str


def segment(image: Image | str | Path, model: str | Path | LoadedModel, **options) -> np.ndarray:
    """Segment ``image`` with ``model``; return the labelmap on the input grid.

    Args:
        image: a path (NIfTI, NRRD, DICOM folder) or an `Image`.
        model: a segmenter directory, or a `LoadedModel` (an in-memory network or callable with its card).
        **options: see `segment_image` (device, overlap, sw_batch_size, memory_budget, progress).

    Returns:
        (X, Y, Z) label values (the model card's ``labels`` keys) with the input's shape; the input's affine
        applies to it.

    Examples:
        >>> labels = S2DCCore.segment("ct.nii.gz", "runs/liver/model")
    """
    return segment_image(image, model, **options).labels


def segment_image(image: Image | str | Path, model: str | Path | LoadedModel, *, device=None,
                  overlap: float = 0.25, roi=None, sw_batch_size: int = 1, blend: str = "gaussian",
                  memory_budget: int | None = None, progress: ProgressCallback | None = None,
                  precision: str = "bf16", postprocess: bool = True) -> Segmentation:
    """Segment ``image`` and keep the geometry and provenance (see `segment`).

    Args:
        image: a path or an `Image`.
        model: a segmenter directory or a `LoadedModel` with a ``segmenter``.
        device: ``torch.device``, a name (``auto``, ``cpu``, ``cuda``) or None for the CPU.
        overlap: sliding-window overlap fraction.
        roi: sliding-window size (an int or three; default: the card's ``roi``, else 96³).
        sw_batch_size: windows per forward pass.
        blend: ``gaussian`` or ``constant`` window blending.
        memory_budget: bytes allowed (None: 80 % of MemAvailable, or 90 % of free CUDA memory).
        progress: called with (windows done, windows in total).
        precision: autocast on CUDA (``bf16``, fp16 where bf16 is not native; ``fp16``; ``fp32``).
        postprocess: apply the card's post-processing (``postprocess.largest_component``: the structures that
            keep only their largest connected component, decided on validation by fine-tuning).

    Raises:
        DataError: bad input or model; `MemoryBudgetError` when the estimate exceeds the budget.
        UsageError: the model has no segmentation head (an encoder).
    """
    image, source = read_input(image)
    model = as_model(model)
    if model.segmenter is None:
        raise UsageError(f"{model.source} is an encoder; segmentation needs a segmenter (a fine-tuned model). "
                         "Use 'embed' or 'propagate' with an encoder")
    window = model.window(roi)
    model.check_segmentation_window(window)
    device = as_device(device)
    target = target_grid(image, model.spacing, model.orientation)
    n_classes = len(model.labels) or int((model.card.get("architecture") or {}).get("out_channels", 2))
    estimate = estimate_inference(
        input_shape=image.array.shape, model_shape=target.shape, roi=window, out_channels=n_classes,
        output_bytes_per_voxel=1, feature_size=model.feature_size, n_parameters=model.n_parameters(),
        sw_batch_size=sw_batch_size, decoder=True, on_device=device.type == "cuda",
        architecture=model.architecture,
        summary=f"model grid {'×'.join(map(str, target.shape))} at "
                f"{'×'.join(f'{s:.3g}' for s in target.spacing)} mm, {n_classes} classes, "
                f"window {'×'.join(map(str, window))}")
    check_budget(estimate, device=device, budget=memory_budget, path=source)
    prepared = prepare_input(image, model.preprocess, model.spacing, model.orientation, source)
    log.info("segmenting %s on %s: %s", source, device, estimate.summary)
    model.to(device)
    # Only the foreground box fine-tuning cropped its cases to; outside it, background (as in training).
    box = foreground_box(prepared.volume, model.preprocess)
    volume = prepared.volume if box is None else prepared.volume[box]
    logits = run_sliding_window(volume, model.segmenter, roi=window, device=device, overlap=overlap,
                                sw_batch_size=sw_batch_size, mode=blend, progress=progress, precision=precision)
    if box is not None and volume.shape != prepared.volume.shape:
        logits = _paste_in_background(logits, prepared.volume.shape, box)
    classes = argmax_resample(logits, prepared.model_grid, prepared.grid)
    names = model.labels or {c: ("background" if c == 0 else f"class {c}") for c in range(int(logits.shape[0]))}
    if len(names) != logits.shape[0]:
        raise DataError(f"the card names {len(names)} labels but the network gave {logits.shape[0]} channels",
                        model.source)
    # Channel i is the i-th smallest label value (fine-tuning's mapping); identity for values 0..K-1.
    values = np.array(sorted(names))
    labels = classes if np.array_equal(values, np.arange(len(values))) else \
        values.astype(np.min_scalar_type(int(values.max())))[classes]
    chosen = ((model.card.get("postprocess") or {}).get("largest_component") or []) if postprocess else []
    if chosen:
        from S2DCCore.inference.postprocess import keep_largest_components

        labels = keep_largest_components(labels, [int(v) for v in chosen])
    return Segmentation(labels=labels, affine=prepared.grid.affine.copy(), label_names=names,
                        model_grid=prepared.model_grid, estimate=estimate, source=source, model_source=model.source)


def _paste_in_background(logits, shape, box):
    """(K, *shape) scores: ``logits`` inside ``box``; outside, class 0 wins (its score is the box's maximum + 1)."""
    import torch

    full = torch.zeros((logits.shape[0], *shape), dtype=torch.float32)
    full[0] = float(logits.max()) + 1.0
    full[(slice(None), *box)] = logits
    return full


def write_segmentation(path: str | Path, result: Segmentation) -> tuple[Path, Path]:
    """Write the labelmap to ``path`` (format by suffix) and its label table to the sidecar JSON
    (``OUT.json``, see `S2DCCore.inference.label_table`); neither is written when either exists.

    Returns:
        (labelmap path, sidecar path).
    """
    provenance = {"image": result.source, "model": result.model_source,
                  "model_grid": {"shape": list(result.model_grid.shape), "spacing": list(result.model_grid.spacing)}}
    return write_labelmap(path, result.labels, result.affine, result.label_names, provenance)
