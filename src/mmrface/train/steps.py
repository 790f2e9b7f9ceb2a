"""One generator step and one discriminator step of a `Run`, as functions over values.

    g = generator_step(run, judge, step, batch, unpaired_batch)    # -> GStep(values, fakes)
    d = discriminator_step(run, judge, step, g.fakes)               # -> values

`judge` is the run's divergence guard (`Judge`): every loss value passes it before its update
is applied; a blow-up step is skipped (`GStep.fakes` is None, so its D step is skipped too) and
`patience` of them in a row raise `Diverged`, which the trainer turns into the user's message.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mmrface.losses.gan import r1_penalty
from mmrface.losses.selfsup import identity_mask, pseudo_pairs, swap_in_hq
from mmrface.train import distributed as dist_utils
from mmrface.train.guard import DivergenceGuard
from mmrface.train.objectives import GenBatch, GenOutputs, Objectives
from mmrface.train.run import Run
from mmrface.train.schedule import from_step


class Diverged(Exception):
    """A loss blew up (NaN/inf, or far above its running median `patience` steps in a row)."""

    def __init__(self, reason: str, step: int):
        super().__init__(reason)
        self.reason, self.step = reason, step


@dataclass
class Fakes:
    """What the D step needs from the G step: real HQ faces and the (detached) restorations."""

    hq: Tensor
    out: Tensor  # restorations of the paired LQ
    u_out: Tensor | None  # restorations of the unpaired real LQ faces
    boxes: Tensor | None  # eye / mouth boxes for the component discriminators


@dataclass
class GStep:
    values: dict[str, float]
    fakes: Fakes | None  # None when the step was skipped


class Judge:
    """Rank-averaged loss values and the guard's verdict on them."""

    def __init__(self, guard: DivergenceGuard, ctx: dist_utils.DistContext, log=None):
        self.guard, self.ctx, self.log = guard, ctx, log

    def values(self, terms: dict[str, Tensor]) -> dict[str, float]:
        names = list(terms)
        vals = torch.stack([terms[k].detach().float() for k in names])
        return dict(zip(names, dist_utils.all_reduce_mean(vals, self.ctx).cpu().tolist()))

    def accept(self, terms: dict[str, Tensor], step: int, guard: DivergenceGuard | None = None
               ) -> tuple[dict[str, float], bool]:
        """(values, apply this step?); raises Diverged when the run must stop."""
        vals = self.values(terms)
        verdict = (guard or self.guard).check(vals)
        if verdict.stop:
            raise Diverged(verdict.reason, step)
        if not verdict.ok and self.log is not None:
            self.log.info(f"step {step + 1} skipped: {verdict.reason}")
        return vals, verdict.ok


def fidelity_draw(run: Run, n: int, step: int = 0) -> float | Tensor:
    """w per sample: 1 with probability train.fidelity_full (at `step`, see fidelity_full_from), else
    uniform in train.fidelity_range (drawn from torch's per-step RNG)."""
    tc = run.cfg.train
    lo, hi = (float(v) for v in tc.fidelity_range)
    full = from_step(tc.fidelity_full_from, step, float(tc.fidelity_full))
    if lo == hi and (full == 0 or lo == 1):
        return lo
    w = torch.rand(n) * (hi - lo) + lo
    if full > 0:
        w = torch.where(torch.rand(n) < full, torch.ones_like(w), w)
    return w.to(run.device)


def generator_inputs(run: Run, step: int, batch: dict, ubatch: dict | None) -> tuple[GenBatch, Tensor, Tensor | None]:
    """The step's batch on the device, the network input (paired, unpaired, pseudo LQ stacked)
    and the mean-teacher targets."""
    dev, obj = run.device, run.obj
    hq, lq = run.memory_format(batch["hq"].to(dev)), run.memory_format(batch["lq"].to(dev))
    swap = identity_mask(hq.shape[0], obj.p_identity(step), dev)
    u_lq = run.memory_format(ubatch["lq"].to(dev)) if ubatch is not None else None
    gb = GenBatch(hq, lq, list(batch["params"]), ~swap, batch["boxes"].to(dev) if "boxes" in batch else None,
                  u_lq if obj.use_unpaired else None)
    inputs = [swap_in_hq(lq, hq, swap)] + ([u_lq] if obj.use_unpaired else [])
    m_target = None
    if obj.use_mean_teacher:
        src = u_lq if u_lq is not None else lq
        with torch.no_grad(), run.autocast():
            m_target = run.ema.model(src, w=1.0, noise_mode="const").float()
        rng = np.random.default_rng([run.cfg.train.seed, step, run.ctx.rank, 1])
        m_lq, _ = pseudo_pairs(m_target, run.degradation, rng)
        inputs.append(m_lq)
    return gb, run.memory_format(torch.cat(inputs)), m_target


