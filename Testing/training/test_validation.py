"""Fine-tuning validation from per-class counts (no one-hots), stitched on the CPU, equals MONAI's Dice."""

from __future__ import annotations

import math

import torch

from S2DCCore.training.validation import class_counts, dice_from_counts, validate_segmentation


def test_dice_from_counts_equals_monai_one_hot_dice():
    from monai.metrics import compute_dice

    generator = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 4, (9, 8, 7), generator=generator)
    target = torch.randint(0, 3, (9, 8, 7), generator=generator)  # class 3 absent from the label: NaN
    ours = dice_from_counts(class_counts(pred, target, 4))
    one_hot = lambda x: torch.nn.functional.one_hot(x, 4).permute(3, 0, 1, 2)[None].float()  # noqa: E731
    reference = compute_dice(one_hot(pred), one_hot(target), include_background=False, ignore_empty=True)[0]
    assert math.isnan(ours[2]) and math.isnan(reference[2])
    torch.testing.assert_close(ours[:2].float(), reference[:2].float())


def test_validation_makes_no_one_hot_and_stitches_on_the_cpu(monkeypatch):
    import monai.inferers

    def no_one_hot(*args, **kwargs):
        raise AssertionError("validation must not build one-hot tensors")

    stitched_on = []
    original = monai.inferers.sliding_window_inference

    def recording(*args, **kwargs):
        stitched_on.append(torch.device(kwargs.get("device") or "cpu"))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "one_hot", no_one_hot)
    monkeypatch.setattr(monai.inferers, "sliding_window_inference", recording)
    torch.manual_seed(0)
    network = torch.nn.Conv3d(1, 3, kernel_size=1)
    case = {"image": torch.rand(1, 32, 32, 32), "label": torch.randint(0, 3, (1, 32, 32, 32))}
    dice = validate_segmentation(network, [case], roi=(32, 32, 32), overlap=0.0, device=torch.device("cpu"),
                                 precision="bf16", names=["bg", "a", "b"])
    assert set(dice) == {"a", "b"} and stitched_on == [torch.device("cpu")]
    assert network.training
