"""StyleGAN2 discriminator (the adversarial loss's critic), in plain torch: residual blocks of
FIR-blurred strided convs with equalised learning rates, a minibatch-stddev feature, two linear
layers. Widths follow the generator's channel table (`stylegan2.channel_table`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mmrface.models.ops import SQRT2, EqualConv2d, EqualLinear, leaky_relu_gain, make_fir_kernel, upfirdn2d
from mmrface.models.stylegan2 import channel_table


class ConvLayer(nn.Module):
    """Discriminator conv: optional FIR blur + stride-2 (down-sampling), equalised conv, bias + lrelu*sqrt2."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, downsample: bool = False,
                 bias: bool = True, activate: bool = True):
        super().__init__()
        self.downsample, self.activate = downsample, activate
        if downsample:
            p = 2 + (kernel_size - 1)  # len(fir) - factor + (k - 1)
            self.blur_pad = ((p + 1) // 2, p // 2)
            self.register_buffer("blur_kernel", make_fir_kernel(), persistent=False)
        self.conv = EqualConv2d(in_channels, out_channels, kernel_size, stride=2 if downsample else 1,
                                padding=0 if downsample else kernel_size // 2, bias=bias and not activate)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if activate and bias else None

    def forward(self, x: Tensor) -> Tensor:
        if self.downsample:
            x = upfirdn2d(x, self.blur_kernel, pad=self.blur_pad)
        x = self.conv(x)
        if self.activate:
            if self.bias is not None:
                x = x + self.bias.reshape(1, -1, 1, 1)
            x = leaky_relu_gain(x, SQRT2)
        return x


class DiscriminatorBlock(nn.Module):
    """Residual down block: 3x3 conv, blurred stride-2 3x3 conv; 1x1 blurred skip; sum / sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = ConvLayer(in_channels, in_channels, 3)
        self.conv2 = ConvLayer(in_channels, out_channels, 3, downsample=True)
        self.skip = ConvLayer(in_channels, out_channels, 1, downsample=True, bias=False, activate=False)

    def forward(self, x: Tensor) -> Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / SQRT2


class StyleGAN2Discriminator(nn.Module):
    """StyleGAN2 residual discriminator with minibatch standard deviation; returns (B, 1) logits."""

    def __init__(self, size: int, channel_multiplier: float = 2, narrow: float = 1.0, max_channels: int = 512,
                 stddev_group: int = 4):
        super().__init__()
        ch = channel_table(size, channel_multiplier, narrow, max_channels)
        self.channels, self.stddev_group = ch, stddev_group
        self.from_rgb = ConvLayer(3, ch[size], 1)
        blocks, in_ch = [], ch[size]
        for res in [2 ** i for i in range(int(math.log2(size)), 2, -1)]:
            blocks.append(DiscriminatorBlock(in_ch, ch[res // 2]))
            in_ch = ch[res // 2]
        self.blocks = nn.Sequential(*blocks)
        self.final_conv = ConvLayer(in_ch + 1, ch[4], 3)
        self.final_linear = nn.Sequential(EqualLinear(ch[4] * 16, ch[4], activate=True), EqualLinear(ch[4], 1))

    def forward(self, img: Tensor) -> Tensor:  # (B, 3, size, size) -> (B, 1)
        out = self.blocks(self.from_rgb(img))  # (B, C, 4, 4)
        b, c, h, w = out.shape
        group = max(g for g in range(1, min(b, self.stddev_group) + 1) if b % g == 0)
        y = out.reshape(group, -1, 1, c, h, w)
        y = torch.sqrt(y.var(0, unbiased=False) + 1e-8)  # (B/g, 1, C, H, W)
        y = y.mean([2, 3, 4], keepdim=True).squeeze(2)  # (B/g, 1, 1, 1)
        y = y.repeat(group, 1, h, w)
        out = self.final_conv(torch.cat([out, y], 1))
        return self.final_linear(out.reshape(b, -1))
