"""ArcFace ResNet18 (IRBlock, layers 2-2-2-2, no SE): the identity network of GFPGAN's training.

It takes a 1x128x128 grey face and returns a 512-d embedding. It is only ever built from a file the
user points to (`arcface_resnet18.pth`, a bare state dict, possibly with a `module.` prefix); we
ship no weights. Key names follow that file so it loads strictly.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class IRBlock(nn.Module):
    """Pre-BN residual block: BN, 3x3 conv, BN, PReLU, 3x3 conv (stride), BN; + (projected) input; PReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.bn0 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.prelu = nn.PReLU()  # one slope, shared by both activations
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                            nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(self.bn0(x))))))
        residual = x if self.downsample is None else self.downsample(x)
        return self.prelu(out + residual)


class ArcFaceResNet(nn.Module):
    """ResNet-ArcFace: (B, 1, 128, 128) grey in [-1, 1] -> (B, 512) embedding (after BN, not normalised)."""

    def __init__(self, layers: tuple[int, ...] | list[int] = (2, 2, 2, 2)):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.prelu = nn.PReLU()
        widths, in_ch = (64, 128, 256, 512), 64
        for i, (width, n) in enumerate(zip(widths, layers)):
            blocks = [IRBlock(in_ch, width, 1 if i == 0 else 2)] + [IRBlock(width, width) for _ in range(n - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            in_ch = width
        self.bn4 = nn.BatchNorm2d(512)
        self.fc5 = nn.Linear(512 * 8 * 8, 512)
        self.bn5 = nn.BatchNorm1d(512)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(self.prelu(self.bn1(self.conv1(x))), 2)  # (B, 64, 64, 64)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 512, 8, 8)
        return self.bn5(self.fc5(self.bn4(x).flatten(1)))  # dropout is inactive in eval


def grey_128(rgb: Tensor) -> Tensor:
    """(B, 3, H, W) RGB in [-1, 1] -> (B, 1, 128, 128) grey (ITU-R 601 weights), bilinear resize."""
    grey = (0.2989 * rgb[:, 0] + 0.5870 * rgb[:, 1] + 0.1140 * rgb[:, 2]).unsqueeze(1)
    return F.interpolate(grey, size=(128, 128), mode="bilinear", align_corners=False)


def convert_arcface(sd: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict]:
    """A (prefix-stripped) ArcFace state dict in our keys: adds any missing BN `num_batches_tracked`."""
    layers = [len({k.split(".")[1] for k in sd if k.startswith(f"layer{i}.")}) for i in range(1, 5)]
    out = dict(sd)
    with torch.device("meta"):
        target = ArcFaceResNet(layers).state_dict()
    for key in target:
        if key.endswith("num_batches_tracked") and key not in out:
            out[key] = torch.zeros((), dtype=torch.long)
    return out, {"arch": "arcface", "layers": layers}


def load_arcface(path: str | Path) -> ArcFaceResNet:
    """Build the identity network from a user's file (.pth or converted .safetensors), strictly, in eval mode."""
    from mmrface.models import load_model

    return load_model(path, arch="arcface")[0]
