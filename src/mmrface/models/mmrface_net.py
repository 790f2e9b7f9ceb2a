"""MMRFaceNet: asymmetric MMRB codec + StyleGAN2 prior, fused by CS-SFT with a fidelity knob.

    lq ─► MMRBEncoder ─► W+ codes ───────────────────────────────► StyleGAN2 prior ─► restored face
                     └─► skips ─► LightDecoder ─► (scale, shift) per level ─┘ (CS-SFT, weight w)

The fidelity weight `w` enters the prior as f = f·(1 + w·(scale − 1)) + w·shift on half the
channels of the first styled conv of each level: w = 0 generates freely from the encoder's latent
codes (the decoder has no influence at all), w = 1 is full fidelity to the input.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mmrface.models.codec import LightDecoder, MMRBEncoder
from mmrface.models.stylegan2 import StyleGAN2Generator, channel_table, per_sample

class CodecPriorNet(nn.Module):
    """Shared forward of encoder -> (W+ codes, skips) -> decoder -> CS-SFT conditions -> prior.

    Subclasses set `size`, `encoder` (lq -> codes, skips, feat), `decoder` (feat, skips,
    return_rgbs -> conditions, rgbs) and `prior` (a StyleGAN2Generator). MMRFaceNet and the
    GFPGANv1Clean baseline both run through it, so they restore through the same code path.
    """

    size: int
    input_skip: bool = False  # add w x the input to the prior's image (MMRFaceNet's option)

    def forward(self, lq: torch.Tensor, w: float | torch.Tensor = 1.0, return_rgbs: bool = False,
                noise_mode: str | None = None, noise: list[torch.Tensor] | None = None):
        """lq (B, 3, S, S) in [-1, 1] -> restored (B, 3, S, S) in [-1, 1] (approximately; not clamped).

        `w` is the fidelity weight (float or a (B,) tensor). With `return_rgbs` also returns the
        decoder's intermediate RGB images (8 px … S), used by the pyramid loss.
        """
        if lq.dim() != 4 or lq.shape[1] != 3 or lq.shape[-2:] != (self.size, self.size):
            raise ValueError(f"expected input (B, 3, {self.size}, {self.size}), got {tuple(lq.shape)}")
        codes, skips, feat = self.encoder(lq)  # codes (B, num_latent, style_dim)
        conditions, rgbs = self.decoder(feat, skips, return_rgbs)
        image, _ = self.prior(codes, input_is_latent=True, conditions=conditions, fidelity=w,
                              noise=noise, noise_mode=noise_mode)
        if self.input_skip:  # the prior draws what the input lacks, scaled with w
            image = image + per_sample(w, image) * lq
        return (image, rgbs) if return_rgbs else image

    def parts(self) -> dict[str, nn.Module]:
        """Named parts for parameter/FLOP reports."""
        return {"encoder": self.encoder, "decoder": self.decoder, "prior": self.prior}


class MMRFaceNet(CodecPriorNet):
    """The restorer network. All options are constructor arguments mirrored in the YAML config.

    Args:
        size: face resolution S (power of two, 32 … 1024); inputs are (B, 3, S, S) in [-1, 1].
        style_dim: latent width of the prior.
        sft_half: modulate half of the prior's channels (CS-SFT) instead of all of them.
        codec: options of the asymmetric codec — `block` ("mmrb" | "resblock"), `channel_multiplier`,
            `narrow`, `max_channels`, `min_channels`, `enc_blocks` (int or one entry per level from S down to 4),
            `block_options` (MMRB options), `head_channels` (SFT head width; default = level width).
        prior: StyleGAN2Generator options (`n_mlp`, `channel_multiplier`, `narrow`, `max_channels`, `min_channels`,
            `upsample`, `equalized_lr`, `gain_mode`, `noise_mode`, `lr_mlp`) plus `trainable`
            (False freezes a pretrained prior). Which prior to load and its learning rate are
            training settings (`train.prior_init`, `train.prior_lr_mul`), not network options.
        input_skip: add w x the input to the prior's image (a global residual): at w = 1 the prior
            only has to draw what the degraded input lacks; w = 0 still generates freely.
    """

    def __init__(self, size: int = 512, style_dim: int = 512, sft_half: bool = True,
                 codec: dict | None = None, prior: dict | None = None, input_skip: bool = False):
        super().__init__()
        if size < 32 or size > 1024 or 2 ** int(math.log2(size)) != size:
            raise ValueError(f"size must be a power of two in 32…1024, got {size}")
        codec = dict(codec or {})
        prior = dict(prior or {})
        self.size, self.style_dim, self.sft_half = size, style_dim, sft_half
        self.input_skip = bool(input_skip)
        self.prior_trainable = bool(prior.pop("trainable", True))
        for legacy in ("init", "lr_mul"):  # training keys that weight files before 0.2 embed; see train.prior_*
            prior.pop(legacy, None)

        self.prior = StyleGAN2Generator(size, style_dim=style_dim, sft_half=sft_half, **prior)
        num_latent = self.prior.num_latent
        enc_ch = channel_table(
            size,
            codec.pop("channel_multiplier", 1),
            codec.pop("narrow", 0.5),
            codec.pop("max_channels", 256),
            codec.pop("min_channels", 0),
        )
        sft_ch = {r: c // 2 if sft_half else c for r, c in self.prior.channels.items()}
        head_channels = codec.pop("head_channels", None)
        self.encoder = MMRBEncoder(size, enc_ch, num_latent, style_dim, **codec)
        self.decoder = LightDecoder(size, enc_ch, sft_ch, head_channels)
        self.set_prior_trainable(self.prior_trainable)

    def set_prior_trainable(self, trainable: bool) -> None:
        """Freeze (False, GFPGAN style) or fine-tune (True, GPEN style) the StyleGAN2 prior.

        The prior's mapping MLP is always frozen: the encoder writes W+ codes directly
        (`input_is_latent`), so the MLP never sees a gradient; it is kept for sampling and for
        loading third-party priors.
        """
        self.prior_trainable = trainable
        for name, p in self.prior.named_parameters():
            p.requires_grad_(trainable and not name.startswith("mapping."))

