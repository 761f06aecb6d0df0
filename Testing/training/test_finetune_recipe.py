"""The fine-tuning recipe: crops, schedules, layer-wise rates, the light head, LP-FT, resume and DDP."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from S2DCCore.checkpoint import load_model_dir, load_state, save_model_dir
from S2DCCore.config import load_config
from S2DCCore.data.phantoms import PhantomConfig, write_phantom_cohort
from S2DCCore.models.encoders import EncoderConfig, SwinEncoder
from S2DCCore.models.light_head import LightSegmenter
from S2DCCore.models.segmenter import SegmenterConfig, build_segmenter, load_pretrained_encoder
from S2DCCore.training import crops
from S2DCCore.training.config import FinetuneConfig
from S2DCCore.training.finetune import SegmentationTask, finetune
from S2DCCore.training.optim import finetune_param_groups, make_scheduler, warmup_poly_factor

TINY = ["runtime.device=cpu", "runtime.threads=1", "progress=none", "log_every=1", "val_cases=1"]
ENCODER = EncoderConfig(feature_size=12, window_size=4)


def tiny(*overrides: str) -> FinetuneConfig:
    return load_config(FinetuneConfig, "tiny", TINY + list(overrides), section="finetune")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return write_phantom_cohort(tmp_path_factory.mktemp("ph") / "ph", cases=3, seed=5, config=PhantomConfig(size=48))


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    card = {"kind": "encoder", "method": "s2dc", "architecture": {"feature_size": 12, "window_size": 4}, "step": 3}
    return save_model_dir(tmp_path_factory.mktemp("enc") / "encoder", SwinEncoder(ENCODER).state_dict(), card)


# ---------------------------------------------------------------------------------------------- crops

def _toy_case(roi=(8, 8, 8)):
    label = torch.zeros(1, 12, 10, 6, dtype=torch.long)
    label[0, 1, 1, 1] = 3  # one voxel of class 3
    label[0, 5:9, 2:8, 1:5] = 1
    image = torch.arange(12 * 10 * 6, dtype=torch.float32).reshape(1, 12, 10, 6)
    return crops.index_case(image, label, roi)


def test_index_case_pads_and_indexes_every_class_once():
    case = _toy_case()
    # z is 6 < 8: padded by 2 at both ends (10), with 0; the case sits in the middle.
    assert tuple(case.image.shape) == (1, 12, 10, 10) and tuple(case.label.shape) == (12, 10, 10)
    original = torch.arange(12 * 10 * 6, dtype=torch.float32).reshape(1, 12, 10, 6) + 1.0
    padded = crops.index_case(original, torch.zeros(1, 12, 10, 6, dtype=torch.long), (8, 8, 8)).image
    assert torch.equal(padded[..., 2:8], original) and not padded[..., :2].any() and not padded[..., 8:].any()
    assert sorted(case.class_voxels) == [1, 3]
    flat = case.label.reshape(-1).numpy()
    for c, voxels in case.class_voxels.items():
        assert np.array_equal(np.sort(voxels), np.flatnonzero(flat == c))


def test_crops_hold_a_small_case_at_every_offset():
    """Along an axis shorter than the crop, the case's position inside the crop varies over all offsets (it
    was always at the crop's start, the same frame for every crop)."""
    image = torch.ones(1, 8, 8, 5)
    case = crops.index_case(image, torch.ones(1, 8, 8, 5, dtype=torch.long), (8, 8, 8))
    config = crops.SamplingConfig(foreground=0.0, intensity_scale=0.0, intensity_shift=0.0)
    rng = np.random.default_rng(0)
    offsets = {int(torch.nonzero(crops.sample_crop(case, (8, 8, 8), config, rng)[0][0, 0, 0])[0])
               for _ in range(60)}
    assert offsets == {0, 1, 2, 3}


def test_foreground_crops_centre_every_class_even_a_single_voxel():
    case = _toy_case()
    rng = np.random.default_rng(0)
    config = crops.SamplingConfig(foreground=1.0, intensity_scale=0.0, intensity_shift=0.0)
    seen = set()
    for _ in range(40):
        image, label = crops.sample_crop(case, (8, 8, 8), config, rng)
        assert tuple(image.shape) == (1, 8, 8, 8) and tuple(label.shape) == (1, 8, 8, 8)
        seen |= set(label.unique().tolist())
    assert 3 in seen  # the one-voxel class is centred about half the time


def test_flips_only_along_the_listed_axes_and_keep_image_and_label_together():
    case = _toy_case((12, 10, 6))
    plain = crops.sample_crop(case, (12, 10, 8), crops.SamplingConfig(0.0, (), 0.0, 0.0), np.random.default_rng(1))
    for seed in range(8):
        image, label = crops.sample_crop(case, (12, 10, 8), crops.SamplingConfig(0.0, (0,), 0.0, 0.0),
                                         np.random.default_rng(seed))
        if torch.equal(image, plain[0]):
            continue
        assert torch.equal(image, plain[0].flip(1)) and torch.equal(label, plain[1].flip(1))
        break
    else:
        pytest.fail("no flip in 8 draws")


def test_bad_sampling_config_is_refused():
    with pytest.raises(ValueError, match="foreground"):
        crops.SamplingConfig(foreground=1.5)
    with pytest.raises(ValueError, match="flip_axes"):
        crops.SamplingConfig(flip_axes=(3,))


# --------------------------------------------------------------------------- schedules and rates

