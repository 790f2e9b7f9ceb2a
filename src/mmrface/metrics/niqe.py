"""NIQE, the no-reference "Natural Image Quality Evaluator" (Mittal, Soundararajan, Bovik 2013).

Follows the authors' MATLAB release (``computequality.m``), which produced the pristine model:

1. Grey input: the BT.601 Y channel of the RGB image, rounded to integers (MATLAB's
   ``rgb2ycbcr`` on uint8), ``crop_border`` removed, then cut to whole 96x96 blocks.
2. At two scales (full, then MATLAB ``imresize(im, 0.5)``: bicubic with anti-aliasing):
   MSCN coefficients ``(I - mu) / (sigma + 1)`` with a 7x7 Gaussian window (sigma 7/6,
   replicate borders); per block (96/scale px) 18 features: an asymmetric generalised Gaussian
   (AGGD) fit of the MSCN values (shape alpha, mean of the left/right scales), and for each of
   the 4 neighbour products (horizontal, vertical, two diagonals, circular shifts) an AGGD fit
   (alpha, mean, left scale, right scale). The release fits an AGGD to the MSCN values too (the
   paper describes a symmetric GGD there); the pristine parameters come from the release, so we
   follow it.
3. A multivariate Gaussian of the block features is compared with the pristine one:
   ``sqrt((mu_p - mu)^T pinv((S_p + S) / 2) (mu_p - mu))``. Lower is better.

The pristine mean/covariance (``data/niqe_pris_params.npz``) come from BasicSR, which took them
from the MATLAB release (see ``data/README.md``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy.ndimage import correlate
from scipy.special import gamma

from mmrface.errors import UserError
from mmrface.metrics._image import check_image, crop, rgb_to_y

BLOCK = 96
_GAM = np.arange(0.2, 10.0005, 0.001)  # MATLAB's 0.2:0.001:10 search grid for the AGGD shape
_R_GAM = gamma(2.0 / _GAM) ** 2 / (gamma(1.0 / _GAM) * gamma(3.0 / _GAM))
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))  # MATLAB circshift offsets (rows, cols)


@lru_cache(maxsize=1)
def pristine_model() -> tuple[np.ndarray, np.ndarray]:
    """(mu (36,), cov (36, 36)) of the pristine natural-image model."""
    from mmrface.thirdparty import verified_file

    with open(verified_file("mmrface.metrics", "data/niqe_pris_params.npz"), "rb") as f:
        d = np.load(f)
        return d["mu_pris_param"].reshape(-1).astype(np.float64), d["cov_pris_param"].astype(np.float64)


def _gaussian_window() -> np.ndarray:
    """MATLAB ``fspecial('gaussian', 7, 7/6)``, normalised to sum 1."""
    r = np.arange(7, dtype=np.float64) - 3
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * (7 / 6) ** 2))
    return g / g.sum()


def aggd_fit(x: np.ndarray) -> tuple[float, float, float]:
    """Moment-matching AGGD fit -> (alpha, beta_left, beta_right), as in ``estimateaggdparam.m``.

    NaNs propagate as in MATLAB: a side with no samples has a NaN scale, and a flat block (no
    usable ratio) gets the first grid value 0.2 as shape, because MATLAB's ``min`` skips NaNs.
    """
    x = x.ravel()
    left, right = x[x < 0], x[x > 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        left_std = np.sqrt(np.mean(left * left)) if left.size else np.nan
        right_std = np.sqrt(np.mean(right * right)) if right.size else np.nan
        gamma_hat = left_std / right_std
        r_hat = np.mean(np.abs(x)) ** 2 / np.mean(x * x)
        r_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    alpha = float(_GAM[0] if np.isnan(r_norm) else _GAM[np.argmin((_R_GAM - r_norm) ** 2)])
    k = math.sqrt(gamma(1.0 / alpha) / gamma(3.0 / alpha))
    return alpha, float(left_std * k), float(right_std * k)


def block_features(mscn: np.ndarray) -> list[float]:
    """The 18 NIQE features of one block of MSCN coefficients."""
    alpha, bl, br = aggd_fit(mscn)
    feats = [alpha, (bl + br) / 2]
    for shift in _SHIFTS:
        pair = mscn * np.roll(mscn, shift, axis=(0, 1))
        alpha, bl, br = aggd_fit(pair)
        mean = (br - bl) * gamma(2.0 / alpha) / gamma(1.0 / alpha)
        feats += [alpha, mean, bl, br]
    return feats


def mscn(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients of a float64 HxW image."""
    mu = correlate(img, window, mode="nearest")
    sigma = np.sqrt(np.abs(correlate(img * img, window, mode="nearest") - mu * mu))
    return (img - mu) / (sigma + 1.0)


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' bicubic kernel (a = -0.5), MATLAB's ``cubic``."""
    ax = np.abs(x)
    return ((1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1)
            + (-0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def _resize_axis(img: np.ndarray, scale: float, axis: int) -> np.ndarray:
    """MATLAB ``imresize`` along one axis: bicubic, anti-aliased when shrinking, symmetric edges."""
    n_in = img.shape[axis]
    n_out = int(math.ceil(n_in * scale))
    kernel_scale = min(scale, 1.0)
    width = 4.0 / kernel_scale
    u = np.arange(1, n_out + 1, dtype=np.float64) / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]  # 1-based source indices (n_out, taps)
    w = kernel_scale * _cubic(kernel_scale * (u[:, None] - idx))
    w /= w.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(n_in), np.arange(n_in - 1, -1, -1)])
    idx0 = mirror[np.mod(idx.astype(np.int64) - 1, 2 * n_in)]
    moved = np.moveaxis(img, axis, 0)
    out = np.einsum("ot,ot...->o...", w.astype(img.dtype), moved[idx0])
    return np.moveaxis(out, 0, axis)


def matlab_imresize(img: np.ndarray, scale: float) -> np.ndarray:
    """Resize a float HxW image like MATLAB ``imresize(img, scale)`` (bicubic, antialiasing).

    Works in the dtype of ``img`` (weights computed in float64, then cast).
    """
    # MATLAB resizes the dimension with the smaller scale first; equal scales: rows first.
    return _resize_axis(_resize_axis(img, scale, 0), scale, 1)


def niqe_gray(img: np.ndarray, dtype: type = np.float64) -> float:
    """NIQE of a grey HxW image in [0, 255] (already rounded/cropped as desired).

    ``dtype``: arithmetic of the MSCN/resize/feature stage. float64 as in MATLAB (default);
    float32 follows BasicSR's ``calculate_niqe``, which runs in float32 (we measured agreement
    within 0.2% with BasicSR 1.4.2). The AGGD shape is picked from a 0.001 grid, so float32
    and float64 results can differ by about 1% on some images.
    """
    img = img.astype(dtype)
    h, w = img.shape
    nh, nw = h // BLOCK, w // BLOCK
    if nh == 0 or nw == 0:
        raise UserError(f"NIQE needs an image of at least {BLOCK}x{BLOCK} pixels, got {w}x{h}")
    img = img[: nh * BLOCK, : nw * BLOCK]
    window = _gaussian_window()
    per_scale = []
    for scale in (1, 2):
        coeffs = mscn(img, window)
        b = BLOCK // scale
        per_scale.append(np.array([block_features(coeffs[i * b:(i + 1) * b, j * b:(j + 1) * b])
                                   for j in range(nw) for i in range(nh)]))
        if scale == 1:
            img = matlab_imresize(img, 0.5)
    feats = np.concatenate(per_scale, axis=1)  # (blocks, 36)
    mu_p, cov_p = pristine_model()
    finite = feats[~np.isnan(feats).any(axis=1)]
    if finite.shape[0] < 2:
        raise UserError("NIQE: the image has too few textured 96x96 blocks to fit a model (is it flat?)")
    mu = np.nanmean(feats, axis=0)  # like MATLAB's nanmean: every block, NaN entries skipped
    cov = np.cov(finite, rowvar=False)
    diff = mu_p - mu
    return float(math.sqrt(max(float(diff @ np.linalg.pinv((cov_p + cov) / 2) @ diff), 0.0)))


def niqe(img: np.ndarray, crop_border: int = 0, dtype: type = np.float64) -> float:
    """NIQE of a uint8 HxWx3 RGB (or HxW grey) image, on the rounded Y channel. Lower is better.

    The Y channel is rounded half away from zero, like MATLAB's uint8 ``rgb2ycbcr``; with
    ``dtype=np.float32`` it is cast to float32 before rounding, as in BasicSR.
    """
    check_image(img, "image", allow_gray=True)
    if img.ndim == 3:
        y = np.floor(rgb_to_y(img).astype(dtype) + 0.5)
    else:
        y = img.astype(dtype)
    return niqe_gray(crop(y, crop_border), dtype)
