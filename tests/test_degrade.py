"""Degradation model: exact replay, torch replay vs numpy, preset ranges, noise statistics."""

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mmrface.data import degrade_ops as ops
from mmrface.data.degrade import PRESETS, Degradation, degrade_torch
from mmrface.errors import UserError

FACE = Path(__file__).parent / "data" / "face128.png"
# numpy (cv2) path vs torch replay, max abs difference on the 0..1 scale (measured ~3e-7;
# 1e-4 is 1/40 of a grey level, far below any visible difference)
TORCH_TOL = 1e-4


@pytest.fixture(scope="module")
def face64() -> np.ndarray:
    img = cv2.imread(str(FACE), cv2.IMREAD_COLOR)[..., ::-1]
    return np.ascontiguousarray(cv2.resize(img, (64, 64), interpolation=cv2.INTER_AREA))


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_replay_is_exact_and_record_is_json(face64, preset):
    deg = Degradation.from_config(preset)
    for seed in range(4):
        lq, params = deg(face64, np.random.default_rng(seed))
        assert lq.shape == face64.shape and lq.dtype == np.uint8
        again = Degradation.apply(face64, json.loads(json.dumps(params)))
        np.testing.assert_array_equal(lq, again)
        np.testing.assert_array_equal(lq, Degradation.apply(face64, json.dumps(params)))
        # the same generator state gives the same record
        assert deg.sample(np.random.default_rng(seed)) == params


def test_noise_is_a_seed_not_an_array(face64):
    deg = Degradation.from_config({"preset": "gfpgan", "noise_sigma": [15, 20], "jpeg_prob": 0})
    params = deg.sample(np.random.default_rng(0))
    assert len(json.dumps(params)) < 1000
    other = json.loads(json.dumps(params))
    other["noise"]["seed"] += 1
    a, b = deg.apply(face64, params), deg.apply(face64, other)
    assert np.abs(a.astype(int) - b.astype(int)).max() > 0


