"""PSNR and SSIM in the BasicSR convention (the numbers face-restoration papers report).

* Inputs: uint8 HxWx3 RGB (or HxW grey) arrays of equal shape, compared in [0, 255].
* ``y_channel=True``: both images are first converted to the BT.601 Y channel
  (``16 + (65.481 R + 128.553 G + 24.966 B) / 255``, float, not rounded).
* ``crop_border``: pixels removed from every side before the comparison.
* SSIM: 11x11 Gaussian window with sigma 1.5, C1 = (0.01*255)^2, C2 = (0.03*255)^2, statistics
  from *valid* filtering only (the map is 10 pixels smaller than the image in each direction),
  the map mean computed per channel and then averaged over the channels.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from mmrface.errors import UserError
from mmrface.metrics._image import check_pair, crop, rgb_to_y

_C1 = (0.01 * 255.0) ** 2
_C2 = (0.03 * 255.0) ** 2
_WIN = 11
_SIGMA = 1.5


def _prepare(restored: np.ndarray, gt: np.ndarray, crop_border: int, y_channel: bool):
    """Both images as float64 arrays (HxWxC or HxW), cropped, optionally converted to Y."""
    check_pair(restored, gt, allow_gray=not y_channel)
    if y_channel:
        a, b = rgb_to_y(restored), rgb_to_y(gt)
    else:
        a, b = restored.astype(np.float64), gt.astype(np.float64)
    return crop(a, crop_border), crop(b, crop_border)


def psnr(restored: np.ndarray, gt: np.ndarray, crop_border: int = 0, y_channel: bool = False) -> float:
    """Peak signal-to-noise ratio in dB (peak 255); ``inf`` for identical images."""
    a, b = _prepare(restored, gt, crop_border, y_channel)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(255.0**2 / mse)


def _gaussian_window() -> np.ndarray:
    """Normalised 11x11 Gaussian, sigma 1.5 (outer product of the 1-D kernel)."""
    r = np.arange(_WIN, dtype=np.float64) - (_WIN - 1) / 2
    g = np.exp(-(r**2) / (2 * _SIGMA**2))
    g /= g.sum()
    return np.outer(g, g)


def _filter_valid(x: np.ndarray, win: np.ndarray) -> np.ndarray:
    """Correlate a 2-D float64 map with ``win``, keeping only fully supported ('valid') pixels."""
    full = cv2.filter2D(x, cv2.CV_64F, win, borderType=cv2.BORDER_REFLECT)
    p = win.shape[0] // 2
    return full[p:-p, p:-p]


def _ssim_channel(a: np.ndarray, b: np.ndarray, win: np.ndarray) -> float:
    """Mean SSIM of two HxW float64 maps with valid filtering."""
    mu_a, mu_b = _filter_valid(a, win), _filter_valid(b, win)
    var_a = _filter_valid(a * a, win) - mu_a**2
    var_b = _filter_valid(b * b, win) - mu_b**2
    cov = _filter_valid(a * b, win) - mu_a * mu_b
    num = (2 * mu_a * mu_b + _C1) * (2 * cov + _C2)
    den = (mu_a**2 + mu_b**2 + _C1) * (var_a + var_b + _C2)
    return float(np.mean(num / den))


def ssim(restored: np.ndarray, gt: np.ndarray, crop_border: int = 0, y_channel: bool = False) -> float:
    """Structural similarity (mean over the valid SSIM map, averaged over channels)."""
    a, b = _prepare(restored, gt, crop_border, y_channel)
    if min(a.shape[0], a.shape[1]) < _WIN:
        raise UserError(f"SSIM needs images of at least {_WIN}x{_WIN} after cropping, "
                        f"got {a.shape[1]}x{a.shape[0]}")
    win = _gaussian_window()
    if a.ndim == 2:
        return _ssim_channel(a, b, win)
    return float(np.mean([_ssim_channel(a[..., c], b[..., c], win) for c in range(a.shape[2])]))
