"""The official-recipe switches of issue 14: Alice's CT window and drop path, pad|resize, L_g augmentation
mode, weight decay on everything, and the base preset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from S2DCCore.config import load_config
from S2DCCore.data.regions import random_region
from S2DCCore.data.views.s2dc import sample_crop_augmentation
from S2DCCore.training.config import PretrainConfig
from S2DCCore.training.optim import param_groups


def test_base_preset_is_the_official_training_recipe():
    config = load_config(PretrainConfig, "base", section="pretrain")
    assert config.precision == "fp32" and config.optim.grad_clip == 0 and config.optim.decay_norms_and_biases
    assert config.small_regions == "resize" and config.alice.drop_path_rate == 0.2
    assert (config.optim.lr, config.optim.weight_decay, config.s2dc.queue_size) == (3e-4, 0.1, 90)
    tiny = load_config(PretrainConfig, "tiny", section="pretrain")
    assert tiny.small_regions == "pad" and tiny.optim.grad_clip == 1.0


def test_alice_has_its_own_ct_window():
    from S2DCCore.training.methods import alice

    config = load_config(PretrainConfig, "tiny", ["method=alice"], section="pretrain")
    assert config.preprocess.ct_window == (-1000.0, 1000.0)
    assert alice.preprocess(config).ct_window == (-125.0, 225.0)
    shared = load_config(PretrainConfig, "tiny", ["method=alice", "alice.ct_window=null"], section="pretrain")
    assert alice.preprocess(shared).ct_window == (-1000.0, 1000.0)
    mr = load_config(PretrainConfig, "tiny", ["method=alice", "preprocess.preset=mr"], section="pretrain")
    assert alice.preprocess(mr) == mr.preprocess


def test_alice_drop_path_in_the_student_only():
    from S2DCCore.training.methods import alice

    config = load_config(PretrainConfig, "tiny", ["method=alice", "alice.drop_path_rate=0.2"], section="pretrain")
    method = alice.build_method(config)
    student = [m.drop_prob for m in method.student.modules() if hasattr(m, "drop_prob")]
    teacher = [m.drop_prob for m in method.teacher.modules() if hasattr(m, "drop_prob")]
    assert student and max(student) > 0 and teacher and max(teacher) == 0


def test_resize_stretches_small_volumes_and_draws_like_pad():
    volume = torch.arange(20 * 30 * 8, dtype=torch.float32).reshape(1, 20, 30, 8)
    a, b = np.random.default_rng(0), np.random.default_rng(0)
    padded = random_region(volume, (16, 16, 16), a, "pad")
    resized = random_region(volume, (16, 16, 16), b, "resize")
    assert padded.shape == resized.shape == (1, 16, 16, 16)
    assert a.integers(1 << 30) == b.integers(1 << 30)  # the same draws: nothing else changes
    # z (8 → 16) is stretched: its first and last slices are the volume's, corners aligned.
    x0 = int(resized[0, 0, 0, 0].item()) // (30 * 8)
    y0 = int(resized[0, 0, 0, 0].item()) % (30 * 8) // 8
    torch.testing.assert_close(resized[0, 0, 0, [0, -1]], volume[0, x0, y0, [0, -1]])
    assert (padded[0, :, :, :4] == 0).all() and (padded[0, :, :, 4:12] != 0).any()


def test_official_crop_augmentation_uses_monai_range_semantics():
    rng = np.random.default_rng(0)
    official = [sample_crop_augmentation(rng, 96, mode="official") for _ in range(300)]
    fixed = [sample_crop_augmentation(rng, 96, mode="fixed") for _ in range(300)]
    z_scales = np.array([p.scale[2] for p in official])
    assert z_scales.min() < 0.3 and z_scales.max() > 1.7 and all(p.scale[2] == 1.0 for p in fixed)
    xy = np.array([p.scale[:2] for p in official])
    assert xy.min() < 0.3 and xy.max() > 1.7
    shift = lambda ps: np.mean([abs(p.translation[0]) for p in ps])  # noqa: E731
    assert shift(official) < 0.7 * shift(fixed)  # U(-|t|, |t|) halves the mean magnitude
    with pytest.raises(ValueError):
        sample_crop_augmentation(rng, 96, mode="monai")


def test_decay_on_every_parameter():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    assert [len(g["params"]) for g in param_groups(model, 0.1)] == [1, 3]
    groups = param_groups(model, 0.1, decay_all=True)
    assert len(groups) == 1 and len(groups[0]["params"]) == 4 and groups[0]["weight_decay"] == 0.1
