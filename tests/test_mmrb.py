import pytest
import torch
from torch import nn

from mmrface.models.mmrb import MMRB, ResBlock, high_pass, make_block


@pytest.mark.parametrize("shape", [(1, 4, 8, 8), (2, 16, 13, 17), (1, 33, 32, 5), (3, 64, 16, 16)])
@pytest.mark.parametrize("kind", ["mmrb", "resblock"])
def test_block_keeps_shape(shape, kind):
    block = make_block(kind, shape[1])
    x = torch.randn(shape)
    y = block(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    assert not torch.equal(y, x)  # the residual branch does something


@pytest.mark.parametrize("paths", [("local",), ("context", "weak"), ("local", "context", "weak")])
@pytest.mark.parametrize("attention", [True, False])
def test_mmrb_options(paths, attention):
    block = MMRB(12, paths=paths, attention=attention, dilation=3)
    assert set(block.first) == set(paths) and set(block.second) == set(paths)
    assert isinstance(block.attention, nn.Identity) != attention
    assert block(torch.randn(2, 12, 9, 9)).shape == (2, 12, 9, 9)


def test_mmrb_rejects_unknown_path():
    with pytest.raises(ValueError):
        MMRB(8, paths=("local", "global"))


def test_weak_path_sees_only_high_pass():
    block = MMRB(8)
    const = torch.full((2, 8, 16, 16), 0.7)
    assert high_pass(const).abs().max() < 1e-6  # zero up to float rounding of the 3x3 mean
    assert block.first_layer(const)["weak"].abs().max() < 1e-6  # constant input: nothing on the weak path
    assert block.first_layer(torch.full((1, 8, 8, 8), 0.5))["weak"].abs().max() == 0  # exact when the mean is
    assert block.first_layer(const)["local"].abs().max() > 0  # …but the local path does respond
    # a constant offset changes nothing on the weak path (it is invariant to the low-pass part)
    x = torch.randn(1, 8, 16, 16)
    a, b = block.first_layer(x)["weak"], block.first_layer(x + 3.0)["weak"]
    assert torch.allclose(a, b, atol=1e-5)
    # …and a faint texture on a constant background is what it sees
    texture = 0.01 * torch.randn(1, 8, 16, 16)
    assert block.first_layer(const[:1] + texture)["weak"].abs().max() > 0


def test_cross_path_mixing():
    """Second-layer convs read all paths: zeroing one path's first conv changes every path."""
    block = MMRB(8, attention=False)
    x = torch.randn(1, 8, 12, 12)
    first = block.first_layer(x)
    mix = torch.cat([first[p] for p in block.paths], 1)
    assert block.second["local"].in_channels == mix.shape[1]
    with torch.no_grad():
        before = block.second["local"](mix)
        block.first["weak"].weight.zero_()
        first2 = block.first_layer(x)
        after = block.second["local"](torch.cat([first2[p] for p in block.paths], 1))
    assert not torch.allclose(before, after)


@pytest.mark.parametrize("kind", ["mmrb", "resblock"])
def test_block_plugs_into_residual_net_and_trains(kind):
    """MMRB swapped into a plain residual network: a denoising loss falls on a fixed batch."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), make_block(kind, 16), make_block(kind, 16),
                        nn.Conv2d(16, 3, 3, padding=1))
    clean = torch.rand(4, 3, 16, 16)
    noisy = clean + 0.2 * torch.randn_like(clean)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = nn.functional.l1_loss(net(noisy), clean)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    block = net[1]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())
