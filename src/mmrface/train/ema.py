"""Exponential moving average of the generator's weights (the weights that get shipped)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """A frozen copy of `model` updated as p_ema <- p_ema + (1 - d) (p - p_ema) after each step.

    With `rampup` the decay is min(decay, (1 + t) / (10 + t)) at update t, so the average follows
    the weights closely early on and a short run still has a useful EMA. Parameters that do not
    train (a frozen prior, the mapping MLP) are not touched; buffers are copied.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, rampup: bool = True):
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.decay, self.rampup = float(decay), bool(rampup)

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1 + step) / (10 + step)) if self.rampup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = self.decay_at(step)
        for p_ema, p in zip(self.model.parameters(), model.parameters()):
            if p.requires_grad:
                p_ema.lerp_(p.detach(), 1.0 - d)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)