def generator_step(run: Run, judge: Judge, step: int, batch: dict, ubatch: dict | None) -> GStep:
    """Forward, loss terms, guard, backward, gradient all-reduce and clip, Adam, EMA."""
    obj = run.obj
    gb, x, m_target = generator_inputs(run, step, batch, ubatch)
    b = gb.hq.shape[0]
    w = fidelity_draw(run, x.shape[0], step)
    with run.autocast():
        if obj.pyramid_on(step):
            out_all, rgbs = run.G(x, w=w, return_rgbs=True)
            rgbs = [r[:b] for r in rgbs]
        else:
            out_all, rgbs = run.G(x, w=w), []
        nu = gb.u_lq.shape[0] if gb.u_lq is not None else 0
        outs = GenOutputs(out_all[:b], rgbs, out_all[b:b + nu] if nu else None,
                          out_all[b + nu:] if m_target is not None else None, m_target,
                          w[:b] if isinstance(w, torch.Tensor) else w)
        terms = obj.generator_terms(step, outs, gb, run.D, run.comp)
        total = obj.total(terms, step)
    vals, ok = judge.accept({**terms, "total": total}, step)
    if not ok:
        return GStep(vals, None)
    run.opt_g.zero_grad(set_to_none=True)
    run.scaler_g.scale(total).backward()
    dist_utils.average_gradients(run.G.parameters(), run.ctx)
    run.scaler_g.unscale_(run.opt_g)
    params = [p for p in run.G.parameters() if p.grad is not None]
    vals["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, run.cfg.train.grad_clip or float("inf")))
    run.scaler_g.step(run.opt_g)
    run.scaler_g.update()
    run.ema.update(run.G, step)
    u_out = None if outs.u_out is None else outs.u_out.detach()
    return GStep(vals, Fakes(gb.hq, outs.out.detach(), u_out, gb.boxes))


def discriminator_step(run: Run, judge: Judge, step: int, fakes: Fakes | None) -> dict[str, float]:
    """Logistic D loss on real HQ vs all restorations, component Ds, and lazy R1 every `r1_every`."""
    nets = [n for n in (run.D, run.comp) if n is not None]
    if not nets or fakes is None:
        return {}
    params = [p for n in nets for p in n.parameters()]
    for n in nets:
        n.requires_grad_(True)
    try:
        fake = fakes.out if fakes.u_out is None else torch.cat([fakes.out, fakes.u_out])
        with run.autocast():
            terms = Objectives.discriminator_terms(run.D, run.comp, fakes.hq, fake, fakes.boxes, fakes.out)
            total = sum(terms.values())
        vals, ok = judge.accept(terms, step)
        if not ok:
            return vals
        opts = [o for o in (run.opt_d, run.opt_c) if o is not None]
        for o in opts:
            o.zero_grad(set_to_none=True)
        run.scaler_d.scale(total).backward()
        dist_utils.average_gradients(params, run.ctx)
        for o in opts:
            run.scaler_d.step(o)
        run.scaler_d.update()
        lc = run.cfg.loss
        if run.D is not None and lc.r1 > 0 and step % lc.r1_every == 0:
            real = fakes.hq.detach().float().requires_grad_(True)
            logits = run.D(real)
            penalty = r1_penalty(logits, real)
            # R1 runs every r1_every steps only: no running median, NaN/inf checks only
            vals.update(judge.accept({"r1": penalty}, step, DivergenceGuard(factor=0))[0])
            run.opt_d.zero_grad(set_to_none=True)
            (lc.r1 / 2 * penalty * lc.r1_every + 0.0 * logits.sum()).backward()
            dist_utils.average_gradients(run.D.parameters(), run.ctx)
            run.opt_d.step()
        return vals
    finally:
        for n in nets:
            n.requires_grad_(False)
