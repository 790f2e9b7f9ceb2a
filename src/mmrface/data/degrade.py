"""Replayable face degradation: HQ face -> synthetic LQ face plus the record of every choice.

`Degradation.sample(rng)` draws all random choices into a JSON-serialisable record and
`Degradation.apply(hq, record)` replays it exactly (the same record always gives the same array;
the noise is stored as a seed, not as an array). `degrade_torch` replays a record differentiably
on tensors for the re-degradation consistency loss (see `degrade_torch.py`).

Stages, in GFPGAN's order: blur (41x41 iso/aniso Gaussian) -> resize by 1/scale (area, bilinear
or bicubic) -> Gaussian or Poisson noise (colour or grey) -> JPEG -> resize back to the input size
-> colour jitter -> grey-scale. Each stage is `None` in the record when it was not drawn.

Presets (`PRESETS`), selectable by name and overridable by a dict (e.g. from YAML):
  gfpgan  blur σ 0.1–10 (iso/aniso 50/50, any rotation), scale ×0.8–8, Gaussian σ 0–20 (0–255
          scale, grey noise p 0.2), JPEG q 60–100, colour jitter p 0.3, grey p 0.01
  heavy   as gfpgan with σ 1–15, ×4–30, JPEG q 30–80
  sr4/sr8 pure ×4 / ×8 bicubic down-sampling, then bicubic back up; nothing else
`noise_gray_prob` 0.2 and the jitter amplitudes are our choices.
With `scale` < 1 (an up-sampling) `area` is replaced by `bilinear` in the record.

A mixture `{"mix": {"gfpgan": 0.6, "heavy": 0.3, "sr8": 0.1}}` (each value a weight; a key is a
preset name, or a component can be given as `{"weight": w, "preset": ..., <overrides>}`) draws
one component per sample; its record is an ordinary record of that component, so replay,
`degrade_torch` and the re-degradation loss need nothing new.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

import cv2
import numpy as np

from mmrface.data import degrade_ops as ops
from mmrface.errors import UserError

RECORD_VERSION = 1
KERNELS = ("iso", "aniso")
INTERPS = ("area", "bilinear", "bicubic")
BACK_INTERPS = ("bilinear", "bicubic")
_RANGES = ("sigma", "rotation", "scale", "noise_sigma", "poisson_peak", "jpeg_quality")
_PROBS = ("blur_prob", "down_prob", "noise_prob", "poisson_prob", "noise_gray_prob",
          "jpeg_prob", "jitter_prob", "gray_prob")


@dataclass(frozen=True)
class DegradationConfig:
    """All knobs of the degradation model; ranges are (low, high), sampled uniformly unless said."""

    preset: str = "custom"
    blur_prob: float = 1.0
    kernel_size: int = 41
    kernel_list: tuple[str, ...] = KERNELS
    kernel_prob: tuple[float, ...] = (0.5, 0.5)
    sigma: tuple[float, float] = (0.1, 10.0)  # pixels; aniso draws both axes from this range
    rotation: tuple[float, float] = (-math.pi, math.pi)  # radians, aniso kernels only
    down_prob: float = 1.0
    scale: tuple[float, float] = (0.8, 8.0)  # output is 1/scale of the input size
    interp: tuple[str, ...] = INTERPS
    noise_prob: float = 1.0
    poisson_prob: float = 0.0  # share of the noisy samples that get Poisson noise
    noise_sigma: tuple[float, float] = (0.0, 20.0)  # Gaussian σ on the 0–255 scale
    poisson_peak: tuple[float, float] = (20.0, 500.0)  # photons at white, log-uniform
    noise_gray_prob: float = 0.2
    jpeg_prob: float = 1.0
    jpeg_quality: tuple[float, float] = (60, 100)  # integers, both ends included
    back_interp: tuple[str, ...] = ("bilinear",)
    jitter_prob: float = 0.3
    brightness: float = 0.1  # factor drawn from 1 ± brightness
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.02  # turns (0.02 = 7.2°)
    gray_prob: float = 0.01


_PURE_SR = dict(blur_prob=0.0, down_prob=1.0, interp=("bicubic",), noise_prob=0.0,
                jpeg_prob=0.0, back_interp=("bicubic",), jitter_prob=0.0, gray_prob=0.0)
PRESETS: dict[str, dict[str, Any]] = {
    "gfpgan": {},
    "heavy": dict(sigma=(1.0, 15.0), scale=(4.0, 30.0), jpeg_quality=(30, 80)),
    "sr4": dict(_PURE_SR, scale=(4.0, 4.0)),
    "sr8": dict(_PURE_SR, scale=(8.0, 8.0)),
}


def _as_range(name: str, value: Any) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return (float(value), float(value))
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        lo, hi = (float(v) for v in value)
        if lo > hi:
            raise UserError(f"degradation: {name} range {list(value)} has low > high")
        return (lo, hi)
    raise UserError(f"degradation: {name} must be a number or [low, high], got {value!r}")


def _as_choices(name: str, value: Any, allowed: tuple[str, ...]) -> tuple[str, ...]:
    items = (value,) if isinstance(value, str) else tuple(value)
    bad = [v for v in items if v not in allowed]
    if not items or bad:
        raise UserError(f"degradation: {name} must be chosen from {list(allowed)}, got {value!r}")
    return items


def build_config(spec: str | Mapping[str, Any] | DegradationConfig | None = None
                 ) -> DegradationConfig:
    """Config from a preset name, or a dict `{"preset": name, <field>: override, ...}`."""
    if isinstance(spec, DegradationConfig):
        return spec
    spec = {"preset": spec} if isinstance(spec, str) else dict(spec or {"preset": "gfpgan"})
    name = spec.pop("preset", "custom")
    if name != "custom" and name not in PRESETS:
        raise UserError(f"unknown degradation preset {name!r}; choose from {sorted(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(DegradationConfig)}
    unknown = sorted(set(spec) - fields)
    if unknown:
        raise UserError(f"unknown degradation option(s) {unknown}; known: {sorted(fields)}")
    merged: dict[str, Any] = {**PRESETS.get(name, {}), **spec}
    for key in ("kernel_size",):
        if key in merged and (isinstance(merged[key], bool) or not isinstance(merged[key], int)):
            raise UserError(f"degradation: {key} must be an integer, got {merged[key]!r}")
    for key in (*_PROBS, "brightness", "contrast", "saturation", "hue"):
        if key in merged and (isinstance(merged[key], bool) or not isinstance(merged[key], (int, float))):
            raise UserError(f"degradation: {key} must be a number, got {merged[key]!r}")
    if "kernel_prob" in merged:
        kp = merged["kernel_prob"]
        if not isinstance(kp, (list, tuple)) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                        for v in kp):
            raise UserError(f"degradation: kernel_prob must be a list of numbers, got {kp!r}")
        merged["kernel_prob"] = tuple(float(v) for v in kp)
    for key in _RANGES:
        if key in merged:
            merged[key] = _as_range(key, merged[key])
    for key in _PROBS:
        if key in merged and not 0.0 <= float(merged[key]) <= 1.0:
            raise UserError(f"degradation: {key} must be in [0, 1], got {merged[key]!r}")
    for key, allowed in (("kernel_list", KERNELS), ("interp", INTERPS),
                         ("back_interp", BACK_INTERPS)):
        if key in merged:
            merged[key] = _as_choices(key, merged[key], allowed)
    cfg = DegradationConfig(preset=name, **merged)
    if cfg.kernel_size < 1 or cfg.kernel_size % 2 == 0:
        raise UserError(f"degradation: kernel_size must be odd and positive, got {cfg.kernel_size}")
    if len(cfg.kernel_prob) != len(cfg.kernel_list) or min(cfg.kernel_prob) < 0 \
            or sum(cfg.kernel_prob) <= 0:
        raise UserError("degradation: kernel_prob needs one non-negative weight per "
                        "kernel_list entry")
    if cfg.sigma[0] <= 0 or cfg.scale[0] <= 0 or cfg.poisson_peak[0] <= 0:
        raise UserError("degradation: sigma, scale and poisson_peak must be positive")
    if not 0 <= cfg.jpeg_quality[0] <= cfg.jpeg_quality[1] <= 100:
        raise UserError(f"degradation: jpeg_quality must lie in 0..100, got {cfg.jpeg_quality}")
    return cfg


class Degradation:
    """Seeded, replayable degradation model (see the module docstring)."""

    def __init__(self, config: DegradationConfig | None = None):
        self.config = config or DegradationConfig(preset="gfpgan")

    @property
    def label(self) -> str:
        """The preset's name, as the run log shows it."""
        return str(self.config.preset)

    @classmethod
    def from_config(cls, spec: str | Mapping[str, Any] | DegradationConfig | None = None
                    ) -> "Degradation | DegradationMix":
        """`Degradation.from_config("sr8")`,
        `Degradation.from_config({"preset": "gfpgan", "scale": [1, 4]})` or a mixture
        `Degradation.from_config({"mix": {"gfpgan": 0.7, "heavy": 0.3}})`."""
        if isinstance(spec, Mapping) and "mix" in spec:
            return DegradationMix.from_spec(spec)
        return cls(build_config(spec))

    # ---------------------------------------------------------------- sampling
    def sample(self, rng: np.random.Generator) -> dict:
        """Draw every random choice into a JSON-serialisable record (fixed draw order)."""
        c = self.config
        u = lambda lo_hi: float(rng.uniform(*lo_hi))  # noqa: E731
        rec: dict[str, Any] = {"version": RECORD_VERSION, "preset": c.preset}

        rec["blur"] = None
        if rng.random() < c.blur_prob:
            p = np.asarray(c.kernel_prob, dtype=np.float64)
            kind = c.kernel_list[int(rng.choice(len(c.kernel_list), p=p / p.sum()))]
            sx = u(c.sigma)
            sy, theta = (u(c.sigma), u(c.rotation)) if kind == "aniso" else (sx, 0.0)
            rec["blur"] = {"kind": kind, "size": c.kernel_size, "sigma_x": sx, "sigma_y": sy,
                           "theta": theta}

        rec["down"] = None
        if rng.random() < c.down_prob:
            scale = u(c.scale)
            interp = c.interp[int(rng.integers(len(c.interp)))]
            if interp == "area" and scale < 1.0:
                interp = "bilinear"  # area is a shrinking filter
            back = c.back_interp[int(rng.integers(len(c.back_interp)))]
            rec["down"] = {"scale": scale, "interp": interp, "back_interp": back}

        rec["noise"] = None
        if rng.random() < c.noise_prob:
            gray = bool(rng.random() < c.noise_gray_prob)
            seed = int(rng.integers(2**31))
            if rng.random() < c.poisson_prob:
                lo, hi = np.log10(c.poisson_peak)
                rec["noise"] = {"kind": "poisson", "peak": float(10 ** rng.uniform(lo, hi)),
                                "gray": gray, "seed": seed}
            else:
                rec["noise"] = {"kind": "gaussian", "sigma": u(c.noise_sigma), "gray": gray,
                                "seed": seed}

        rec["jpeg"] = None
        if rng.random() < c.jpeg_prob:
            lo, hi = int(round(c.jpeg_quality[0])), int(round(c.jpeg_quality[1]))
            rec["jpeg"] = {"quality": int(rng.integers(lo, hi + 1))}

        rec["jitter"] = None
        if rng.random() < c.jitter_prob:
            rec["jitter"] = {
                "brightness": 1.0 + u((-c.brightness, c.brightness)),
                "contrast": 1.0 + u((-c.contrast, c.contrast)),
                "saturation": 1.0 + u((-c.saturation, c.saturation)),
                "hue": u((-c.hue, c.hue)),
            }
        rec["gray"] = bool(rng.random() < c.gray_prob)
        return rec

    # ---------------------------------------------------------------- replay
    @staticmethod
    def apply(hq: np.ndarray, params: dict | str) -> np.ndarray:
        """Replay a record on `hq` (HxWx3 RGB, uint8 or float 0..1).

        Returns the LQ image at the input size, uint8 for uint8 input (rounded), else float32.
        """
        return apply_record(hq, params)

    def __call__(self, hq: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        params = self.sample(rng)
        return self.apply(hq, params), params


class DegradationMix:
    """A weighted mixture of degradation models: each sample draws its component first."""

    def __init__(self, components: list[Degradation], weights: list[float]):
        w = np.asarray(weights, np.float64)
        if len(components) != len(w) or not len(w) or (w < 0).any() or w.sum() <= 0:
            raise UserError("degradation mix: give each component a weight >= 0, not all 0")
        self.components, self.weights = components, w / w.sum()
        self.config = components[0].config  # what callers that inspect one config see

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> "DegradationMix":
        extra = sorted(set(spec) - {"mix"})
        mix = spec["mix"]
        if extra or not isinstance(mix, Mapping) or not mix:
            raise UserError(f"degradation: a mixture is {{mix: {{preset: weight, ...}}}} and nothing else, "
                            f"got {dict(spec)!r}")
        comps, weights = [], []
        for name, value in mix.items():
            if isinstance(value, Mapping):
                value = dict(value)
                weight = value.pop("weight", 1.0)
                value.setdefault("preset", name)
                comps.append(Degradation(build_config(value)))
            else:
                weight = value
                comps.append(Degradation(build_config(str(name))))
            if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                raise UserError(f"degradation mix: the weight of {name!r} must be a number, got {weight!r}")
            weights.append(float(weight))
        return cls(comps, weights)

    @property
    def label(self) -> str:
        """Every component with its weight: `mix gfpgan 0.5 / heavy 0.3 / sr8 0.2`."""
        return "mix " + " / ".join(f"{c.label} {w:.2g}" for c, w in zip(self.components, self.weights))

    def sample(self, rng: np.random.Generator) -> dict:
        k = int(rng.choice(len(self.components), p=self.weights))
        return self.components[k].sample(rng)

    apply = staticmethod(Degradation.apply)

    def __call__(self, hq: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        params = self.sample(rng)
        return self.apply(hq, params), params


def _to_float(img: np.ndarray) -> np.ndarray:
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {img.shape}")
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    return img.astype(np.float32, copy=True)


def load_record(params: dict | str) -> dict:
    """A record from a dict or its JSON string."""
    rec = json.loads(params) if isinstance(params, str) else params
    if not isinstance(rec, dict) or rec.get("version") != RECORD_VERSION:
        raise ValueError(f"not a degradation record (version {RECORD_VERSION}): {params!r:.80}")
    return rec


def apply_record(hq: np.ndarray, params: dict | str) -> np.ndarray:
    """Numpy replay of a record; see `Degradation.apply`."""
    rec = load_record(params)
    x = _to_float(hq)  # HxWx3 float32 0..1
    h, w = x.shape[:2]
    if rec["blur"]:
        b = rec["blur"]
        k = ops.gaussian_kernel(b["size"], b["sigma_x"], b["sigma_y"], b["theta"])
        x = cv2.filter2D(x, -1, k, borderType=cv2.BORDER_REFLECT_101)
    down = rec["down"]
    if down:
        dh, dw = ops.scaled_size(h, w, down["scale"])
        x = cv2.resize(x, (dw, dh), interpolation=ops.INTERP_CV2[down["interp"]])
        x = x.reshape(dh, dw, 3)
    if rec["noise"]:
        x = x + ops.make_noise(rec["noise"], x)
    x = np.clip(x, 0.0, 1.0)
    if rec["jpeg"]:
        x = ops.jpeg(x, rec["jpeg"]["quality"])
    if down:
        x = cv2.resize(x, (w, h), interpolation=ops.INTERP_CV2[down["back_interp"]])
        x = x.reshape(h, w, 3)
    x = np.clip(x, 0.0, 1.0)
    if rec["jitter"]:
        x = ops.color_jitter(x, rec["jitter"])
    if rec["gray"]:
        x = ops.gray3(x)
    if hq.dtype == np.uint8:
        return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
    return x.astype(np.float32)


def degrade_torch(x, params, *, value_range=(-1.0, 1.0), jpeg="straight_through"):
    """Differentiable torch replay of records; see `mmrface.data.degrade_torch.degrade_torch`.

    Imported lazily so that numpy-only users (make-testset) do not pay for importing torch.
    """
    from mmrface.data.degrade_torch import degrade_torch as _impl

    return _impl(x, params, value_range=value_range, jpeg=jpeg)
