"""Mixed Multi-path Residual Block (MMRB) and its ablation twin, the plain ResBlock.

The paper (arXiv 2205.14377) describes the MMRB only as a block that "gradually extracts weak
texture features" and is "plug-and-play in any other network". Our reading (docs/design.md):

    x ──┬─ local:   conv3x3                      ─┐
        ├─ context: conv3x3, dilation d          ─┼─ concat ─┬─ local2:   conv3x3      ─┐
        └─ weak:    conv3x3(x − avgpool3(x))     ─┘          ├─ context2: conv3x3 (d)  ─┼─ concat ─ 1x1 fuse ─ SE ─ ·γ ─ + x
                                                             └─ weak2:    conv3x3      ─┘

The weak-detail path convolves the high-pass residual only, so low-amplitude texture is isolated
before strong edges and flat regions can drown it; its first conv has no bias, so a constant input
gives exactly zero on that path. After the first layer every path's second conv sees all paths
(cross-path exchange). γ is a learnable per-channel residual scale initialised small, which keeps a
deep stack of blocks close to identity at the start of training. LeakyReLU(0.2), no normalisation.
Input and output shapes are equal for any (C, H, W): the block drops into any residual network.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

PATHS = ("local", "context", "weak")


def high_pass(x: torch.Tensor) -> torch.Tensor:
    """x − 3×3 local mean (mean over valid pixels at the border): zero for any constant input."""
    return x - F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class SqueezeExcite(nn.Module):
    """Channel attention: global average → bottleneck MLP → sigmoid gate per channel."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(4, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(gate))))
        return x * gate


class MMRB(nn.Module):
    """Mixed Multi-path Residual Block. Shape-preserving: (B, C, H, W) -> (B, C, H, W).

    Args:
        channels: C, the block's input and output channels.
        paths: which paths to build, any non-empty subset of ("local", "context", "weak").
        dilation: dilation of the context path's 3×3 convs.
        attention: squeeze-excite re-weighting of the fused output.
        path_ratio: channels of each path = max(4, round(C · path_ratio)).
        res_scale_init: initial value of the learnable per-channel residual scale γ.
        se_reduction: bottleneck reduction of the squeeze-excite MLP.
    """

    def __init__(
        self,
        channels: int,
        paths: Sequence[str] = PATHS,
        dilation: int = 2,
        attention: bool = True,
        path_ratio: float = 0.5,
        res_scale_init: float = 0.1,
        se_reduction: int = 4,
    ):
        super().__init__()
        paths = tuple(paths)
        unknown = set(paths) - set(PATHS)
        if not paths or unknown:
            raise ValueError(f"MMRB paths must be a non-empty subset of {PATHS}, got {paths}")
        self.paths = paths
        pc = max(4, int(round(channels * path_ratio)))
        mixed = pc * len(paths)
        dil = {"local": 1, "context": dilation, "weak": 1}
        # first layer: each path on its own input (x, or the high-pass of x for "weak")
        self.first = nn.ModuleDict(
            {p: nn.Conv2d(channels, pc, 3, padding=dil[p], dilation=dil[p], bias=p != "weak") for p in paths}
        )
        # second layer: each path sees the concatenation of all first-layer outputs
        self.second = nn.ModuleDict(
            {p: nn.Conv2d(mixed, pc, 3, padding=dil[p], dilation=dil[p]) for p in paths}
        )
        self.fuse = nn.Conv2d(mixed, channels, 1)
        self.attention = SqueezeExcite(channels, se_reduction) if attention else nn.Identity()
        self.res_scale = nn.Parameter(torch.full((1, channels, 1, 1), float(res_scale_init)))

    def path_inputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        hp = high_pass(x) if "weak" in self.paths else None
        return {p: hp if p == "weak" else x for p in self.paths}

    def first_layer(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-path first-layer activations (exposed for tests and visualisation)."""
        inputs = self.path_inputs(x)
        return {p: F.leaky_relu(self.first[p](inputs[p]), 0.2) for p in self.paths}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.first_layer(x)
        mix = torch.cat([first[p] for p in self.paths], dim=1)  # (B, P·pc, H, W)
        second = torch.cat([F.leaky_relu(self.second[p](mix), 0.2) for p in self.paths], dim=1)
        out = self.attention(self.fuse(second))  # (B, C, H, W)
        return x + self.res_scale * out


class ResBlock(nn.Module):
    """Ablation baseline: x + γ · conv3x3(lrelu(conv3x3(x))). Same interface as MMRB."""

    def __init__(self, channels: int, res_scale_init: float = 0.1):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.res_scale = nn.Parameter(torch.full((1, channels, 1, 1), float(res_scale_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.conv2(F.leaky_relu(self.conv1(x), 0.2))


BLOCKS = {"mmrb": MMRB, "resblock": ResBlock}


def make_block(kind: str, channels: int, **options) -> nn.Module:
    """Build a shape-preserving residual block by name ("mmrb" or "resblock")."""
    try:
        cls = BLOCKS[kind]
    except KeyError:
        raise ValueError(f"unknown block {kind!r}; choose one of {sorted(BLOCKS)}") from None
    if cls is ResBlock:
        options = {k: v for k, v in options.items() if k == "res_scale_init"}
    return cls(channels, **options)
