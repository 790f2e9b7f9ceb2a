"""StyleGAN2 generator / discriminator behaviour (parity with the reference code: test_convert.py)."""

from __future__ import annotations

import io

import pytest
import torch

from mmrface.models.ops import make_fir_kernel, upfirdn2d
from mmrface.models.discriminator import StyleGAN2Discriminator
from mmrface.models.stylegan2 import StyleGAN2Generator, channel_table


def tiny(size: int = 32, **kw) -> StyleGAN2Generator:
    torch.manual_seed(0)
    return StyleGAN2Generator(size, style_dim=32, n_mlp=2, narrow=1 / 32, **kw).eval()


def test_channel_table_matches_stylegan2():
    assert channel_table(512, 2) == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64}
    assert channel_table(1024, 1)[1024] == 16 and channel_table(1024, 1)[64] == 256
    assert channel_table(64, 2, narrow=1 / 16) == {4: 32, 8: 32, 16: 32, 32: 32, 64: 32}
    assert channel_table(256, 2, max_channels=64) == {r: 64 for r in (4, 8, 16, 32, 64, 128, 256)}
    with pytest.raises(ValueError):
        channel_table(48)


@pytest.mark.parametrize("upsample", ["bilinear", "blur"])
@pytest.mark.parametrize("gain_mode", ["post", "pre"])
def test_shapes_and_latents(upsample, gain_mode):
    g = tiny(32, upsample=upsample, gain_mode=gain_mode, equalized_lr=gain_mode == "post")
    assert g.num_latent == 8 and len(g.make_noise()) == 7
    assert [n.shape[-1] for n in g.make_noise()] == [4, 8, 8, 16, 16, 32, 32]
    img, lat = g(torch.randn(3, 32), return_latents=True)
    assert img.shape == (3, 3, 32, 32) and lat.shape == (3, 8, 32)
    assert torch.isfinite(img).all()
    assert g(torch.randn(2, 32))[1] is None


def test_noise_modes():
    g = tiny()
    z = torch.randn(2, 32)
    with torch.no_grad():
        for m in g.modules():  # noise strengths start at 0: make noise matter
            if hasattr(m, "noise_strength"):
                m.noise_strength.fill_(0.5)
        a, _ = g(z, noise_mode="const")
        b, _ = g(z, noise_mode="const")
        assert torch.equal(a, b)  # bit-identical
        r1, _ = g(z, noise_mode="random")
        r2, _ = g(z, noise_mode="random")
        assert not torch.allclose(r1, r2)
        zero, _ = g(z, noise_mode="zero")
        zeros = [torch.zeros_like(n) for n in g.make_noise()]
        assert torch.allclose(zero, g(z, noise=zeros)[0], atol=1e-6)
        stored = [getattr(g.noises, f"noise{i}") for i in range(g.num_latent - 1)]
        assert torch.equal(g(z, noise=stored, noise_mode="random")[0], a)  # explicit noise overrides the mode
    with pytest.raises(ValueError):
        g(z, noise_mode="bad")


def test_truncation_and_mixing():
    g = tiny()
    z1, z2 = torch.randn(2, 32), torch.randn(2, 32)
    with torch.no_grad():
        g.latent_avg.copy_(g.mean_latent(256))
        assert g.mean_latent(8).shape == (32,)
        # truncation 0 collapses every z onto the average latent
        a, _ = g(z1, truncation=0.0, noise_mode="zero")
        assert torch.allclose(a[0], a[1], atol=1e-5)
        # truncation around an explicit centre equals feeding the truncated W by hand
        centre = g.get_latent(torch.randn(1, 32))
        w = g.get_latent(z1)
        t, _ = g(z1, truncation=0.7, truncation_latent=centre, noise_mode="zero")
        ref, _ = g(centre + 0.7 * (w - centre), input_is_latent=True, noise_mode="zero")
        assert torch.allclose(t, ref, atol=1e-5)
        # style mixing = W+ with the first inject_index codes from z1, the rest from z2
        mixed, lat = g([z1, z2], inject_index=3, noise_mode="zero", return_latents=True)
        wplus = torch.cat([g.get_latent(z1)[:, None].repeat(1, 3, 1), g.get_latent(z2)[:, None].repeat(1, 5, 1)], 1)
        assert torch.allclose(lat, wplus)
        assert torch.allclose(mixed, g(wplus, input_is_latent=True, noise_mode="zero")[0], atol=1e-6)


def conditions_for(g: StyleGAN2Generator, batch: int, half: bool = True):
    conds = []
    for r in range(g.num_levels):
        res = 2 ** (r + 3)
        c = g.channels[res] // 2 if half else g.channels[res]
        conds.append((1 + 0.5 * torch.randn(batch, c, res, res), torch.randn(batch, c, res, res)))
    return conds


