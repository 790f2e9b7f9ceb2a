"""The self-supervised training strategy (docs/design.md), as small functions the trainer combines.

1. HQ self-reconstruction: per sample, with probability p(t) the clean HQ face replaces the LQ input
   (and stays the target); p decays linearly from `p_identity` to `p_identity_final` over
   `p_identity_decay_steps` steps (0 steps: constant `p_identity`).
2. Re-degradation consistency: the restored face degraded again with the sample's recorded
   parameters (differentiable replay, `mmrface.data.degrade_torch`) must reproduce the observed LQ.
3. Unpaired low-pass consistency: for real LQ faces without HQ, the restored face and the input
   must agree at 1/`lowpass_scale` resolution (box average); the trainer adds the adversarial term.
4. Mean-teacher pseudo pairs: the EMA model restores a real LQ face, its output is degraded with a
   freshly drawn degradation, and the student learns to map that back to the teacher's output.
Images are NCHW RGB in [-1, 1].
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mmrface.data.degrade import Degradation


def p_identity_at(p_start: float, p_final: float, decay_steps: int, step: int) -> float:
    """Probability of HQ self-reconstruction at `step`: linear from p_start to p_final."""
    if decay_steps <= 0:
        return float(p_start)
    t = min(max(step, 0) / decay_steps, 1.0)
    return float(p_start + (p_final - p_start) * t)


def identity_mask(batch: int, p: float, device: torch.device | str = "cpu",
                  generator: torch.Generator | None = None) -> Tensor:
    """(B,) bool: True where the sample becomes an HQ self-reconstruction (drawn from torch's RNG)."""
    u = torch.rand(batch, generator=generator)
    return (u < p).to(device)


def swap_in_hq(lq: Tensor, hq: Tensor, mask: Tensor) -> Tensor:
    """The network input: HQ where `mask` (B,) is True, LQ elsewhere."""
    return torch.where(mask.reshape(-1, 1, 1, 1), hq, lq)


def redegrade_loss(out: Tensor, lq: Tensor, params: Sequence[str | dict | None],
                   keep: Tensor | None = None) -> Tensor:
    """L1(replay(out_i, params_i), lq_i) over the samples with a record and `keep` True.

    Returns a zero that still depends on `out` when no sample qualifies, so the graph is unchanged.
    """
    idx = [i for i, p in enumerate(params)
           if p not in (None, "null") and (keep is None or bool(keep[i]))]
    if not idx:
        return out.sum() * 0.0
    from mmrface.data.degrade_torch import degrade_torch

    recs = [params[i] for i in idx]
    sel = torch.tensor(idx, device=out.device)
    replay = degrade_torch(out.float().index_select(0, sel), recs)
    return F.l1_loss(replay, lq.float().index_select(0, sel))


def lowpass(x: Tensor, scale: int) -> Tensor:
    """Box average over `scale`×`scale` cells: (B, C, S, S) -> (B, C, S/scale, S/scale)."""
    if scale <= 1:
        return x
    if x.shape[-1] % scale or x.shape[-2] % scale:
        raise ValueError(f"lowpass_scale {scale} does not divide the image size {tuple(x.shape[-2:])}")
    return F.avg_pool2d(x, scale)


def lowpass_loss(out: Tensor, lq: Tensor, scale: int) -> Tensor:
    """L1 between restored and observed LQ faces at 1/scale resolution (unpaired consistency)."""
    return F.l1_loss(lowpass(out, scale), lowpass(lq.to(out.dtype), scale))


def pseudo_pairs(teacher_out: Tensor, degradation: Degradation, rng: np.random.Generator
                 ) -> tuple[Tensor, list[str]]:
    """Degrade the teacher's restorations with fresh draws: (B, 3, S, S) -> (pseudo LQ, records).

    The pseudo LQ is rounded to 8 bit like the training LQ; records are JSON strings.
    """
    imgs = ((teacher_out.detach().float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
    outs, recs = [], []
    for img in imgs:  # HxWx3 float32 in [0, 1]
        lq, rec = degradation(np.ascontiguousarray(img), rng)
        outs.append(np.round(lq * 255.0) / 255.0)
        recs.append(json.dumps(rec))
    x = torch.from_numpy(np.stack(outs).astype(np.float32)).permute(0, 3, 1, 2) * 2 - 1
    return x.to(teacher_out.device, teacher_out.dtype), recs