def test_pure_sr_is_bicubic_down_up(face64):
    lq, params = Degradation.from_config("sr4")(face64, np.random.default_rng(0))
    x = face64.astype(np.float32) / 255
    small = np.clip(cv2.resize(x, (16, 16), interpolation=cv2.INTER_CUBIC), 0, 1)
    ref = cv2.resize(small, (64, 64), interpolation=cv2.INTER_CUBIC)
    ref = np.clip(np.round(np.clip(ref, 0, 1) * 255), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(lq, ref)
    assert params["blur"] is None and params["noise"] is None and params["jpeg"] is None


@pytest.mark.parametrize("interp", ["area", "bilinear", "bicubic"])
def test_torch_replay_matches_numpy(face64, interp):
    cfg = {"preset": "gfpgan", "interp": [interp], "scale": [1.2, 6], "jitter_prob": 0.5,
           "noise_gray_prob": 0.5, "poisson_prob": 0.0}
    deg = Degradation.from_config(cfg)
    rng = np.random.default_rng(7)
    x = face64.astype(np.float32) / 255
    params = [deg.sample(rng) for _ in range(6)]
    assert {p["down"]["interp"] for p in params} == {interp}
    ref = np.stack([deg.apply(x, p) for p in params])  # (6, 64, 64, 3)
    t = torch.from_numpy(x).permute(2, 0, 1)[None].repeat(6, 1, 1, 1) * 2 - 1
    out = degrade_torch(t, [json.dumps(p) for p in params])  # default range [-1, 1]
    got = ((out + 1) / 2).permute(0, 2, 3, 1).numpy()
    assert np.abs(got - ref).max() < TORCH_TOL


def test_torch_replay_blur_resize_noise_only(face64):
    """The core stages, each present: kernel conv, resize down/up, recorded noise."""
    x = face64.astype(np.float32) / 255
    rec = {"version": 1, "preset": "custom", "jpeg": None, "jitter": None, "gray": False,
           "blur": {"kind": "aniso", "size": 41, "sigma_x": 3.0, "sigma_y": 1.0, "theta": 0.7},
           "down": {"scale": 2.7, "interp": "bicubic", "back_interp": "bilinear"},
           "noise": {"kind": "gaussian", "sigma": 10.0, "gray": False, "seed": 123}}
    ref = Degradation.apply(x, rec)
    got = degrade_torch(torch.from_numpy(x).permute(2, 0, 1)[None], [rec], value_range=(0, 1))
    assert np.abs(got[0].permute(1, 2, 0).numpy() - ref).max() < TORCH_TOL
    assert np.abs(ref - x).max() > 0.1  # it did degrade


def test_torch_replay_gradients():
    rec = {"version": 1, "preset": "custom", "jpeg": None, "gray": True, "noise": None,
           "blur": {"kind": "iso", "size": 5, "sigma_x": 1.0, "sigma_y": 1.0, "theta": 0.0},
           "down": {"scale": 1.7, "interp": "area", "back_interp": "bicubic"},
           "jitter": {"brightness": 1.05, "contrast": 0.95, "saturation": 1.1, "hue": 0.01}}
    x = (0.3 + 0.4 * torch.rand(1, 3, 10, 10, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: degrade_torch(t, [rec], value_range=(0, 1)), (x,),
                                    fast_mode=True)
    # every stage, JPEG straight-through included, passes a gradient to every pixel
    params = Degradation.from_config({"preset": "gfpgan", "jitter_prob": 1.0}).sample(
        np.random.default_rng(3))
    assert params["jpeg"] is not None
    y = (torch.rand(2, 3, 32, 32) * 1.6 - 0.8).requires_grad_()
    degrade_torch(y, [params, params]).sum().backward()
    assert torch.isfinite(y.grad).all() and (y.grad.abs() > 0).float().mean() > 0.5


def test_area_matrix_and_reflect_padding_match_opencv():
    rng = np.random.default_rng(0)
    img = rng.random((45, 37, 3), dtype=np.float32)
    for h, w in [(45, 37), (30, 20), (9, 7), (1, 1), (15, 37)]:
        ref = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA).reshape(h, w, 3)
        got = np.einsum("hH,HWc,wW->hwc", ops.area_matrix(45, h), img, ops.area_matrix(37, w))
        assert np.abs(got - ref).max() < 1e-5
    row = np.arange(5, dtype=np.float32)[None]
    for pad in (1, 4, 9):
        ref = cv2.copyMakeBorder(row, 0, 0, pad, pad, cv2.BORDER_REFLECT_101)[0]
        np.testing.assert_array_equal(row[0, ops.reflect101_index(5, pad)], ref)


def _records(preset, n, seed=0):
    deg = Degradation.from_config(preset)
    rng = np.random.default_rng(seed)
    return deg.config, [deg.sample(rng) for _ in range(n)]


def _covers(values, lo, hi, frac=0.8):
    values = np.asarray(values, dtype=np.float64)
    assert values.min() >= lo - 1e-9 and values.max() <= hi + 1e-9, (values.min(), values.max())
    assert values.max() - values.min() >= frac * (hi - lo), (values.min(), values.max(), lo, hi)


@pytest.mark.parametrize("preset", ["gfpgan", "heavy"])
def test_preset_ranges_are_respected_and_covered(preset):
    cfg, recs = _records(preset, 2000)
    expected = {"gfpgan": dict(sigma=(0.1, 10), scale=(0.8, 8), jpeg=(60, 100)),
                "heavy": dict(sigma=(1, 15), scale=(4, 30), jpeg=(30, 80))}[preset]
    blur = [r["blur"] for r in recs]
    assert all(b is not None and b["size"] == 41 for b in blur)
    _covers([b["sigma_x"] for b in blur], *expected["sigma"])
    _covers([b["sigma_y"] for b in blur if b["kind"] == "aniso"], *expected["sigma"])
    _covers([b["theta"] for b in blur if b["kind"] == "aniso"], -math.pi, math.pi)
    assert all(b["sigma_x"] == b["sigma_y"] and b["theta"] == 0 for b in blur
               if b["kind"] == "iso")
    kinds = [b["kind"] for b in blur]
    assert 0.4 < kinds.count("iso") / len(kinds) < 0.6
    _covers([r["down"]["scale"] for r in recs], *expected["scale"])
    assert {r["down"]["interp"] for r in recs} == {"area", "bilinear", "bicubic"}
    assert all(r["down"]["interp"] != "area" for r in recs if r["down"]["scale"] < 1)
    _covers([r["noise"]["sigma"] for r in recs], 0, 20)
    assert {r["noise"]["kind"] for r in recs} == {"gaussian"}
    assert 0.15 < np.mean([r["noise"]["gray"] for r in recs]) < 0.25
    assert len({r["noise"]["seed"] for r in recs}) > 1990
    q = [r["jpeg"]["quality"] for r in recs]
    assert min(q) == expected["jpeg"][0] and max(q) == expected["jpeg"][1]  # ends included
    assert 0.26 < np.mean([r["jitter"] is not None for r in recs]) < 0.34
    jit = [r["jitter"] for r in recs if r["jitter"]]
    for key, amp in (("brightness", cfg.brightness), ("contrast", cfg.contrast),
                     ("saturation", cfg.saturation)):
        _covers([j[key] for j in jit], 1 - amp, 1 + amp)
    _covers([j["hue"] for j in jit], -cfg.hue, cfg.hue)
    assert 5 <= sum(r["gray"] for r in recs) <= 40  # p = 0.01 of 2000: mean 20, sd 4.4


@pytest.mark.parametrize("preset,scale", [("sr4", 4.0), ("sr8", 8.0)])
def test_pure_sr_presets_are_constant(preset, scale):
    _, recs = _records(preset, 200)
    for r in recs:
        assert r["down"] == {"scale": scale, "interp": "bicubic", "back_interp": "bicubic"}
        assert r["blur"] is None and r["noise"] is None and r["jpeg"] is None
        assert r["jitter"] is None and r["gray"] is False


def test_config_overrides_and_errors():
    cfg, recs = _records({"preset": "gfpgan", "scale": [1, 4], "jpeg_quality": 75}, 300)
    _covers([r["down"]["scale"] for r in recs], 1, 4)
    assert {r["jpeg"]["quality"] for r in recs} == {75}
    assert cfg.sigma == (0.1, 10.0) and cfg.preset == "gfpgan"
    assert Degradation.from_config("heavy").config.scale == (4.0, 30.0)
    for bad in ("nope", {"preset": "gfpgan", "blurr": 1}, {"scale": [4, 1]},
                {"interp": ["nearest"]}, {"kernel_size": 40}, {"jitter_prob": 2}):
        with pytest.raises(UserError):
            Degradation.from_config(bad)


@pytest.mark.parametrize("kind,param,expected_var", [
    ("gaussian", {"sigma": 12.75}, (12.75 / 255) ** 2),
    ("poisson", {"peak": 100.0}, 0.5 / 100),  # Poisson: variance = mean / peak
])
def test_noise_statistics(kind, param, expected_var):
    flat = np.full((96, 96, 3), 0.5, np.float32)
    for gray in (False, True):
        rec = {"version": 1, "preset": "custom", "blur": None, "down": None, "jpeg": None,
               "jitter": None, "gray": False,
               "noise": {"kind": kind, "gray": gray, "seed": 5, **param}}
        n = Degradation.apply(flat, rec) - flat
        assert abs(n.mean()) < 0.01
        assert abs(n.var() / expected_var - 1) < 0.1
        channel_corr = np.corrcoef(n[..., 0].ravel(), n[..., 1].ravel())[0, 1]
        assert channel_corr > 0.99 if gray else abs(channel_corr) < 0.1


def test_the_run_log_names_every_component_of_a_mixture():
    mix = Degradation.from_config({"mix": {"gfpgan": 0.5, "heavy": 0.3, "sr8": 0.2}})
    assert mix.label == "mix gfpgan 0.5 / heavy 0.3 / sr8 0.2"
    assert Degradation.from_config("sr8").label == "sr8"
