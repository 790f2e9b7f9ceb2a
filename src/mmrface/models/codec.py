"""Asymmetric codec: a deep MMRB encoder and a light U-Net decoder.

Encoder (deep):  lq (B,3,S,S) ─1x1─► level S ─[blocks]─► skip_S ─stride-2─► … ─► level 8 ─[blocks]─►
                 skip_8 ─stride-2─► 4x4 ─conv─► flatten ─linear─► W+ codes (B, num_latent, style_dim)
Decoder (light): 4x4 ─► per level L = 8 … S: bilinear ×2, conv3x3, + skip_L
                 ─► SFT head: conv3x3 → (scale, shift) for the prior's level L, and a 1x1 to-RGB
                    (the intermediate image of the pyramid loss).

The asymmetry is where the compute goes: the encoder, which has to sense weak local features in a
degraded input, gets the residual blocks (`enc_blocks` per level, typically 0 at the two largest
levels, where a plain strided conv is cheap, and 2 MMRBs at ≤ 128²); the decoder only has to carry
spatial layout to the prior and costs one conv per level.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmrface.models.mmrb import make_block

def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


class EncoderLevel(nn.Module):
    """`n_blocks` shape-preserving residual blocks, then a stride-2 3×3 conv to the next level."""

    def __init__(self, in_ch: int, out_ch: int, n_blocks: int, block: str, block_options: dict):
        super().__init__()
        self.blocks = nn.Sequential(*[make_block(block, in_ch, **block_options) for _ in range(n_blocks)])
        self.down = nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.blocks(x)  # (B, in_ch, L, L)
        return skip, lrelu(self.down(skip))  # skip, (B, out_ch, L/2, L/2)


class MMRBEncoder(nn.Module):
    """Deep encoder: image -> (W+ codes, U-Net skips by resolution)."""

    def __init__(
        self,
        size: int,
        channels: dict[int, int],
        num_latent: int,
        style_dim: int,
        enc_blocks: int | Sequence[int] = 2,
        block: str = "mmrb",
        block_options: dict | None = None,
    ):
        super().__init__()
        levels = [2**i for i in range(int(math.log2(size)), 2, -1)]  # size, …, 8
        n_blocks = _per_level(enc_blocks, len(levels) + 1)  # the list includes the 4x4 level
        block_options = dict(block_options or {})
        self.levels = levels
        self.num_latent, self.style_dim = num_latent, style_dim
        self.conv_in = nn.Conv2d(3, channels[size], 1)
        self.body = nn.ModuleList(
            EncoderLevel(channels[r], channels[r // 2], n, block, block_options) for r, n in zip(levels, n_blocks)
        )
        self.blocks_4 = nn.Sequential(*[make_block(block, channels[4], **block_options) for _ in range(n_blocks[-1])])
        self.final_conv = nn.Conv2d(channels[4], channels[4], 3, padding=1)
        self.to_latent = nn.Linear(channels[4] * 16, num_latent * style_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor], torch.Tensor]:
        feat = lrelu(self.conv_in(x))
        skips = {}
        for r, level in zip(self.levels, self.body):
            skips[r], feat = level(feat)
        feat = lrelu(self.final_conv(self.blocks_4(feat)))  # (B, C4, 4, 4)
        codes = self.to_latent(feat.flatten(1)).view(-1, self.num_latent, self.style_dim)
        return codes, skips, feat


class SFTHead(nn.Module):
    """Predicts the CS-SFT (scale, shift) for one prior level; scale = 1 + small output at init."""

    def __init__(self, in_ch: int, hidden: int, out_ch: int, init_gain: float = 0.1):
        super().__init__()
        self.body = nn.Conv2d(in_ch, hidden, 3, padding=1)
        self.scale = nn.Conv2d(hidden, out_ch, 3, padding=1)
        self.shift = nn.Conv2d(hidden, out_ch, 3, padding=1)
        for conv in (self.scale, self.shift):  # start near the identity modulation
            conv.weight.data.mul_(init_gain)
            conv.bias.data.zero_()

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = lrelu(self.body(feat))
        return 1 + self.scale(h), self.shift(h)


class LightDecoder(nn.Module):
    """Light U-Net decoder: one upsample+conv per level, SFT heads and to-RGB at each level."""

    def __init__(self, size: int, channels: dict[int, int], sft_channels: dict[int, int], head_channels: int | None = None):
        super().__init__()
        self.levels = [2**i for i in range(3, int(math.log2(size)) + 1)]  # 8, …, size
        self.ups = nn.ModuleList(nn.Conv2d(channels[r // 2], channels[r], 3, padding=1) for r in self.levels)
        self.heads = nn.ModuleList(
            SFTHead(channels[r], head_channels or channels[r], sft_channels[r]) for r in self.levels
        )
        self.to_rgbs = nn.ModuleList(nn.Conv2d(channels[r], 3, 1) for r in self.levels)

    def forward(self, feat: torch.Tensor, skips: dict[int, torch.Tensor], return_rgbs: bool = False):
        conditions, rgbs = [], []
        for r, up, head, to_rgb in zip(self.levels, self.ups, self.heads, self.to_rgbs):
            feat = F.interpolate(feat, scale_factor=2, mode="bilinear", align_corners=False)
            feat = lrelu(up(feat)) + skips[r]  # (B, C_r, r, r)
            conditions.append(head(feat))
            if return_rgbs:
                rgbs.append(to_rgb(feat))
        return conditions, rgbs


def _per_level(value: int | Sequence[int], n: int) -> list[int]:
    if isinstance(value, int):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(f"enc_blocks needs {n} entries (one per level from the input size down to 4), got {len(value)}")
    return value
