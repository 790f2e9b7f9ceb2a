"""Image-quality metrics for face restoration, behind one small registry.

Convention for every per-image metric returned by :func:`get_metric`::

    fn(restored, gt) -> float
    # restored: uint8 HxWx3 RGB; gt: uint8 HxWx3 RGB of the same shape, or None for
    # no-reference metrics (NIQE ignores gt).

FID is a set-level metric: ``get_metric('fid', weights=path)(restored_list, gt_list) -> float``.

=========  ======================  =====  ======================================================
name       label                   best   what
=========  ======================  =====  ======================================================
psnr       PSNR                    high   RGB, [0, 255], BasicSR convention
ssim       SSIM                    high   RGB, 11x11 Gaussian (sigma 1.5), valid filtering
psnr_y     PSNR (Y)                high   BT.601 Y channel
ssim_y     SSIM (Y)                high   BT.601 Y channel
lpips      LPIPS (alex)            low    LPIPS v0.1, AlexNet
lpips_vgg  LPIPS (vgg)             low    LPIPS v0.1, VGG16
niqe       NIQE                    low    no reference; Y channel, MATLAB-release algorithm
id_dlib    Deg (dlib)              low    angle (degrees) between dlib face embeddings
lmd_dlib   LMD (dlib-68)           low    mean distance of dlib 68-point landmarks (pixels)
fid        FID                     low    set-level; needs the pytorch-fid Inception weights
=========  ======================  =====  ======================================================

Options (``crop_border`` for PSNR/SSIM/NIQE, ``weights`` for FID) are passed to
:func:`get_metric`. Heavy models (LPIPS nets, dlib models, Inception) are loaded on first use
and cached; importing this package loads nothing heavy.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from mmrface.errors import UserError


@dataclass(frozen=True)
class MetricSpec:
    """What a metric is and how to build it."""

    name: str
    label: str
    higher_is_better: bool
    needs_gt: bool
    per_image: bool  # False: called on two lists of images (FID)
    build: Callable[..., Callable[..., float]]


def _psnr_ssim(which: str, y_channel: bool):
    def build(crop_border: int = 0) -> Callable[[np.ndarray, np.ndarray | None], float]:
        from mmrface.metrics import psnr_ssim

        fn = getattr(psnr_ssim, which)
        return lambda restored, gt: fn(restored, gt, crop_border=crop_border, y_channel=y_channel)

    return build


@lru_cache(maxsize=2)
def _lpips_model(net: str):
    from mmrface.metrics.lpips import LPIPS

    return LPIPS(net)


def _lpips(net: str):
    def build() -> Callable[[np.ndarray, np.ndarray | None], float]:
        from mmrface.metrics.lpips import lpips_distance

        model = _lpips_model(net)
        return lambda restored, gt: lpips_distance(restored, gt, model)

    return build


def _niqe(crop_border: int = 0) -> Callable[[np.ndarray, np.ndarray | None], float]:
    from mmrface.metrics.niqe import niqe

    return lambda restored, gt=None: niqe(restored, crop_border=crop_border)


def _id_dlib() -> Callable[[np.ndarray, np.ndarray | None], float]:
    from mmrface.metrics.identity import identity_distance

    return lambda restored, gt: identity_distance(restored, gt).degrees


def _lmd_dlib() -> Callable[[np.ndarray, np.ndarray | None], float]:
    from mmrface.metrics.identity import landmark_distance

    return landmark_distance


@lru_cache(maxsize=2)
def _fid(weights: str | None = None, batch_size: int = 16):
    from mmrface.metrics.fid import FID

    return FID(weights=weights, batch_size=batch_size)


METRICS: dict[str, MetricSpec] = {
    s.name: s
    for s in (
        MetricSpec("psnr", "PSNR", True, True, True, _psnr_ssim("psnr", False)),
        MetricSpec("ssim", "SSIM", True, True, True, _psnr_ssim("ssim", False)),
        MetricSpec("psnr_y", "PSNR (Y)", True, True, True, _psnr_ssim("psnr", True)),
        MetricSpec("ssim_y", "SSIM (Y)", True, True, True, _psnr_ssim("ssim", True)),
        MetricSpec("lpips", "LPIPS (alex)", False, True, True, _lpips("alex")),
        MetricSpec("lpips_vgg", "LPIPS (vgg)", False, True, True, _lpips("vgg")),
        MetricSpec("niqe", "NIQE", False, False, True, _niqe),
        MetricSpec("id_dlib", "Deg (dlib)", False, True, True, _id_dlib),
        MetricSpec("lmd_dlib", "LMD (dlib-68)", False, True, True, _lmd_dlib),
        MetricSpec("fid", "FID", False, True, False, _fid),
    )
}


def available_metrics() -> list[str]:
    """Registered metric names."""
    return list(METRICS)


def get_metric(name: str, **options: Any) -> Callable[..., float]:
    """Build metric ``name`` with its options; raises UserError for unknown names/options."""
    if name not in METRICS:
        raise UserError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")
    build = METRICS[name].build
    try:
        inspect.signature(build).bind(**options)
    except TypeError as exc:
        allowed = ", ".join(inspect.signature(build).parameters) or "none"
        msg = f"bad options {sorted(options)} for metric {name!r} (allowed: {allowed})"
        raise UserError(msg) from exc
    return build(**options)


__all__ = ["METRICS", "MetricSpec", "available_metrics", "get_metric"]
