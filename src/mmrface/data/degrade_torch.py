"""Differentiable torch replay of degradation records (for the re-degradation consistency loss).

`degrade_torch(x, params)` applies to each image of a batch the stages of its record, in the
order of the numpy path (`degrade.apply_record`), with gradients flowing to `x`:

- blur: depthwise conv2d with the kernel rebuilt from the record, OpenCV's BORDER_REFLECT_101
  reproduced by index gathering (so any kernel size works on any image size);
- resize down / back: `F.interpolate` (bilinear / bicubic, align_corners=False, no antialias,
  like cv2.resize); `area` shrinking as the exact cv2 INTER_AREA weight matrices (a matmul per
  axis), because `F.interpolate(mode="area")` differs from cv2 for non-integer ratios;
- noise: regenerated with numpy from the recorded seed (`degrade_ops.make_noise`) and added, so
  it is the very same noise as the numpy path. Poisson noise depends on the signal: it is
  computed on the detached input and added as a constant (gradient of identity);
- JPEG: `jpeg="straight_through"` (default) adds the detached JPEG error `jpeg(x) - x`, so the
  forward value equals the numpy path and the gradient is the identity; `jpeg="skip"` leaves it;
- clamps to [0, 1] where the numpy path clips; colour jitter and grey as the same linear maps.

Values: `x` is NCHW RGB in `value_range` ((-1, 1) by default, the network convention; pass
(0, 1) for images in [0, 1]); the output has the input's size and range. The final uint8 rounding
of the numpy path is not replayed (it would stop the gradient), so a replay of a uint8 record
differs from the saved LQ image by at most half a grey level plus the tolerances of the tests.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mmrface.data import degrade_ops as ops
from mmrface.data.degrade import load_record

_GRAY = torch.from_numpy(ops.GRAY_WEIGHTS)


def _blur(x: torch.Tensor, b: dict) -> torch.Tensor:
    k = torch.from_numpy(ops.gaussian_kernel(b["size"], b["sigma_x"], b["sigma_y"], b["theta"]))
    k = k.to(x)
    pad = b["size"] // 2
    h, w = x.shape[-2:]
    ih = torch.from_numpy(ops.reflect101_index(h, pad)).to(x.device)
    iw = torch.from_numpy(ops.reflect101_index(w, pad)).to(x.device)
    xp = x.index_select(2, ih).index_select(3, iw)  # (1, 3, h + 2p, w + 2p)
    return F.conv2d(xp, k.expand(x.shape[1], 1, *k.shape), groups=x.shape[1])


def _resize(x: torch.Tensor, size: tuple[int, int], interp: str) -> torch.Tensor:
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    if interp == "area":
        mh = torch.from_numpy(ops.area_matrix(h, size[0])).to(x)  # (h', h)
        mw = torch.from_numpy(ops.area_matrix(w, size[1])).to(x)  # (w', w)
        return mh @ x @ mw.T
    return F.interpolate(x, size=size, mode=interp, align_corners=False)


def _hwc(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) tensor -> HxWx3 float32 numpy (detached)."""
    return x.detach()[0].permute(1, 2, 0).cpu().numpy().astype(np.float32)


def _chw(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].to(like)


def _luma(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("bchw,c->bhw", x, _GRAY.to(x))[:, None]  # (1, 1, H, W)


def _jitter(x: torch.Tensor, j: dict) -> torch.Tensor:
    x = x * j["brightness"]
    m = _luma(x).mean()
    x = (x - m) * j["contrast"] + m
    g = _luma(x)
    x = (x - g) * j["saturation"] + g
    x = torch.einsum("dc,bchw->bdhw", torch.from_numpy(ops.hue_matrix(j["hue"])).to(x), x)
    return x.clamp(0.0, 1.0)


def replay_one(x: torch.Tensor, rec: dict, jpeg: str = "straight_through") -> torch.Tensor:
    """Replay one record on a (1, 3, H, W) tensor in [0, 1]."""
    h, w = x.shape[-2:]
    if rec["blur"]:
        x = _blur(x, rec["blur"])
    down = rec["down"]
    if down:
        x = _resize(x, ops.scaled_size(h, w, down["scale"]), down["interp"])
    if rec["noise"]:
        x = x + _chw(ops.make_noise(rec["noise"], _hwc(x)), x)
    x = x.clamp(0.0, 1.0)
    if rec["jpeg"] and jpeg == "straight_through":
        target = _chw(ops.jpeg(_hwc(x), rec["jpeg"]["quality"]), x)
        x = x + (target - x.detach())
    if down:
        x = _resize(x, (h, w), down["back_interp"])
    x = x.clamp(0.0, 1.0)
    if rec["jitter"]:
        x = _jitter(x, rec["jitter"])
    if rec["gray"]:
        x = _luma(x).expand(-1, 3, -1, -1)
    return x


def degrade_torch(x: torch.Tensor, params: Sequence[dict | str], *,
                  value_range: tuple[float, float] = (-1.0, 1.0),
                  jpeg: str = "straight_through") -> torch.Tensor:
    """Replay `params[i]` (a record dict or its JSON string) on `x[i]`; x: (B, 3, H, W).

    Returns (B, 3, H, W) in `value_range`; differentiable w.r.t. `x` (see the module docstring).
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a (B, 3, H, W) tensor, got {tuple(x.shape)}")
    if len(params) != x.shape[0]:
        raise ValueError(f"{len(params)} records for a batch of {x.shape[0]}")
    if jpeg not in ("straight_through", "skip"):
        raise ValueError(f"jpeg must be 'straight_through' or 'skip', got {jpeg!r}")
    lo, hi = value_range
    x01 = (x - lo) / (hi - lo)
    out = [replay_one(x01[i:i + 1], load_record(p), jpeg) for i, p in enumerate(params)]
    return torch.cat(out) * (hi - lo) + lo
