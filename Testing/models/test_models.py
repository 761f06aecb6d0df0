"""Encoder stages, the projection head's BatchNorm (fixed vs the official quirk), EMA, encoder transfer."""

from __future__ import annotations

import pytest
import torch

from S2DCCore.errors import DataError
from S2DCCore.models.ema import cosine_momentum, make_teacher, update_momentum
from S2DCCore.models.encoders import EncoderConfig, SwinEncoder, preset_encoder_config
from S2DCCore.models.heads import ProjectionHead
from S2DCCore.models.segmenter import SegmenterConfig, build_segmenter, load_pretrained_encoder

TINY = EncoderConfig(feature_size=12)


def test_encoder_stages_shapes_and_side_check():
    torch.manual_seed(0)
    stages = SwinEncoder(TINY).forward_features(torch.randn(2, 1, 32, 32, 64))
    assert [tuple(s.shape) for s in stages] == [(2, 12, 16, 16, 32), (2, 24, 8, 8, 16), (2, 48, 4, 4, 8),
                                                (2, 96, 2, 2, 4), (2, 192, 1, 1, 2)]
    with pytest.raises(ValueError, match="multiples of 32"):
        SwinEncoder(TINY).forward_features(torch.randn(1, 1, 32, 32, 48))
    assert preset_encoder_config("base").stage_channels() == (48, 96, 192, 384, 768)


def _window_attentions(module):
    from monai.networks.nets.swin_unetr import WindowAttention

    return [m for m in module.modules() if isinstance(m, WindowAttention)]


@pytest.mark.parametrize("build", [lambda: SwinEncoder(EncoderConfig(feature_size=12, window_size=4)),
                                   lambda: build_segmenter(SegmenterConfig(encoder=TINY, out_channels=3))],
                         ids=["encoder", "swinunetr"])
def test_fused_window_attention_in_inference_matches_the_plain_attention(build):
    """Every window attention of our networks asks MONAI for the fused kernel (no-grad passes only); its
    outputs equal MONAI's plain attention of the same weights, and training passes still use the plain one."""
    from monai.networks.nets.swin_unetr import SwinTransformer

    from S2DCCore.models.encoders import swin_kwargs

    torch.manual_seed(0)
    network = build().eval()
    attentions = _window_attentions(network)
    if not swin_kwargs(SwinTransformer):
        pytest.skip("this MONAI has no fused window attention (< 1.6)")
    assert attentions and all(a.use_flash_attention for a in attentions)
    x = torch.randn(2, 1, 64, 32, 32)
    run = (lambda: network.forward_features(x)) if hasattr(network, "forward_features") else (lambda: [network(x)])
    with torch.no_grad():
        fused = run()
        for a in attentions:
            a.use_flash_attention = False
        plain = run()
    for f, p in zip(fused, plain):
        assert torch.allclose(f, p, atol=1e-4, rtol=1e-4)
    assert any(not torch.equal(f, p) for f, p in zip(fused, plain))  # the fused kernel really ran
    for a in attentions:
        a.use_flash_attention = True
    with torch.enable_grad():
        trained = run()
    for t, p in zip(trained, plain):  # with gradients MONAI takes the plain path: identical numbers
        assert torch.equal(t.detach(), p)


def test_projection_head_batchnorm_over_features_is_per_feature():
    torch.manual_seed(0)
    head = ProjectionHead(6, 8, 4)
    # The first normalisation, checked directly: per feature, zero mean / unit variance over all tokens.
    x = torch.randn(10, 3, 6)
    h = head._norm(head.fc1(x.reshape(-1, 6)))
    assert torch.allclose(h.mean(0), torch.zeros(8), atol=1e-5)
    assert torch.allclose(h.var(0, unbiased=False), torch.ones(8), atol=1e-3)
    assert head(x).shape == (10, 3, 4)


def test_projection_head_official_quirk_normalises_per_slice():
    torch.manual_seed(0)
    quirk = ProjectionHead(6, 8, 4, norm_over="slices")
    fixed = ProjectionHead(6, 8, 4)
    fixed.load_state_dict(quirk.state_dict())
    x = torch.randn(10, 3, 6)  # (tokens, depth slices, features): the official geo-head input layout
    h = quirk._norm(quirk.fc1(x))
    # per slice: mean over tokens and features is 0 — but individual features are not centred
    assert torch.allclose(h.mean(dim=(0, 2)), torch.zeros(3), atol=1e-5)
    assert h.mean(dim=0).abs().max() > 0.1
    assert not torch.allclose(quirk(x), fixed(x))


def test_ema_update_and_schedule():
    student = torch.nn.Linear(3, 2)
    teacher = make_teacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    before = [p.clone() for p in teacher.parameters()]
    update_momentum(student, teacher, 0.9)
    for t, b, s in zip(teacher.parameters(), before, student.parameters()):
        assert torch.allclose(t, 0.9 * b + 0.1 * s)
    assert cosine_momentum(0, 11, 0.996) == pytest.approx(0.996)
    assert cosine_momentum(10, 11, 0.996) == pytest.approx(1.0)
    assert cosine_momentum(5, 11, 0.996) == pytest.approx(0.998)


def test_encoder_transfer_loads_every_weight_and_fails_loudly():
    torch.manual_seed(0)
    encoder = SwinEncoder(TINY)
    net = build_segmenter(SegmenterConfig(encoder=TINY, out_channels=3))
    loaded = load_pretrained_encoder(net, encoder.state_dict())
    assert loaded == len(encoder.state_dict())
    for key, value in encoder.state_dict().items():
        assert torch.equal(net.state_dict()[key], value)
    with pytest.raises(DataError, match="not in the checkpoint"):
        partial = dict(list(encoder.state_dict().items())[:-3])
        load_pretrained_encoder(net, partial)
    with pytest.raises(DataError, match="no place in the network"):
        load_pretrained_encoder(net, {**encoder.state_dict(), "head.weight": torch.zeros(1)})
    bigger = SwinEncoder(EncoderConfig(feature_size=24)).state_dict()
    with pytest.raises(DataError, match="shape of"):
        load_pretrained_encoder(net, bigger)
