"""Pixel losses: L1 and the pyramid L1 on the decoder's intermediate RGB images.

All images are NCHW RGB in [-1, 1]; every loss returns a scalar (mean over batch and pixels).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def l1_loss(out: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error between (B, 3, S, S) images."""
    return F.l1_loss(out, target)


def downsample(x: Tensor, size: int) -> Tensor:
    """Area (box-average) down-sampling of (B, C, S, S) to (B, C, size, size); identity at S."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="area")


def pyramid_l1(rgbs: Sequence[Tensor], target: Tensor) -> Tensor:
    """Mean over levels of L1(rgb_L, HQ down-sampled to L), for the decoder RGBs 8 px … S.

    The mean (not GFPGAN's sum) keeps the loss on the scale of one L1 term whatever the resolution.
    """
    if not rgbs:
        raise ValueError("pyramid_l1 needs the decoder RGBs (call the network with return_rgbs=True)")
    terms = [F.l1_loss(rgb, downsample(target, rgb.shape[-1]).to(rgb.dtype)) for rgb in rgbs]
    return torch.stack(terms).mean()
