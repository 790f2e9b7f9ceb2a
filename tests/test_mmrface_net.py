import copy

import pytest
import torch

from mmrface.config import load_config
from mmrface.models import build_model
from mmrface.models.mmrface_net import MMRFaceNet


@pytest.fixture
def tiny_cfg():
    return load_config("tiny").model


@pytest.fixture
def tiny(tiny_cfg):
    torch.manual_seed(0)
    return build_model(tiny_cfg)


def test_tiny_forward_backward_shapes(tiny):
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    out, rgbs = tiny(x, w=1.0, return_rgbs=True)
    assert out.shape == (2, 3, 64, 64)
    assert [r.shape[-1] for r in rgbs] == [8, 16, 32, 64]
    (out.abs().mean() + sum(r.abs().mean() for r in rgbs)).backward()
    assert torch.isfinite(out).all()


def test_gradients_reach_every_trainable_parameter(tiny):
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    out, rgbs = tiny(x, w=0.7, return_rgbs=True, noise_mode="random")
    loss = (out - x).abs().mean() + sum((r - torch.nn.functional.interpolate(x, r.shape[-1])).abs().mean() for r in rgbs)
    loss.backward()
    dead = [n for n, p in tiny.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert dead == []


def test_frozen_prior_gets_no_gradient(tiny_cfg):
    cfg = copy.deepcopy(tiny_cfg)
    cfg["prior"]["trainable"] = False
    net = build_model(cfg)
    assert all(not p.requires_grad for p in net.prior.parameters())
    out = net(torch.rand(1, 3, 64, 64) * 2 - 1)
    out.mean().backward()
    assert all(p.grad is None for p in net.prior.parameters())
    assert all(p.grad is not None for p in net.encoder.parameters())
    net.set_prior_trainable(True)
    assert all(p.requires_grad != n.startswith("mapping.") for n, p in net.prior.named_parameters())


def test_fidelity_zero_ignores_the_sft_branch(tiny):
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        a0, a1 = tiny(x, w=0.0, noise_mode="const"), tiny(x, w=1.0, noise_mode="const")
        for head in tiny.decoder.heads:  # perturb every SFT head strongly
            for p in head.parameters():
                p.add_(torch.randn_like(p))
        b0, b1 = tiny(x, w=0.0, noise_mode="const"), tiny(x, w=1.0, noise_mode="const")
        half = tiny(x, w=0.5, noise_mode="const")
    assert torch.equal(a0, b0)  # w = 0: output independent of the SFT branch
    assert (a1 - b1).abs().max() > 1e-3  # w = 1: the SFT branch matters
    assert (half - b1).abs().max() > 1e-4 and (half - b0).abs().max() > 1e-4  # w in between is in between


def test_fidelity_as_per_sample_tensor(tiny):
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        both = tiny(x, w=torch.tensor([0.0, 1.0]), noise_mode="const")
        first = tiny(x[:1], w=0.0, noise_mode="const")
        second = tiny(x[1:], w=1.0, noise_mode="const")
    assert torch.allclose(both[:1], first, atol=1e-5) and torch.allclose(both[1:], second, atol=1e-5)


def test_const_noise_is_bit_identical(tiny):
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        for name, p in tiny.prior.named_parameters():  # noise strengths start at 0: make noise matter
            if name.endswith("noise_strength"):
                p.fill_(0.5)
        assert torch.equal(tiny(x, noise_mode="const"), tiny(x, noise_mode="const"))
        assert torch.equal(tiny(x, noise_mode="zero"), tiny(x, noise_mode="zero"))
        assert not torch.equal(tiny(x, noise_mode="random"), tiny(x, noise_mode="random"))


def test_resblock_ablation_builds(tiny_cfg):
    cfg = copy.deepcopy(tiny_cfg)
    cfg["codec"]["block"] = "resblock"
    net = build_model(cfg)
    assert net(torch.zeros(1, 3, 64, 64)).shape == (1, 3, 64, 64)
    assert not any("first.weak" in n for n, _ in net.named_parameters())


def test_wrong_input_size_is_a_clear_error(tiny):
    with pytest.raises(ValueError, match="expected input"):
        tiny(torch.zeros(1, 3, 32, 32))


def test_unknown_model_option_is_rejected(tiny_cfg):
    with pytest.raises(ValueError, match="unknown option"):
        build_model({**tiny_cfg, "sizee": 3})
    with pytest.raises(ValueError):
        MMRFaceNet(size=48)


def test_512_model_forward_on_cpu():
    net = build_model(load_config("512").model).eval()
    with torch.no_grad():
        out = net(torch.zeros(1, 3, 512, 512), noise_mode="zero")
    assert out.shape == (1, 3, 512, 512) and torch.isfinite(out).all()


def test_input_skip_adds_w_times_the_input_to_the_same_network(tiny_cfg):
    cfg = copy.deepcopy(tiny_cfg)
    torch.manual_seed(0)
    plain = build_model(cfg)
    cfg["input_skip"] = True
    skip = build_model(cfg)
    skip.load_state_dict(plain.state_dict())  # a global residual adds no weights
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    w = torch.tensor([0.0, 0.75])
    with torch.no_grad():
        a, b = plain(x, w=w, noise_mode="const"), skip(x, w=w, noise_mode="const")
        c = skip(x, w=0.25, noise_mode="const") - plain(x, w=0.25, noise_mode="const")
    assert torch.equal(a[0], b[0])  # w = 0: free generation, no trace of the input
    assert torch.allclose(b[1] - a[1], 0.75 * x[1], atol=1e-5)
    assert torch.allclose(c, 0.25 * x, atol=1e-5)
