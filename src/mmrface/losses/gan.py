"""Adversarial losses: non-saturating logistic (softplus) GAN and the lazy R1 penalty (StyleGAN2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def g_nonsaturating(fake_logits: Tensor) -> Tensor:
    """Generator loss softplus(-D(G(x))), averaged over all logits (image or patch logits)."""
    return F.softplus(-fake_logits).mean()


def d_logistic(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator loss softplus(-D(real)) + softplus(D(fake))."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def r1_penalty(real_logits: Tensor, real_images: Tensor) -> Tensor:
    """R1: E[|∇_x D(x)|²] on real images (which must require grad); differentiable (create_graph)."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(1).mean()


def lazy_r1_adam(lr: float, betas: tuple[float, float], every: int) -> tuple[float, tuple[float, float]]:
    """StyleGAN2's Adam correction for a regulariser applied every `every` steps: c = k / (k + 1)."""
    if every <= 0:
        return lr, betas
    c = every / (every + 1)
    return lr * c, (betas[0] ** c, betas[1] ** c)
