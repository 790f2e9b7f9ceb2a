"""GFPGANv1Clean (the GFPGANv1.3 / v1.4 restorer) rebuilt from our modules: our measured baseline.

    lq ─► ResBlock U-Net encoder (bilinear down) ─► 4x4 feature ─► linear ─► W+ codes ─┐
                         │ skips                                                        ▼
          U-Net decoder (bilinear up) ─► per level: SFT scale/shift (+ pyramid RGB) ─► StyleGAN2 prior
                                                                      (GFPGAN-clean convention)

Converted GFPGANv1.3/1.4 checkpoints load strictly (see `mmrface.convert`). Unlike GFPGAN's own
`weight=` argument, which its network ignores, the fidelity `w` here is wired to the CS-SFT
(`w=1` is GFPGAN exactly, `w=0` is the prior alone from the predicted W+ codes).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from mmrface.models.mmrface_net import CodecPriorNet
from mmrface.models.stylegan2 import StyleGAN2Generator, channel_table


class UNetResBlock(nn.Module):
    """Residual block that resamples by 2 (bilinear): lrelu(conv1) -> resize -> lrelu(conv2), + 1x1 skip."""

    def __init__(self, in_channels: int, out_channels: int, scale: float):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        out = F.leaky_relu(self.conv1(x), 0.2)
        out = F.interpolate(out, scale_factor=self.scale, mode="bilinear", align_corners=False)
        out = F.leaky_relu(self.conv2(out), 0.2)
        skip = self.skip(F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False))
        return out + skip


class Encoder(nn.Module):
    """1x1 conv in, ResBlocks down to 4x4, 3x3 conv, linear to the W+ codes; keeps the U-Net skips."""

    def __init__(self, size: int, channels: dict[int, int], num_latent: int, style_dim: int):
        super().__init__()
        self.num_latent, self.style_dim = num_latent, style_dim
        self.first = nn.Conv2d(3, channels[size], 1)
        res = [2 ** i for i in range(int(math.log2(size)), 2, -1)]  # size, size/2, ..., 8
        self.down = nn.ModuleList(UNetResBlock(channels[r], channels[r // 2], 0.5) for r in res)
        self.last = nn.Conv2d(channels[4], channels[4], 3, 1, 1)
        self.to_wplus = nn.Linear(channels[4] * 16, num_latent * style_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor], Tensor]:
        feat = F.leaky_relu(self.first(x), 0.2)
        skips = []
        for block in self.down:
            feat = block(feat)
            skips.insert(0, feat)  # 4x4 first
        feat = F.leaky_relu(self.last(feat), 0.2)  # (B, C4, 4, 4)
        codes = self.to_wplus(feat.flatten(1)).reshape(-1, self.num_latent, self.style_dim)
        return codes, skips, feat


class Decoder(nn.Module):
    """U-Net decoder: per level 8..size a ResBlock up, SFT scale/shift heads and a 1x1 to-RGB."""

    def __init__(self, size: int, channels: dict[int, int], sft_channels: dict[int, int]):
        super().__init__()
        res = [2 ** i for i in range(3, int(math.log2(size)) + 1)]  # 8 .. size
        self.up = nn.ModuleList(UNetResBlock(channels[r // 2], channels[r], 2.0) for r in res)
        self.to_rgbs = nn.ModuleList(nn.Conv2d(channels[r], 3, 1) for r in res)

        def head(r: int) -> nn.Sequential:
            c = channels[r]
            return nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(c, sft_channels[r], 3, 1, 1))

        self.sft_scale = nn.ModuleList(head(r) for r in res)
        self.sft_shift = nn.ModuleList(head(r) for r in res)

    def forward(self, feat: Tensor, skips: list[Tensor], return_rgbs: bool = False):
        conditions, rgbs = [], []
        for i, up in enumerate(self.up):
            feat = up(feat + skips[i])
            conditions.append((self.sft_scale[i](feat), self.sft_shift[i](feat)))
            if return_rgbs:
                rgbs.append(self.to_rgbs[i](feat))
        return conditions, rgbs


class GFPGANv1Clean(CodecPriorNet):
    """GFPGANv1Clean restorer: ResBlock U-Net + GFPGAN-clean StyleGAN2 prior with CS-SFT.

    Args mirror GFPGAN's `GFPGANv1Clean(out_size, num_style_feat, channel_multiplier, num_mlp,
    narrow, sft_half)` with `input_is_latent=True, different_w=True` (v1.3/v1.4). The U-Net is half
    as wide as the prior. `noise_mode` defaults to "const" (deterministic; GFPGAN's own inference
    draws random noise).
    """

    def __init__(self, size: int = 512, style_dim: int = 512, channel_multiplier: float = 2, n_mlp: int = 8,
                 narrow: float = 1.0, sft_half: bool = True, noise_mode: str = "const"):
        super().__init__()
        self.size = size
        self.prior = StyleGAN2Generator(size, style_dim, n_mlp, channel_multiplier, narrow, upsample="bilinear",
                                        equalized_lr=False, gain_mode="pre", noise_mode=noise_mode, sft_half=sft_half)
        unet = channel_table(size, channel_multiplier, narrow * 0.5)
        sft = {r: c if sft_half else 2 * c for r, c in unet.items()}
        if sft_half and any(sft[r] != self.prior.channels[r] - self.prior.channels[r] // 2 for r in sft if r > 4):
            raise ValueError("sft_half needs the U-Net to be exactly half as wide as the prior")
        self.encoder = Encoder(size, unet, self.prior.num_latent, style_dim)
        self.decoder = Decoder(size, unet, sft)