def test_poly_schedule_matches_nnunet_formula():
    assert warmup_poly_factor(0, 10, 110) == pytest.approx(0.1)
    assert warmup_poly_factor(10, 10, 110) == pytest.approx(1.0)
    assert warmup_poly_factor(60, 10, 110) == pytest.approx(0.5**0.9)
    assert warmup_poly_factor(110, 10, 110) == 0.0


def test_layer_wise_rates_and_the_frozen_encoder_phase():
    task = SegmentationTask(LightSegmenter(ENCODER, 3))
    groups = finetune_param_groups(task, 1e-3, 0.01, encoder_lr_scale=0.5, layer_decay=0.5, encoder_start=4)
    by_name = {}
    for g in groups:
        by_name.setdefault(g["name"], set()).add(g["lr"])
    assert by_name["head"] == {1e-3}
    for depth in range(5):
        (rate,) = by_name[f"encoder/{depth}"]
        assert rate == pytest.approx(1e-3 * 0.5 * 0.5 ** (4 - depth))
    counted = sum(p.numel() for g in groups for p in g["params"])
    assert counted == sum(p.numel() for p in task.parameters())
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    scheduler = make_scheduler(optimizer, 2, 10, kind="poly")
    encoder = [g for g in optimizer.param_groups if g["name"].startswith("encoder")]
    head = [g for g in optimizer.param_groups if g["name"] == "head"]
    for step in range(6):
        if step < 4:
            assert all(g["lr"] == 0.0 for g in encoder)
        assert head[0]["lr"] > 0
        optimizer.step()
        scheduler.step()
    assert all(g["lr"] > 0 for g in encoder)


# ------------------------------------------------------------------------------------- the head

def test_light_segmenter_shapes_and_pretrained_encoder_load():
    net = build_segmenter(SegmenterConfig(encoder=ENCODER, out_channels=5, decoder="light"))
    assert isinstance(net, LightSegmenter)
    assert tuple(net(torch.zeros(1, 1, 32, 64, 32)).shape) == (1, 5, 32, 64, 32)
    encoder = SwinEncoder(ENCODER)
    assert load_pretrained_encoder(net, encoder.state_dict()) == len(encoder.state_dict())
    for key, value in encoder.state_dict().items():
        assert torch.equal(net.state_dict()[key], value)


def test_frozen_encoder_gets_no_gradient_and_head_does():
    torch.manual_seed(0)
    task = SegmentationTask(LightSegmenter(ENCODER, 3))
    batch = {"image": torch.randn(1, 1, 32, 32, 32), "label": torch.randint(0, 3, (1, 1, 32, 32, 32))}
    task.frozen_encoder = True
    task(batch).total.backward()
    assert all(p.grad is None for p in task.network.swinViT.parameters())
    assert all(p.grad is not None for p in task.network.head.parameters())
    task.zero_grad(set_to_none=True)
    task.frozen_encoder = False
    task(batch).total.backward()
    assert all(p.grad is not None for n, p in task.network.swinViT.named_parameters() if p.requires_grad)


def test_frozen_swinunetr_gives_the_same_logits_as_its_forward():
    torch.manual_seed(0)
    net = build_segmenter(SegmenterConfig(encoder=ENCODER, out_channels=3)).eval()
    task = SegmentationTask(net)
    image = torch.randn(1, 1, 64, 64, 64)
    from S2DCCore.training.finetune import segmenter_logits

    torch.testing.assert_close(segmenter_logits(net, image, encoder_grad=False), net(image))


# ---------------------------------------------------------------------- runs: LP-FT, resume, DDP

def test_lp_ft_keeps_the_encoder_during_the_head_phase(cohort, encoder_dir, tmp_path):
    config = tiny("steps=2", "val_every=2", "train_cases=1", "head_warmup_steps=2", "decoder=light")
    model = finetune(cohort, tmp_path / "run", config, init=encoder_dir)
    tensors, card = load_model_dir(model)
    encoder, _ = load_model_dir(encoder_dir)
    for key, value in encoder.items():
        assert torch.equal(tensors[key], value), key  # the encoder never moved
    assert card["architecture"]["decoder"] == "light" and card["recipe"]["head_warmup_steps"] == 2


def test_finetune_resume_equals_an_uninterrupted_run(cohort, encoder_dir, tmp_path):
    common = ["decoder=light", "train_cases=2", "val_every=4", "head_warmup_steps=1"]
    straight = finetune(cohort, tmp_path / "a", tiny("steps=4", *common), init=encoder_dir)
    finetune(cohort, tmp_path / "b", tiny("steps=2", "save_every=2", *common), init=encoder_dir)
    # The stopped run's config said steps=2; resuming asks for the same run with steps=4.
    resumed = finetune(cohort, tmp_path / "b", tiny("steps=4", *common), init=encoder_dir, resume=True)
    a, _ = load_model_dir(straight)
    b, card = load_model_dir(resumed)
    assert card["step"] == 4
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_finetune_under_torchrun_two_processes_gloo(cohort, tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "S2DCCore.cli.main", "finetune", "--data", str(cohort), "--out", str(run), "--preset", "tiny",
         "--steps", "2", "--train-cases", "2", "--device", "cpu", "--progress", "none", "save_every=2",
         "val_every=2", "runtime.threads=1", "val_cases=1", "log_every=1"],
        capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]  # one writer
    assert load_state(run / "checkpoints" / "last")["step"] == 2
    assert load_model_dir(run / "model")[1]["step"] == 2
    assert math.isfinite(json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["loss"])
