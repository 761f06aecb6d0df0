"""The Alice method module: named terms, frozen last layers, the EMA schedule, skipped terms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from S2DCCore.config import load_config
from S2DCCore.data.views.alice import collate_pairs, make_alice_pair
from S2DCCore.data.views.matching import SelfMatcher
from S2DCCore.errors import UsageError
from S2DCCore.models.ema import cosine_momentum
from S2DCCore.training.config import PretrainConfig
from S2DCCore.training.methods import alice

SMALL = ["method=alice", "steps=10", "alice.roi=[32,32,64]", "alice.model.head_hidden=32",
         "alice.model.casa_inner=32"]


def _batch(config: PretrainConfig) -> dict:
    torch.manual_seed(0)
    volumes = [torch.rand(1, 40, 40, 70) for _ in range(2)]
    a = config.alice
    pair = make_alice_pair(volumes, np.random.default_rng(0), SelfMatcher(), roi=a.roi, margin=4)
    return collate_pairs([pair])


def test_step_terms_frozen_last_layers_and_teacher_momentum():
    config = load_config(PretrainConfig, "tiny", SMALL, section="pretrain")
    torch.manual_seed(0)
    method = alice.build_method(config).train()
    batch = _batch(config)
    terms = method(batch)
    assert sorted(terms.parts) == ["cls", "patch", "rec"] and torch.isfinite(terms.total)
    terms.total.backward()
    head = method.student.head
    assert head.cls_layer.weight.grad is None and head.patch_layer.weight.grad is None  # frozen for 2 steps
    assert method.casa.to_q.weight.grad is not None and method.student.backbone.out.conv.conv.weight.grad is not None
    assert all(p.grad is None for p in method.teacher.parameters())
    before = next(method.teacher.parameters()).detach().clone()
    student = next(method.student.parameters()).detach().clone()
    method.after_step()
    m = cosine_momentum(0, config.steps, config.alice.model.ema_momentum)
    torch.testing.assert_close(next(method.teacher.parameters()), m * before + (1 - m) * student)
    assert int(method.step) == 1 and float(method.criterion.cls_center.value.abs().sum()) > 0
    method.after_step()
    method.zero_grad()
    method(batch).total.backward()  # step 2: the last layers train
    assert head.cls_layer.weight.grad is not None and head.patch_layer.weight.grad is not None


def test_zero_weights_skip_terms_and_their_networks():
    config = load_config(PretrainConfig, "tiny", SMALL + ["alice.loss.weight_patch=0", "alice.loss.weight_cls=0"],
                         section="pretrain")
    method = alice.build_method(config).train()
    terms = method(_batch(config))
    assert sorted(terms.parts) == ["rec"]
    terms.total.backward()
    assert method.casa.to_q.weight.grad is None and method.student.head.mlp[0].weight.grad is None
    assert alice.has_unused_parameters(config)


def test_configuration_errors():
    with pytest.raises(UsageError, match="at least one side"):
        load_config(PretrainConfig, "tiny", ["alice.roi=[32,32,32]"], section="pretrain")
    with pytest.raises(UsageError, match="mask patch"):
        load_config(PretrainConfig, "tiny", ["alice.roi=[64,64,32]", "alice.mask_patch=24"], section="pretrain")
    with pytest.raises(UsageError, match="encoder directory"):
        alice.build_method(load_config(PretrainConfig, "tiny", ["alice.matcher=/no/such/encoder"],
                                       section="pretrain"))
