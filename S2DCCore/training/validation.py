"""Sliding-window validation of a segmenter during fine-tuning: light on the GPU, shared by all ranks.

Per case the windows run on the training device under autocast (as training does), their logits are
stitched on the CPU (a 300×300×250 grid with 14 classes is 1.3 GB of fp32 there instead of GPU memory),
and Dice is computed from per-class voxel counts (a K×K confusion histogram of the argmax) rather than
from one-hot tensors of prediction and label (int64 one-hots of that grid cost ~8–10 GB more).

Under torchrun every rank validates its share of the cases (case i on rank i mod world) and the per-case
scores are gathered, so no rank idles in a collective while rank 0 validates everything (NCCL's
default timeout is 10 minutes; `S2DCCore.training.ddp` also raises it). All ranks must call
`validate_segmentation` (or `validate_with_postprocess`) at the same steps.

`validate_with_postprocess` also scores every structure with only its largest connected component kept
(`S2DCCore.inference.postprocess`), from which fine-tuning decides nnU-Net's post-processing.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from S2DCCore.utils.distributed import all_gather_cat, get_rank, get_world_size
from S2DCCore.utils.runtime import autocast_context


def class_counts(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Confusion histogram (K, K) of integer maps: entry [t, p] counts voxels of class t predicted as p."""
    index = target.reshape(-1).long() * n_classes + pred.reshape(-1).long()
    return torch.bincount(index, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def dice_from_counts(confusion: torch.Tensor) -> torch.Tensor:
    """Dice per foreground class (K − 1,) float64 from a confusion histogram; NaN where the label has no
    voxel of the class (as MONAI's ``compute_dice(include_background=False, ignore_empty=True)``)."""
    confusion = confusion.double()
    inter = confusion.diagonal()[1:]
    truth, predicted = confusion.sum(1)[1:], confusion.sum(0)[1:]
    dice = 2 * inter / (truth + predicted).clamp_min(1)
    return torch.where(truth > 0, dice, torch.full_like(dice, math.nan))


@torch.no_grad()
def case_dice(network: nn.Module, image: torch.Tensor, label: torch.Tensor, *, roi, overlap: float,
              device: torch.device, precision: str, sw_batch_size: int = 2,
              largest_component: bool = False) -> torch.Tensor:
    """Dice per foreground class of one case.

    Args:
        image: (1, X, Y, Z) float32 (CPU). label: (1, X, Y, Z) or (X, Y, Z) class indices 0..K−1.
        largest_component: also score each class with only its largest component kept.

    Returns:
        (K − 1,) float64 CPU tensor (NaN for classes absent from the label); (2, K − 1) with
        ``largest_component`` (row 1: the kept component's Dice).
    """
    from monai.inferers import sliding_window_inference

    def predict(window: torch.Tensor) -> torch.Tensor:
        with autocast_context(device, precision):
            return network(window).float()

    logits = sliding_window_inference(image[None].float(), list(roi), sw_batch_size, predict, overlap=overlap,
                                      sw_device=device, device=torch.device("cpu"))  # (1, K, X, Y, Z) on the CPU
    n_classes = logits.shape[1]
    pred = logits[0].argmax(0)
    del logits
    target = label.reshape(pred.shape)
    dice = dice_from_counts(class_counts(pred, target, n_classes))
    if not largest_component:
        return dice
    from S2DCCore.inference.postprocess import dice_with_largest_component

    kept = dice_with_largest_component(pred.numpy(), target.numpy(), n_classes)
    return torch.stack([dice, torch.as_tensor(kept, dtype=torch.float64)])


def validate_segmentation(network: nn.Module, cases: list[dict], *, roi, overlap: float, device: torch.device,
                          precision: str, names: list[str], sw_batch_size: int = 2) -> dict[str, float]:
    """Mean Dice per foreground structure over ``cases`` (each ``{"image", "label"}``, see `case_dice`).

    A collective under torchrun: every rank calls it with the same ``cases`` and gets the same result.
    Structures absent from every label give NaN.
    """
    return _validate(network, cases, roi=roi, overlap=overlap, device=device, precision=precision, names=names,
                     sw_batch_size=sw_batch_size, largest_component=False)[0]


def validate_with_postprocess(network: nn.Module, cases: list[dict], *, roi, overlap: float, device: torch.device,
                              precision: str, names: list[str],
                              sw_batch_size: int = 2) -> tuple[dict[str, float], dict[str, float]]:
    """`validate_segmentation`'s mean Dice per structure, and the same with only each structure's largest
    component kept (a collective under torchrun, like `validate_segmentation`)."""
    return _validate(network, cases, roi=roi, overlap=overlap, device=device, precision=precision, names=names,
                     sw_batch_size=sw_batch_size, largest_component=True)


def _validate(network: nn.Module, cases: list[dict], *, roi, overlap: float, device: torch.device, precision: str,
              names: list[str], sw_batch_size: int, largest_component: bool) -> tuple[dict[str, float], ...]:
    world, rank = get_world_size(), get_rank()
    per_rank = -(-len(cases) // world)
    rows_per_case = 2 if largest_component else 1
    rows = torch.full((per_rank, rows_per_case * (len(names) - 1)), math.nan, dtype=torch.float64)
    was_training = network.training
    network.eval()
    try:
        for row, case in enumerate(cases[rank::world]):
            rows[row] = case_dice(network, case["image"], case["label"], roi=roi, overlap=overlap, device=device,
                                  precision=precision, sw_batch_size=sw_batch_size,
                                  largest_component=largest_component).reshape(-1)
    finally:
        network.train(was_training)
    collective_device = device if device.type == "cuda" and world > 1 else torch.device("cpu")  # NCCL needs CUDA
    scores = all_gather_cat(rows.to(collective_device)).cpu()
    mean = torch.nanmean(scores, dim=0) if len(scores) else torch.full((rows.shape[1],), math.nan)
    parts = mean.reshape(rows_per_case, len(names) - 1)
    return tuple({name: float(d) for name, d in zip(names[1:], part)} for part in parts)
