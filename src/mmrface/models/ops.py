"""Plain-torch building blocks shared by the StyleGAN2 generator and discriminator.

No custom CUDA, no Python loops over pixels: everything is reshape / pad / conv2d, so it runs on
any device and exports to ONNX.

* `upfirdn2d`: upsample by zero insertion, pad, FIR filter, downsample (the StyleGAN2 resampler).
* `EqualLinear`, `EqualConv2d`: layers with the equalised learning rate of StyleGAN2. With
  `equalized=True` the stored weight is raw and multiplied at run time by `lr_mul / sqrt(fan_in)`
  (rosinality / BasicSR convention); with `equalized=False` the stored weight is the effective one
  (GFPGAN-clean convention) and nothing is multiplied.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SQRT2 = math.sqrt(2.0)


def make_fir_kernel(taps: tuple[float, ...] = (1, 3, 3, 1)) -> Tensor:
    """Separable 2-D FIR kernel from 1-D taps, normalised to sum 1: shape (len, len)."""
    k = torch.tensor(taps, dtype=torch.float32)
    k = torch.outer(k, k)
    return k / k.sum()


def upfirdn2d(x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)) -> Tensor:
    """Upsample by zero insertion, pad, convolve with `kernel` (true convolution), downsample.

    x: (B, C, H, W); kernel: (kh, kw); pad = (before, after), the same on both axes.
    Output side: (H * up + before + after - kh + 1) // down (rounded up).
    """
    b, c, h, w = x.shape
    if up > 1:  # zero insertion: every pixel followed by up-1 zeros on each axis
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(b, c, h * up, w * up)
    p0, p1 = pad
    if p0 or p1:
        x = F.pad(x, (p0, p1, p0, p1))
    kh, kw = kernel.shape
    weight = torch.flip(kernel, [0, 1]).to(x.dtype).reshape(1, 1, kh, kw)
    hp, wp = x.shape[-2], x.shape[-1]
    x = F.conv2d(x.reshape(b * c, 1, hp, wp), weight)  # the same FIR on every channel
    x = x.reshape(b, c, hp - kh + 1, wp - kw + 1)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def leaky_relu_gain(x: Tensor, gain: float) -> Tensor:
    """LeakyReLU(0.2) followed by a constant gain (sqrt(2) in StyleGAN2's FusedLeakyReLU)."""
    x = F.leaky_relu(x, 0.2)
    return x * gain if gain != 1.0 else x


class EqualLinear(nn.Module):
    """Linear layer with optional equalised learning rate and optional LeakyReLU.

    y = act(x @ (W * w_mul)^T + b * b_mul); act = LeakyReLU(0.2) * act_gain when `activate`.
    `equalized=True`: W is raw, w_mul = lr_mul / sqrt(in), b_mul = lr_mul.
    `equalized=False`: W and b are stored effective, w_mul = b_mul = 1.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activate: bool = False, act_gain: float = SQRT2, equalized: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.w_mul = lr_mul / math.sqrt(in_features) if equalized else 1.0
        self.b_mul = lr_mul if equalized else 1.0
        init_std = 1.0 / lr_mul if equalized else act_gain / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.randn(out_features, in_features) * init_std)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init))) if bias else None
        self.activate, self.act_gain = activate, act_gain

    def forward(self, x: Tensor) -> Tensor:  # (..., in) -> (..., out)
        w = self.weight * self.w_mul if self.w_mul != 1.0 else self.weight
        b = None if self.bias is None else (self.bias * self.b_mul if self.b_mul != 1.0 else self.bias)
        if self.activate:
            out = F.linear(x, w)
            if b is not None:
                out = out + b
            return leaky_relu_gain(out, self.act_gain)
        return F.linear(x, w, b)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, w_mul={self.w_mul:.4g}, activate={self.activate}"


class EqualConv2d(nn.Module):
    """Conv2d with equalised learning rate: raw N(0,1) weight times 1/sqrt(in*k*k) at run time."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.stride, self.padding = stride, padding
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)
