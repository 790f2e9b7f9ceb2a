"""Deterministic building blocks shared by the numpy degradation and its torch replay.

Everything here is a pure function of a parameter record (no global random state), so the numpy
path (`degrade.Degradation.apply`) and the differentiable torch path (`degrade_torch`) build the
very same kernels, resampling matrices, noise and colour matrices. Images are float32 HxWx3 RGB
in [0, 1] unless stated.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

#: ITU-R BT.601 luma weights, used for grey conversion, contrast and saturation.
GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)

_RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=np.float64
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)

INTERP_CV2 = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """Normalised (an)isotropic Gaussian kernel, float32 (size, size).

    `sigma_x`/`sigma_y` are the standard deviations along the kernel's own axes (pixels) and
    `theta` rotates those axes (radians). `sigma_x == sigma_y` gives the isotropic kernel.
    """
    half = size // 2
    ax = np.arange(-half, half + 1, dtype=np.float64)
    xx, yy = np.meshgrid(ax, ax)  # (size, size), x varies along columns
    c, s = math.cos(theta), math.sin(theta)
    u = c * xx + s * yy  # coordinates in the rotated kernel frame
    v = -s * xx + c * yy
    k = np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return (k / k.sum()).astype(np.float32)


def reflect101_index(n: int, pad: int) -> np.ndarray:
    """Source indices of a length-`n` axis padded by `pad` on both sides with OpenCV's
    BORDER_REFLECT_101 (`gfedcb|abcdefgh|gfedcba`), valid for any `pad`, even `pad >= n`."""
    idx = np.arange(-pad, n + pad)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.mod(idx, period)
    return np.where(idx < n, idx, period - idx)


def scaled_size(h: int, w: int, scale: float) -> tuple[int, int]:
    """Size after resizing by 1/`scale` (scale 4 = four times smaller), at least 1 pixel."""
    return max(1, int(round(h / scale))), max(1, int(round(w / scale)))


def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32 matrix of OpenCV's INTER_AREA shrinking along one axis.

    Each output pixel averages the input interval [i*r, (i+1)*r), r = n_in/n_out, with partial
    pixels weighted by their overlap, exactly as `cv2.resize(..., INTER_AREA)` does when both
    axes shrink (or keep) their size.
    """
    if n_out > n_in:
        raise ValueError("area_matrix only shrinks")
    r = n_in / n_out
    m = np.zeros((n_out, n_in), dtype=np.float64)
    for i in range(n_out):
        f1 = i * r
        f2 = f1 + r
        cell = min(r, n_in - f1)
        s1 = math.ceil(f1)
        s2 = min(math.floor(f2), n_in - 1)
        s1 = min(s1, s2)
        if s1 - f1 > 1e-3:
            m[i, s1 - 1] = (s1 - f1) / cell
        m[i, s1:s2] = 1.0 / cell
        if f2 - s2 > 1e-3:
            m[i, s2] = min(min(f2 - s2, 1.0), cell) / cell
    return m.astype(np.float32)


def hue_matrix(hue: float) -> np.ndarray:
    """3x3 float32 matrix rotating the chroma (I, Q of YIQ) by `hue` turns (0.5 = 180°)."""
    a = 2.0 * math.pi * hue
    rot = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    return (_YIQ_TO_RGB @ rot @ _RGB_TO_YIQ).astype(np.float32)


def to_gray(x: np.ndarray) -> np.ndarray:
    """HxWx3 -> HxW luma."""
    return x @ GRAY_WEIGHTS


def color_jitter(x: np.ndarray, jitter: dict) -> np.ndarray:
    """Brightness (multiply), contrast (around the mean luma), saturation (around the pixel's
    luma), hue (YIQ rotation), in that fixed order, then clip to [0, 1]."""
    x = x * np.float32(jitter["brightness"])
    m = to_gray(x).mean(dtype=np.float32)
    x = (x - m) * np.float32(jitter["contrast"]) + m
    g = to_gray(x)[..., None]
    x = (x - g) * np.float32(jitter["saturation"]) + g
    x = x @ hue_matrix(jitter["hue"]).T
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def gray3(x: np.ndarray) -> np.ndarray:
    """Grey-scale image replicated to three channels."""
    return np.repeat(to_gray(x)[..., None], 3, axis=2).astype(np.float32)


def make_noise(noise: dict, x: np.ndarray) -> np.ndarray:
    """The recorded noise for image `x` (HxWx3 float32), regenerated from its seed.

    Gaussian noise depends only on the shape (sigma on the 0–255 scale). Poisson noise is
    signal dependent: `poisson(x * peak) / peak - x`, where `peak` is the photon count at white
    (computed on the luma and replicated when `gray`).
    """
    rng = np.random.default_rng(noise["seed"])
    h, w = x.shape[:2]
    channels = 1 if noise["gray"] else 3
    if noise["kind"] == "gaussian":
        n = rng.standard_normal((h, w, channels), dtype=np.float32)
        n *= np.float32(noise["sigma"] / 255.0)
    elif noise["kind"] == "poisson":
        base = to_gray(x)[..., None] if noise["gray"] else x
        base = np.clip(base, 0.0, 1.0).astype(np.float64)
        peak = float(noise["peak"])
        n = (rng.poisson(base * peak) / peak - base).astype(np.float32)
    else:
        raise ValueError(f"unknown noise kind {noise['kind']!r}")
    return np.broadcast_to(n, (h, w, 3)).astype(np.float32)


def jpeg(x: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip at `quality` (OpenCV/libjpeg, 4:2:0), on the image rounded to 8 bits."""
    u8 = np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(u8[..., ::-1]),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return out.astype(np.float32) / 255.0
