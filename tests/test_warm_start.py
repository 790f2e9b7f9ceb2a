"""train.warm_start: a 32-px restorer grown into a 64-px one starts as the small one, upsampled."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from mmrface.errors import UserError
from mmrface.models import build_model
from mmrface.train.warm_start import BLUR, grow_state

CODEC = {"block": "mmrb", "channel_multiplier": 1, "narrow": 0.0625, "max_channels": 32,
         "block_options": {"paths": ["local", "context", "weak"], "dilation": 2, "attention": True}}
PRIOR = {"n_mlp": 2, "channel_multiplier": 1, "narrow": 0.0625, "max_channels": 32, "noise_mode": "zero"}


def model_cfg(size: int, enc_blocks: list[int], **codec) -> dict:
    return {"arch": "mmrface", "size": size, "style_dim": 32, "input_skip": True,
            "codec": {**CODEC, "enc_blocks": enc_blocks, **codec}, "prior": dict(PRIOR)}


def trained_small() -> torch.nn.Module:
    torch.manual_seed(0)
    small = build_model(model_cfg(32, [1, 1, 1, 1])).eval()
    with torch.no_grad():  # non-trivial weights everywhere (a fresh net has zero biases / noise gains)
        for p in small.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return small


def blur_down(x: torch.Tensor) -> torch.Tensor:
    k = torch.outer(BLUR, BLUR).expand(3, 1, 3, 3)
    return F.conv2d(x, k, stride=2, padding=1, groups=3)


def test_grown_model_starts_as_the_small_one_upsampled():
    small = trained_small()
    torch.manual_seed(1)
    big = build_model(model_cfg(64, [0, 1, 1, 1, 1])).eval()
    state, counts = grow_state(small.state_dict(), big)
    big.load_state_dict(state)
    assert counts["copied"] > 0 and counts["constructed"] >= 8 and counts["fresh"] > 0
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    lo = blur_down(x)
    with torch.no_grad():
        for w in (1.0, 0.4):
            out_big = big(x, w=w)
            out_small = small(lo, w=w)
            # prior images: the big one is the small one bilinearly upsampled (input skips removed)
            want = F.interpolate(out_small - w * lo, scale_factor=2, mode="bilinear", align_corners=False)
            assert torch.allclose(out_big - w * x, want, atol=1e-4), (out_big - w * x - want).abs().max()


def test_grown_model_trains_its_new_level():
    small = trained_small()
    big = build_model(model_cfg(64, [1, 1, 1, 1, 1])).train()  # with blocks at the new level: approximate start
    state, _ = grow_state(small.state_dict(), big)
    big.load_state_dict(state)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    opt = torch.optim.SGD(big.parameters(), lr=0.1)
    # step 1: the zeroed to-RGB of the new level learns; everything behind it is still silent
    big(x).square().mean().backward()
    grads = {n: p.grad for n, p in big.named_parameters() if p.requires_grad}
    for name in ("prior.to_rgbs.3.conv.weight", "encoder.body.0.down.weight", "encoder.conv_in.weight"):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name
    assert grads["decoder.heads.3.scale.weight"].abs().sum() == 0
    opt.step()
    opt.zero_grad()
    # step 2: the new level's SFT head and styled convs now have a path to the image
    big(x).square().mean().backward()
    for name in ("decoder.heads.3.scale.weight", "decoder.heads.3.shift.weight", "prior.convs.6.conv.weight"):
        assert dict(big.named_parameters())[name].grad.abs().sum() > 0, name


def test_shape_mismatch_is_named():
    small = trained_small()
    wider = build_model(model_cfg(64, [0, 1, 1, 1, 1], narrow=0.125, max_channels=64))
    with pytest.raises(UserError, match="same widths"):
        grow_state(small.state_dict(), wider)
    same = build_model(model_cfg(32, [1, 1, 1, 1]))
    with pytest.raises(UserError, match="exactly one level"):
        grow_state(small.state_dict(), same)


def test_min_channels_floors_the_largest_levels():
    thin = build_model(model_cfg(64, [0, 1, 1, 1, 1]))
    floored = build_model({**model_cfg(64, [0, 1, 1, 1, 1], min_channels=24),
                           "prior": {**PRIOR, "min_channels": 24}})
    assert thin.prior.channels[64] == 16 and floored.prior.channels[64] == 24
    assert floored.encoder.conv_in.out_channels == 24
    assert copy.deepcopy(floored.prior.channels)[4] == thin.prior.channels[4] == 32
