"""Alice's and SwinSSL's network pieces: SwinUNETR stages, CASA against explicit attention, heads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from S2DCCore.models.alice_heads import AliceHead, NormedLinear
from S2DCCore.models.alice_network import AliceModelConfig, AliceNetwork
from S2DCCore.models.casa import CASA
from S2DCCore.models.encoders import EncoderConfig
from S2DCCore.models.segmenter import SegmenterConfig, build_segmenter
from S2DCCore.models.swinssl_heads import SwinSSLHeads
from S2DCCore.models.swinunetr_stages import swinunetr_stages

TINY = EncoderConfig(feature_size=12, window_size=4)


@pytest.fixture(scope="module")
def segmenter():
    torch.manual_seed(0)
    return build_segmenter(SegmenterConfig(encoder=TINY, out_channels=1)).train()


def test_stages_reproduce_swinunetr_forward(segmenter):
    x = torch.rand(1, 1, 64, 32, 32)
    stages = swinunetr_stages(segmenter, x, output=True)
    torch.testing.assert_close(stages.output, segmenter(x))
    assert {k: tuple(v.shape[1:]) for k, v in stages.decoder.items()} == {
        4: (192, 2, 1, 1), 3: (96, 4, 2, 2), 2: (48, 8, 4, 4), 1: (24, 16, 8, 8), 0: (12, 32, 16, 16)}
    coarse = swinunetr_stages(segmenter, x, decoder_level=3)
    assert sorted(coarse.decoder) == [3, 4] and coarse.output is None
    with pytest.raises(ValueError, match="multiples of 32"):
        swinunetr_stages(segmenter, torch.rand(1, 1, 48, 32, 32))


def _attention_by_hand(casa: CASA, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
    """Per-head softmax(q kᵀ / √d) v, written out, then the residual/LayerNorm/MLP of the official layer."""
    heads, d = casa.heads, casa.head_dim
    qs, ks, vs = casa.to_q(q), casa.to_k(kv), casa.to_v(kv)
    outs = []
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        weights = torch.softmax(qs[..., sl] @ ks[..., sl].transpose(1, 2) / d**0.5, dim=-1)
        outs.append(weights @ vs[..., sl])
    x = q + casa.out(torch.cat(outs, -1))
    x = F.layer_norm(x, (q.shape[-1],), casa.norm_attn.weight, casa.norm_attn.bias, 1e-6)
    return F.layer_norm(x + casa.mlp(x), (q.shape[-1],), casa.norm_mlp.weight, casa.norm_mlp.bias, 1e-6)


def test_casa_matches_explicit_attention_and_drops_out_only_in_training():
    torch.manual_seed(0)
    casa = CASA(dim=16, inner_dim=32, heads=8, head_dim=4).eval()
    q, kv = torch.randn(2, 3, 16), torch.randn(2, 7, 16)
    torch.testing.assert_close(casa(q, kv), _attention_by_hand(casa, q, kv))
    casa.train()
    assert not torch.allclose(casa(q, kv), casa(q, kv))  # dropout 0.1


def test_normed_linear_rows_are_unit_and_frozen_blocks_gradients():
    layer = NormedLinear(5, 3)
    eye = torch.eye(5)
    torch.testing.assert_close(layer(eye).T.norm(dim=1), torch.ones(3))  # W rows have norm 1
    x = torch.randn(2, 5, requires_grad=True)
    layer(x, frozen=True).sum().backward()
    assert layer.weight.grad is None and x.grad is not None
    learned = NormedLinear(5, 3, fixed_norm=False)
    learned(torch.randn(2, 5)).sum().backward()
    assert learned.weight.grad is not None and learned.gain.grad is not None


def test_alice_head_shapes_and_the_cls_token_skips_the_encoder_projection():
    torch.manual_seed(0)
    head = AliceHead(query_dim=8, decoder_dim=4, hidden_dim=16, bottleneck_dim=6, out_dim=10, patch_out_dim=7)
    cls, enc, dec = head(torch.randn(2, 8), torch.randn(2, 3, 8), torch.randn(2, 5, 4))
    assert cls.shape == (2, 10) and enc.shape == (2, 3, 7) and dec.shape == (2, 5, 7)
    token = torch.randn(1, 8)
    expected = head.patch_layer(F.normalize(head.mlp(head.encoder_proj(token)), dim=-1))
    torch.testing.assert_close(head(None, token[:, None], None)[1][:, 0], expected)
    assert head(None, None, None) == (None, None, None)


def test_alice_network_outputs_follow_the_stage_mapping():
    torch.manual_seed(0)
    model = AliceModelConfig(head_hidden=16, head_bottleneck=8, out_dim=12, patch_out_dim=10)
    net = AliceNetwork(TINY, model)
    out = net(torch.rand(2, 1, 64, 64, 32))
    assert out.cls.shape == (2, 12)
    assert out.query.shape == (2, 2 * 2 * 1, 10)  # last encoder stage of 64×64×32
    assert out.kv.shape == (2, 4 * 4 * 2, 10)  # decoder level 3 (stride 16)
    assert out.reconstruction.shape == (2, 1, 64, 64, 32)
    assert all(k.startswith("swinViT.") for k in net.backbone.state_dict() if "swinViT" in k)


def test_swinssl_heads_official_tokens_and_pooled():
    torch.manual_seed(0)
    heads = SwinSSLHeads(32, contrast_dim=6)
    last = torch.randn(2, 32, 2, 1, 1)
    rot, con, rec = heads(last)
    torch.testing.assert_close(rot, heads.rotation(last[:, :, 0, 0, 0]))
    torch.testing.assert_close(con, heads.contrastive(last[:, :, 1, 0, 0]))
    assert rec.shape == (2, 1, 64, 32, 32)
    pooled = SwinSSLHeads(32, contrast_dim=6, token="pooled")
    assert pooled(last, reconstruct=False)[2] is None
    with pytest.raises(ValueError, match="two tokens"):
        heads(torch.randn(1, 32, 1, 1, 1))


def test_head_logits_are_fp32_under_bf16_autocast():
    """The teacher divides these logits by ~0.01: bf16 logits (8-bit mantissa) visibly shift its softmax."""
    torch.manual_seed(0)
    head = AliceHead(query_dim=24, decoder_dim=12, hidden_dim=32, bottleneck_dim=8, out_dim=16, patch_out_dim=10)
    inputs = (torch.randn(2, 24), torch.randn(2, 4, 24), torch.randn(2, 32, 12))
    reference = head(*inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = head(*inputs)
    for ours, ref in zip(mixed, reference):
        assert ours.dtype == torch.float32
        torch.testing.assert_close(ours, ref, atol=0.05, rtol=0.05)  # the MLP before it may run in bf16
