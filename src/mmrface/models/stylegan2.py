"""StyleGAN2 generator (the facial prior) and discriminator, in plain torch.

One generator covers both published conventions through constructor options, so third-party
priors load by converting keys and values, never by forking the network:

* rosinality / BasicSR (`upsample="blur"`, `equalized_lr=True`, `gain_mode="post"`): up-sampling
  by a stride-2 transposed conv followed by the [1,3,3,1] FIR, FIR-upsampled RGB skip, raw weights
  scaled at run time, activation `leaky_relu(x + b) * sqrt(2)`.
* GFPGAN-clean (`upsample="bilinear"`, `equalized_lr=False`, `gain_mode="pre"`): bilinear x2 then a
  3x3 conv, weights stored effective, `leaky_relu(conv * sqrt(2) + noise + b)`.

Modulated convs are grouped convs (the batch folded into groups) so the network exports to ONNX;
`set_fused_modconv(model, False)` switches them to the equivalent non-fused form (modulate the
input, one shared conv weight, demodulate the output), whose exported graph has a dynamic batch.
Index bookkeeping (the key layouts in tests/layouts/ follow it): `convs[2r]` (up-sampling) and `convs[2r+1]` run at
2^(r+3) px and `to_rgbs[r]` follows them; noise i feeds conv1 (i=0), convs[2r] (i=2r+1) and
convs[2r+1] (i=2r+2), its side is 2^((i+5)//2); latent j feeds conv1 (0), to_rgb1 (1), then
convs[2r] (2r+1), convs[2r+1] (2r+2), to_rgbs[r] (2r+3).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmrface.models.ops import SQRT2, EqualLinear, leaky_relu_gain, make_fir_kernel, upfirdn2d

BASE_CHANNELS = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
UPSAMPLE_MODES = ("bilinear", "blur")
GAIN_MODES = ("post", "pre")
NOISE_MODES = ("random", "const", "zero")


def channel_table(size: int, channel_multiplier: float = 2, narrow: float = 1.0,
                  max_channels: int = 512, min_channels: int = 0) -> dict[int, int]:
    """StyleGAN2 channels per resolution 4..size: base * cm (from 64 px up) * narrow, capped at
    `max_channels` and floored at `min_channels` (a narrow net keeps its largest levels usable)."""
    if size < 4 or size & (size - 1) or size > 1024:
        raise ValueError(f"size must be a power of two in 4..1024, got {size}")
    table = {}
    for res, base in BASE_CHANNELS.items():
        if res > size:
            break
        ch = base * (channel_multiplier if res >= 64 else 1)
        table[res] = max(int(min(ch * narrow, max_channels)), int(min_channels))
    return table


def pixel_norm(x: Tensor) -> Tensor:
    """Normalise each latent vector to unit mean square: x / sqrt(mean(x^2) + 1e-8)."""
    return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + 1e-8)


class MappingNetwork(nn.Module):
    """Mapping MLP z -> w: pixel norm, then `n_mlp` linear + LeakyReLU layers (lr multiplier)."""

    def __init__(self, style_dim: int = 512, n_mlp: int = 8, lr_mlp: float = 0.01,
                 equalized_lr: bool = True, gain_mode: str = "post"):
        super().__init__()
        gain = SQRT2 if gain_mode == "post" else 1.0
        self.layers = nn.ModuleList(
            EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activate=True, act_gain=gain, equalized=equalized_lr)
            for _ in range(n_mlp))

    def forward(self, z: Tensor) -> Tensor:  # (B, D) -> (B, D)
        x = pixel_norm(z)
        for layer in self.layers:
            x = layer(x)
        return x


class ConstantInput(nn.Module):
    """The learned 4x4 constant the synthesis network starts from: (1, C, 4, 4), repeated per batch."""

    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> Tensor:
        return self.weight.repeat(batch, 1, 1, 1)


class ModulatedConv2d(nn.Module):
    """Style-modulated conv, optionally demodulated and 2x up-sampling.

    weight (out, in, k, k) is scaled per sample by the style s = A(w) (B, in) and demodulated to
    unit norm per output channel. `fused=True` (default): one grouped conv, the batch folded into the
    groups (per-sample weights). `fused=False`: the same function as x * s, a conv with the one
    shared weight, then * rsqrt(s^2 @ sum_k(w^2)^T + 1e-8) per (sample, output channel); its weight
    is a constant, so exported graphs keep the batch dynamic and runtimes can pre-pack it.
    upsample: None | "bilinear" (interpolate then conv) | "blur" (transposed conv + FIR blur).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: str | None = None, equalized_lr: bool = True,
                 fused: bool = True):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.demodulate, self.upsample, self.fused = demodulate, upsample, fused
        fan_in = in_channels * kernel_size * kernel_size
        self.w_mul = 1.0 / math.sqrt(fan_in) if equalized_lr else 1.0
        init_std = 1.0 if equalized_lr else 1.0 / math.sqrt(fan_in)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size) * init_std)
        self.modulation = EqualLinear(style_dim, in_channels, bias_init=1.0, equalized=equalized_lr, act_gain=1.0)
        if upsample == "blur":  # FIR after the transposed conv; a constant, not stored
            self.register_buffer("blur_kernel", make_fir_kernel() * 4, persistent=False)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:  # (B, in, H, W), (B, D) -> (B, out, H', W')
        if not self.fused:
            return self._forward_unfused(x, style)
        b, _, h, w = x.shape
        c, k, o = self.in_channels, self.kernel_size, self.out_channels  # python ints: static for ONNX
        s = self.modulation(style)[:, None, :, None, None]  # (B, 1, in, 1, 1); no reshape: ONNX-friendly
        weight = self.weight.unsqueeze(0) * s  # (B, out, in, k, k)
        if self.w_mul != 1.0:
            weight = weight * self.w_mul
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)  # (B, out)
            weight = weight * demod[:, :, None, None, None]
        if self.upsample == "blur":
            weight = weight.transpose(1, 2).reshape(-1, o, k, k)  # (B*in, out, k, k) transposed-conv layout
            out = F.conv_transpose2d(x.reshape(1, b * c, h, w), weight, stride=2, padding=0, groups=b)
            out = out.reshape(b, o, out.shape[-2], out.shape[-1])  # (B, out, 2H+1, 2W+1)
            return upfirdn2d(out, self.blur_kernel, pad=(1, 1))  # (B, out, 2H, 2W)
        if self.upsample == "bilinear":
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            h, w = 2 * h, 2 * w
        out = F.conv2d(x.reshape(1, b * c, h, w), weight.reshape(-1, c, k, k), padding=k // 2, groups=b)
        return out.reshape(b, o, h, w)

    def _forward_unfused(self, x: Tensor, style: Tensor) -> Tensor:
        """x * s -> conv with the shared weight -> * demod: no per-sample weights, any batch size."""
        s = self.modulation(style)  # (B, in)
        weight = self.weight * self.w_mul if self.w_mul != 1.0 else self.weight  # (out, in, k, k)
        x = x * s[:, :, None, None]  # modulate before any up-sampling: fewer pixels, same result
        if self.upsample == "blur":
            out = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2, padding=0)  # (B, out, 2H+1, 2W+1)
        else:
            if self.upsample == "bilinear":
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            out = F.conv2d(x, weight, padding=self.kernel_size // 2)  # (B, out, H', W')
        if self.demodulate:  # sum_{i,k} (w_oik s_i)^2 = (s^2) @ (sum_k w_oik^2)^T
            demod = torch.rsqrt(torch.matmul(s * s, weight.pow(2).sum([2, 3]).t()) + 1e-8)  # (B, out)
            out = out * demod[:, :, None, None]
        if self.upsample == "blur":
            return upfirdn2d(out, self.blur_kernel, pad=(1, 1))  # (B, out, 2H, 2W)
        return out


def set_fused_modconv(model: nn.Module, fused: bool) -> int:
    """Switch every ModulatedConv2d in `model` to the fused (grouped) or non-fused form; returns the count."""
    convs = [m for m in model.modules() if isinstance(m, ModulatedConv2d)]
    for m in convs:
        m.fused = bool(fused)
    return len(convs)


class StyledConv(nn.Module):
    """Modulated 3x3 conv + noise injection + bias + LeakyReLU (gain_mode decides where sqrt(2) goes)."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, upsample: str | None = None,
                 equalized_lr: bool = True, gain_mode: str = "post"):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, style_dim, True, upsample, equalized_lr)
        self.noise_strength = nn.Parameter(torch.zeros(1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.gain_mode = gain_mode

    def forward(self, x: Tensor, style: Tensor, noise: Tensor | None = None) -> Tensor:
        out = self.conv(x, style)
        bias = self.bias.reshape(1, -1, 1, 1)
        if self.gain_mode == "pre":  # GFPGAN-clean: conv * sqrt2 + noise + bias, plain LeakyReLU
            out = out * SQRT2
            if noise is not None:
                out = out + self.noise_strength * noise
            return F.leaky_relu(out + bias, 0.2)
        if noise is not None:  # rosinality: conv + noise, then FusedLeakyReLU (bias, sqrt2 gain)
            out = out + self.noise_strength * noise
        return leaky_relu_gain(out + bias, SQRT2)


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) to RGB + bias, added to the up-sampled previous RGB."""

    def __init__(self, in_channels: int, style_dim: int, upsample: str | None = None, equalized_lr: bool = True):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, 3, 1, style_dim, demodulate=False, equalized_lr=equalized_lr)
        self.bias = nn.Parameter(torch.zeros(3))
        self.upsample = upsample
        if upsample == "blur":
            self.register_buffer("blur_kernel", make_fir_kernel() * 4, persistent=False)

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.conv(x, style) + self.bias.reshape(1, 3, 1, 1)
        if skip is not None:
            if self.upsample == "blur":
                skip = upfirdn2d(skip, self.blur_kernel, up=2, pad=(2, 1))
            else:
                skip = F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
            out = out + skip
        return out