def test_cs_sft_fidelity():
    g = tiny(noise_mode="zero")
    w = torch.randn(2, 32)
    conds = conditions_for(g, 2)
    with torch.no_grad():
        free, _ = g(w, input_is_latent=True)
        full, _ = g(w, input_is_latent=True, conditions=conds, fidelity=1.0)
        none, _ = g(w, input_is_latent=True, conditions=conds, fidelity=0.0)
        assert torch.equal(none, free) and not torch.allclose(full, free)
        # identity conditions (scale 1, shift 0) leave the output unchanged
        ident = [(torch.ones_like(s), torch.zeros_like(t)) for s, t in conds]
        assert torch.allclose(g(w, input_is_latent=True, conditions=ident)[0], free, atol=1e-6)
        # a per-sample fidelity tensor: sample 0 free, sample 1 full
        mixed, _ = g(w, input_is_latent=True, conditions=conds, fidelity=torch.tensor([0.0, 1.0]))
        assert torch.allclose(mixed[0], free[0], atol=1e-6) and torch.allclose(mixed[1], full[1], atol=1e-5)
        # a shorter condition list modulates only the first levels
        short, _ = g(w, input_is_latent=True, conditions=conds[:1])
        assert not torch.allclose(short, free) and not torch.allclose(short, full)
    # sft_half=False takes full-width conditions
    g2 = tiny(noise_mode="zero", sft_half=False)
    assert g2(w, input_is_latent=True, conditions=conditions_for(g2, 2, half=False))[0].shape == (2, 3, 32, 32)


def test_sft_half_touches_only_second_half():
    g = tiny(noise_mode="zero")
    conds = conditions_for(g, 1)
    seen = {}
    g.convs[1].register_forward_hook(lambda m, inp, out: seen.setdefault("x", []).append(inp[0]))
    with torch.no_grad():
        w = torch.randn(1, 32)
        g(w, input_is_latent=True)
        g(w, input_is_latent=True, conditions=conds)
    plain, modulated = seen["x"]
    half = plain.shape[1] // 2
    assert torch.equal(plain[:, :half], modulated[:, :half])
    s, t = conds[0]
    assert torch.allclose(modulated[:, half:], plain[:, half:] * s + t, atol=1e-6)


def naive_upfirdn(x, k, up, down, p0, p1):
    """Loop reference: zero insertion, pad, true convolution, decimation (tiny inputs only)."""
    _, _, h, w = x.shape
    u = torch.zeros(x.shape[0], x.shape[1], h * up, w * up)
    u[:, :, ::up, ::up] = x
    u = torch.nn.functional.pad(u, (p0, p1, p0, p1))
    kh, kw = k.shape
    out = torch.zeros(x.shape[0], x.shape[1], u.shape[2] - kh + 1, u.shape[3] - kw + 1)
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            patch = u[:, :, i:i + kh, j:j + kw]
            out[:, :, i, j] = (patch * torch.flip(k, [0, 1])).sum((-1, -2))
    return out[:, :, ::down, ::down]


@pytest.mark.parametrize("up,down,pad", [(1, 1, (1, 1)), (2, 1, (2, 1)), (1, 2, (2, 2)), (2, 2, (1, 2))])
def test_upfirdn2d_matches_loop_reference(up, down, pad):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 5, 5)
    k = torch.rand(4, 4)  # asymmetric: checks the kernel flip too
    assert torch.allclose(upfirdn2d(x, k, up, down, pad), naive_upfirdn(x, k, up, down, *pad), atol=1e-6)
    # the normalised FIR keeps a constant image constant away from the border
    c = upfirdn2d(torch.ones(1, 1, 8, 8), make_fir_kernel() * up * up, up, 1, (2, 1) if up == 2 else (1, 2))
    assert torch.allclose(c[..., 3:-3, 3:-3], torch.ones_like(c[..., 3:-3, 3:-3]))


def test_discriminator():
    torch.manual_seed(0)
    d = StyleGAN2Discriminator(32, narrow=1 / 32)
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    out = d(x)
    assert out.shape == (4, 1)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in d.parameters())
    assert d(torch.randn(3, 3, 32, 32)).shape == (3, 1)  # batch not divisible by the group size
    with torch.no_grad():  # minibatch stddev: a sample's logit depends on the rest of its group
        y = x.detach().clone()
        a = d(y)[0]
        y[1] += 1.0
        assert not torch.allclose(a, d(y)[0])
        assert torch.allclose(d(y[:1]), d(y[:1]))


def test_grouped_conv_exports_to_onnx():
    ort = pytest.importorskip("onnxruntime")
    for upsample in ("blur", "bilinear"):
        g = tiny(32, upsample=upsample, noise_mode="const")

        class Wrap(torch.nn.Module):
            def __init__(self, g):
                super().__init__()
                self.g = g

            def forward(self, z):
                return self.g(z)[0]

        f = io.BytesIO()
        torch.onnx.export(Wrap(g), (torch.randn(2, 32),), f, input_names=["z"], opset_version=17, dynamo=False)
        z = torch.randn(2, 32)
        got = ort.InferenceSession(f.getvalue()).run(None, {"z": z.numpy()})[0]
        with torch.no_grad():
            ref = g(z)[0].numpy()
        assert abs(got - ref).max() < 1e-4