def per_sample(fidelity: float | Tensor, like: Tensor) -> float | Tensor:
    """The fidelity weight w as a float, or a (B,) tensor as (B, 1, 1, 1) in `like`'s dtype."""
    return fidelity.reshape(-1, 1, 1, 1).to(like.dtype) if isinstance(fidelity, Tensor) else float(fidelity)


class StyleGAN2Generator(nn.Module):
    """StyleGAN2 synthesis network + mapping MLP, with CS-SFT conditions and a fidelity weight."""

    def __init__(self, size: int, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: float = 2,
                 narrow: float = 1.0, max_channels: int = 512, lr_mlp: float = 0.01, upsample: str = "bilinear",
                 equalized_lr: bool = True, gain_mode: str = "post", noise_mode: str = "random",
                 sft_half: bool = True, min_channels: int = 0):
        super().__init__()
        if upsample not in UPSAMPLE_MODES or gain_mode not in GAIN_MODES or noise_mode not in NOISE_MODES:
            raise ValueError(f"bad mode: upsample={upsample!r} gain_mode={gain_mode!r} noise_mode={noise_mode!r}")
        if size < 8:
            raise ValueError(f"size must be at least 8, got {size}")
        self.size, self.style_dim, self.noise_mode, self.sft_half = size, style_dim, noise_mode, sft_half
        self.upsample, self.equalized_lr, self.gain_mode = upsample, equalized_lr, gain_mode  # the convention
        self.channels = channel_table(size, channel_multiplier, narrow, max_channels, min_channels)
        self.log_size = int(math.log2(size))
        self.num_latent = 2 * self.log_size - 2
        self.num_levels = self.log_size - 2  # levels 8 .. size
        eq, gm = equalized_lr, gain_mode

        self.mapping = MappingNetwork(style_dim, n_mlp, lr_mlp, eq, gm)
        self.const = ConstantInput(self.channels[4])
        self.conv1 = StyledConv(self.channels[4], self.channels[4], style_dim, None, eq, gm)
        self.to_rgb1 = ToRGB(self.channels[4], style_dim, None, eq)
        self.convs, self.to_rgbs = nn.ModuleList(), nn.ModuleList()
        in_ch = self.channels[4]
        for r in range(self.num_levels):
            out_ch = self.channels[2 ** (r + 3)]
            self.convs.append(StyledConv(in_ch, out_ch, style_dim, upsample, eq, gm))
            self.convs.append(StyledConv(out_ch, out_ch, style_dim, None, eq, gm))
            self.to_rgbs.append(ToRGB(out_ch, style_dim, upsample, eq))
            in_ch = out_ch
        self.noises = nn.Module()
        for i in range(self.num_latent - 1):
            side = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise{i}", torch.randn(1, 1, side, side))
        self.register_buffer("latent_avg", torch.zeros(style_dim))

    # ---- latents and noise -------------------------------------------------------------------
    def get_latent(self, z: Tensor) -> Tensor:
        """Map z (B, D) to w (B, D)."""
        return self.mapping(z)

    @torch.no_grad()
    def mean_latent(self, n: int = 4096) -> Tensor:
        """Mean w of `n` random z: (D,), the truncation centre."""
        z = torch.randn(n, self.style_dim, device=self.latent_avg.device)
        return self.mapping(z).mean(0)

    def make_noise(self) -> list[Tensor]:
        """Fresh random noise maps, one per styled conv: (1, 1, r, r)."""
        dev = self.latent_avg.device
        return [torch.randn(1, 1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2), device=dev)
                for i in range(self.num_latent - 1)]

    def _noise_list(self, noise: list[Tensor] | None, mode: str, ref: Tensor) -> list[Tensor | None]:
        n = self.num_latent - 1
        if noise is not None and len(noise) != n:
            raise ValueError(f"expected {n} noise maps, got {len(noise)}")
        out: list[Tensor | None] = []
        for i in range(n):
            if noise is not None and noise[i] is not None:
                out.append(noise[i])
            elif mode == "const":
                out.append(getattr(self.noises, f"noise{i}"))
            elif mode == "random":
                side = 2 ** ((i + 5) // 2)
                out.append(torch.randn(ref.shape[0], 1, side, side, device=ref.device, dtype=ref.dtype))
            else:
                out.append(None)
        return out

    def _latents(self, styles: Tensor | list[Tensor], input_is_latent: bool, truncation: float,
                 truncation_latent: Tensor | None, inject_index: int | None) -> Tensor:
        """Build the W+ code (B, num_latent, D) from z / w / W+ inputs, with truncation and mixing."""
        if isinstance(styles, Tensor):
            styles = [styles]
        if not input_is_latent:
            styles = [self.mapping(s) for s in styles]
        if truncation < 1:
            centre = self.latent_avg if truncation_latent is None else truncation_latent
            styles = [centre + truncation * (s - centre) for s in styles]
        L = self.num_latent
        if len(styles) == 1:
            s = styles[0]
            return s if s.ndim == 3 else s.unsqueeze(1).repeat(1, L, 1)
        if inject_index is None:
            inject_index = int(torch.randint(1, L, ()).item())
        first = styles[0].unsqueeze(1).repeat(1, inject_index, 1)
        second = styles[1].unsqueeze(1).repeat(1, L - inject_index, 1)
        return torch.cat([first, second], 1)

    def _sft(self, f: Tensor, scale: Tensor, shift: Tensor, fidelity: float | Tensor) -> Tensor:
        """CS-SFT: f * (1 + w (scale - 1)) + w shift on the second half of the channels (or all)."""
        w = per_sample(fidelity, f)

        def modulate(g: Tensor) -> Tensor:
            if isinstance(w, float) and w == 1.0:  # exactly GFPGAN's out * scale + shift
                return g * scale + shift
            return g * (1 + w * (scale - 1)) + w * shift

        if not self.sft_half:
            return modulate(f)
        half = f.shape[1] // 2
        return torch.cat([f[:, :half], modulate(f[:, half:])], 1)

    # ---- synthesis ---------------------------------------------------------------------------
    def forward(self, styles: Tensor | list[Tensor], input_is_latent: bool = False,
                noise: list[Tensor] | None = None, noise_mode: str | None = None, truncation: float = 1.0,
                truncation_latent: Tensor | None = None, inject_index: int | None = None,
                conditions: list[tuple[Tensor, Tensor]] | None = None, fidelity: float | Tensor = 1.0,
                return_latents: bool = False) -> tuple[Tensor, Tensor | None]:
        """Generate (B, 3, size, size) images; also the W+ latent (B, num_latent, D) if asked."""
        mode = noise_mode or self.noise_mode
        if mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {mode!r}")
        latent = self._latents(styles, input_is_latent, truncation, truncation_latent, inject_index)
        noises = self._noise_list(noise, mode, latent)
        conditions = conditions or []

        out = self.const(latent.shape[0])  # (B, C4, 4, 4)
        out = self.conv1(out, latent[:, 0], noises[0])
        skip = self.to_rgb1(out, latent[:, 1])
        for r in range(self.num_levels):  # resolution 2^(r+3)
            i = 2 * r + 1
            out = self.convs[2 * r](out, latent[:, i], noises[i])  # up-sampling conv
            if r < len(conditions):
                out = self._sft(out, conditions[r][0], conditions[r][1], fidelity)
            out = self.convs[2 * r + 1](out, latent[:, i + 1], noises[i + 1])
            skip = self.to_rgbs[r](out, latent[:, i + 2], skip)
        return skip, (latent if return_latents else None)
