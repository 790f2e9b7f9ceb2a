"""The training loop: `Trainer(cfg).fit()`, or `train(cfg)`; `mmrface train` calls it.

One step t (0-based) on every rank:
  1. seed torch from (train.seed, t, rank); take batch t of this rank (`train.data.StepBatches`);
  2. generator step: HQ self-reconstruction swap, fidelity w per sample, one forward pass over the
     paired LQ (+ unpaired real LQ + mean-teacher pseudo LQ, concatenated), the active loss terms
     (`objectives.Objectives`), NaN/inf check, backward, gradient all-reduce, Adam, EMA update;
  3. discriminator step (when gan or component losses are on): logistic loss on HQ vs restored,
     lazy R1 every `loss.r1_every` steps;
  4. rank 0: log every `log_every`, checkpoint every `ckpt_every`, validate every `val_every`.
Every random draw derives from (seed, step, rank), so a resumed run repeats the draws of an
uninterrupted one exactly (bit-identical weights on the CPU).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from mmrface.config import Config
from mmrface.errors import UserError
from mmrface.losses.gan import lazy_r1_adam, r1_penalty
from mmrface.losses.selfsup import identity_mask, pseudo_pairs, swap_in_hq
from mmrface.train import distributed as dist_utils
from mmrface.train.checkpoint import latest_checkpoint, load_checkpoint, publish, save_checkpoint
from mmrface.train.data import StepBatches
from mmrface.train.ema import EMA
from mmrface.train.objectives import Objectives
from mmrface.train.runlog import RunLog, header_lines


class NonFiniteLossError(UserError):
    """A loss became NaN or infinite; training stopped before applying that step."""


def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of one step on one rank."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0] % (2**63))


def _plain(obj: Any) -> Any:
    """JSON round trip: tuples become lists (what YAML/JSON files hold)."""
    return json.loads(json.dumps(obj))


def _check_train_config(cfg: Config) -> None:
    tc, dc = cfg.train, cfg.data
    for name, value, low in (("train.steps", tc.steps, 1), ("data.batch_size", dc.batch_size, 1),
                             ("train.ckpt_every", tc.ckpt_every, 1), ("train.log_every", tc.log_every, 1),
                             ("train.val_every", tc.val_every, 0), ("data.num_workers", dc.num_workers, 0)):
        if not isinstance(value, int) or value < low:
            raise UserError(f"{name} must be an integer >= {low}, got {value!r}")
    lo, hi = tc.fidelity_range
    if not 0 <= lo <= hi <= 1:
        raise UserError(f"train.fidelity_range must be [low, high] within [0, 1], got {list(tc.fidelity_range)}")
    if cfg.loss.selfsup.lowpass_scale < 1:
        raise UserError(f"selfsup.lowpass_scale must be >= 1, got {cfg.loss.selfsup.lowpass_scale}")


class Trainer:
    """Builds everything a config describes and trains it; see the module docstring."""

    def __init__(self, cfg: Config, resume: bool = False, progress: bool = True,
                 ctx: dist_utils.DistContext | None = None):
        from mmrface.data.datasets import FaceFolderDataset, UnpairedLQDataset
        from mmrface.data.degrade import Degradation
        from mmrface.models import build_model

        _check_train_config(cfg)
        self.cfg, self.progress = cfg, progress
        self.ctx = ctx or dist_utils.setup(cfg.train.device)
        tc, dc, main = cfg.train, cfg.data, self.ctx.is_main
        self.out_dir = Path(tc.out_dir).expanduser()
        self.ckpt_dir = self.out_dir / "checkpoints"
        resume_from = latest_checkpoint(self.ckpt_dir)
        if resume and resume_from is None:
            raise UserError(f"--resume: no checkpoint in {self.ckpt_dir}")
        if not resume and resume_from is not None:
            raise UserError(f"{self.out_dir} already holds checkpoints: pass --resume to continue that run, "
                            "or choose another --out")
        self.device = self.ctx.device
        self.amp = bool(tc.amp and self.device.type == "cuda")

        torch.manual_seed(tc.seed)  # identical initial weights on every rank
        try:
            self.G = build_model(cfg.model)
        except (ValueError, TypeError) as exc:
            raise UserError(f"cannot build the model of {cfg.source}: {exc}") from None
        size = self.G.size
        root = Path(dc.train_root).expanduser()
        if not root.is_dir():
            raise UserError(f"data.train_root: folder not found: {dc.train_root}")
        self.dataset = FaceFolderDataset(root, size, dc.degradation, augment=dc.augment,
                                         landmarks="auto" if cfg.loss.component > 0 else None, seed=tc.seed)
        ss = cfg.loss.selfsup
        self.unpaired = None
        if dc.unpaired_root and (ss.unpaired > 0 or ss.mean_teacher > 0):
            self.unpaired = UnpairedLQDataset(Path(dc.unpaired_root).expanduser(), size, augment=dc.augment,
                                              seed=tc.seed + 1)
        self.obj = Objectives(cfg, self.dataset.landmarks is not None, self.unpaired is not None).to(self.device)
        self.degradation = Degradation.from_config(dc.degradation)

        self.prior_line = "prior: random init, trained with the rest"
        if not self.G.prior_trainable and not self.G.prior_init:
            raise UserError("model.prior.trainable is false but model.prior.init names no prior: a frozen "
                            "random prior cannot restore faces (set prior.init or prior.trainable: true)")
        if self.G.prior_init:
            state = "fine-tuned" if self.G.prior_trainable else "frozen"
            if resume_from is None:
                from mmrface.weights import load_prior

                sha = load_prior(self.G.prior, self.G.prior_init)
                self.prior_line = f"prior: {self.G.prior_init} sha256 {sha} ({state})"
            else:
                self.prior_line = f"prior: {self.G.prior_init} ({state}; weights from the checkpoint)"
        self.G.to(self.device).train()
        dist_utils.broadcast_module(self.G, self.ctx)
        self.ema = EMA(self.G, tc.ema_decay, tc.ema_rampup)

        lc = cfg.loss
        betas = tuple(float(b) for b in tc.betas)
        self.D = self.comp = None
        self.opt_d = self.opt_c = None
        if self.obj.use_gan:
            from mmrface.models import discriminator_for

            self.D = discriminator_for(cfg.model).to(self.device)
            lr_d, betas_d = lazy_r1_adam(tc.lr_d, betas, lc.r1_every if lc.r1 > 0 else 0)
            self.opt_d = torch.optim.Adam(self.D.parameters(), lr=lr_d, betas=betas_d)
        if self.obj.use_component:
            from mmrface.losses.component import ComponentDiscriminators

            self.comp = ComponentDiscriminators(size).to(self.device)
            self.opt_c = torch.optim.Adam(self.comp.parameters(), lr=tc.lr_d, betas=betas)
        for net in (self.D, self.comp):
            if net is not None:
                dist_utils.broadcast_module(net, self.ctx)
                net.requires_grad_(False)  # trainable only inside the D step
        groups = [{"params": [p for n, p in self.G.named_parameters() if p.requires_grad and not n.startswith("prior.")],
                   "lr": tc.lr_g}]
        prior_params = [p for n, p in self.G.named_parameters() if p.requires_grad and n.startswith("prior.")]
        if prior_params:
            groups.append({"params": prior_params, "lr": tc.lr_g * self.G.prior_lr_mul})
        self.opt_g = torch.optim.Adam(groups, betas=betas)
        self.scaler_g = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.scaler_d = torch.amp.GradScaler("cuda", enabled=self.amp)

        self.start = 0
        self.resumed_from = None
        if resume_from is not None:
            record = load_checkpoint(resume_from, self._nets(), self._optimizers(), self.device)
            if record["config"]["model"] != _plain(cfg.model):
                raise UserError(f"--resume: the model config differs from the one of {resume_from}")
            if self.amp and record["scalers"]:
                self.scaler_g.load_state_dict(record["scalers"]["g"])
                self.scaler_d.load_state_dict(record["scalers"]["d"])
            self.start, self.resumed_from = int(record["step"]), resume_from
            if main:
                _trim_csv(self.out_dir / "val.csv", self.start)
        if main:  # only now: a config error above leaves no output folder behind
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if not resume:
                for stale in ("val.csv", "run.log"):
                    (self.out_dir / stale).unlink(missing_ok=True)
        self.log = RunLog(self.out_dir, enabled=main)
        self.validator = None
        if main and tc.val_every > 0:
            from mmrface.train.validate import Validator

            self.validator = Validator(cfg, size, self.device, self.out_dir)
        self.history: list[dict[str, float]] = []
        self.last_checkpoint = resume_from

    # ------------------------------------------------------------------------------ bookkeeping
    def _nets(self) -> dict[str, nn.Module]:
        nets = {"g": self.G, "g_ema": self.ema.model}
        if self.D is not None:
            nets["d"] = self.D
        if self.comp is not None:
            nets["comp"] = self.comp
        return nets

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opts = {"g": self.opt_g}
        if self.opt_d is not None:
            opts["d"] = self.opt_d
        if self.opt_c is not None:
            opts["comp"] = self.opt_c
        return opts

    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp)

    def _check_finite(self, terms: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        """Loss values averaged over ranks; stops the run naming the first NaN/inf term."""
        names = list(terms)
        vals = torch.stack([terms[k].detach().float() for k in names])
        vals = dist_utils.all_reduce_mean(vals, self.ctx).cpu().tolist()
        for name, v in zip(names, vals):
            if not math.isfinite(v):
                last = (f"the last good checkpoint is {self.last_checkpoint} (EMA weights: "
                        f"{self.out_dir / 'latest_ema.safetensors'})" if self.last_checkpoint
                        else "no checkpoint was written yet")
                msg = (f"loss '{name}' is {v} at step {step + 1}; training stopped without applying this "
                       f"step, {last}. Lower the learning rate or that loss's weight.")
                self.log.info(f"error: {msg}")
                raise NonFiniteLossError(msg)
        return dict(zip(names, vals))

    def _fidelity(self, n: int) -> float | torch.Tensor:
        lo, hi = (float(v) for v in self.cfg.train.fidelity_range)
        if lo == hi:
            return lo
        return (torch.rand(n) * (hi - lo) + lo).to(self.device)

    # ------------------------------------------------------------------------------ steps
    def g_step(self, step: int, batch: dict, ubatch: dict | None) -> dict[str, float]:
        dev, obj = self.device, self.obj
        hq, lq = batch["hq"].to(dev), batch["lq"].to(dev)
        boxes = batch["boxes"].to(dev) if "boxes" in batch else None
        b = hq.shape[0]
        swap = identity_mask(b, obj.p_identity(step), dev)
        inputs = [swap_in_hq(lq, hq, swap)]
        u_lq = ubatch["lq"].to(dev) if ubatch is not None else None
        if obj.use_unpaired:
            inputs.append(u_lq)
        m_target = None
        if obj.use_mean_teacher:
            src = u_lq if u_lq is not None else lq
            with torch.no_grad(), self._autocast():
                m_target = self.ema.model(src, w=1.0, noise_mode="const").float()
            rng = np.random.default_rng([self.cfg.train.seed, step, self.ctx.rank, 1])
            m_lq, _ = pseudo_pairs(m_target, self.degradation, rng)
            inputs.append(m_lq)
        x = torch.cat(inputs)
        w = self._fidelity(x.shape[0])
        with self._autocast():
            if obj.pyramid_on(step):
                out_all, rgbs = self.G(x, w=w, return_rgbs=True)
                rgbs = [r[:b] for r in rgbs]
            else:
                out_all, rgbs = self.G(x, w=w), []
            out, k = out_all[:b], b
            u_out = m_out = None
            if obj.use_unpaired:
                u_out, k = out_all[k:k + u_lq.shape[0]], k + u_lq.shape[0]
            if obj.use_mean_teacher:
                m_out = out_all[k:]
            terms = obj.generator_terms(step, out, rgbs, hq, lq, batch["params"], ~swap, boxes, self.D,
                                        self.comp, u_out, u_lq, m_out, m_target)
            total = obj.total(terms)
        vals = self._check_finite(terms, step)
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler_g.scale(total).backward()
        dist_utils.average_gradients(self.G.parameters(), self.ctx)
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        self.ema.update(self.G, step)
        self._fakes = (hq, out.detach(), None if u_out is None else u_out.detach(), boxes)
        vals["total"] = sum(obj.weights[k] * v for k, v in vals.items())
        return vals

    def d_step(self, step: int) -> dict[str, float]:
        if self.D is None and self.comp is None:
            return {}
        hq, out, u_out, boxes = self._fakes
        nets = [n for n in (self.D, self.comp) if n is not None]
        params = [p for n in nets for p in n.parameters()]
        for n in nets:
            n.requires_grad_(True)
        fake = out if u_out is None else torch.cat([out, u_out])
        with self._autocast():
            terms = Objectives.discriminator_terms(self.D, self.comp, hq, fake, boxes, out)
            total = sum(terms.values())
        vals = self._check_finite(terms, step)
        opts = [o for o in (self.opt_d, self.opt_c) if o is not None]
        for o in opts:
            o.zero_grad(set_to_none=True)
        self.scaler_d.scale(total).backward()
        dist_utils.average_gradients(params, self.ctx)
        for o in opts:
            self.scaler_d.step(o)
        self.scaler_d.update()
        lc = self.cfg.loss
        if self.D is not None and lc.r1 > 0 and step % lc.r1_every == 0:
            real = hq.detach().float().requires_grad_(True)
            logits = self.D(real)
            penalty = r1_penalty(logits, real)
            vals.update(self._check_finite({"r1": penalty}, step))
            self.opt_d.zero_grad(set_to_none=True)
            (lc.r1 / 2 * penalty * lc.r1_every + 0.0 * logits.sum()).backward()
            dist_utils.average_gradients(self.D.parameters(), self.ctx)
            self.opt_d.step()
        for n in nets:
            n.requires_grad_(False)
        return vals

    # ------------------------------------------------------------------------------ outputs
    def save(self, done: int) -> None:
        """Checkpoint + out_dir/latest_ema.safetensors (rank 0 only)."""
        if not self.ctx.is_main:
            return
        from mmrface.weights import save_weights

        cfg = _plain(self.cfg.to_dict())
        scalers = {"g": self.scaler_g.state_dict(), "d": self.scaler_d.state_dict()} if self.amp else {}
        extra = {"config": cfg, "scalers": scalers, "world": self.ctx.world,
                 "rng": "derived from (train.seed, step, rank) at every step; nothing else to restore"}
        self.last_checkpoint = save_checkpoint(self.ckpt_dir, done, self._nets(), self._optimizers(), extra,
                                               self.cfg.train.keep_last)
        final = self.out_dir / "latest_ema.safetensors"
        tmp = self.out_dir / ".latest_ema.safetensors.tmp"
        save_weights(tmp, self.ema.model.state_dict(), cfg,
                     {"step": done, "name": self.cfg.name, "trained_on": self.cfg.data.train_root, "weights": "ema"})
        publish(tmp, final)
        self.log.info(f"checkpoint: {self.last_checkpoint.name} and {final.name} (step {done})")

    def validate(self, done: int) -> dict[str, float]:
        scores = self.validator.evaluate(self.ema.model)
        self.validator.log(done, scores)
        self.log.scalars("val", scores, done)
        self.log.info(f"val step {done}: PSNR {scores['psnr']:.2f} dB  LPIPS {scores['lpips']:.4f} (EMA, w=1)")
        return scores

    def _header(self) -> None:
        for line in header_lines(self):
            self.log.info(line)
        if self.ctx.is_main:
            (self.out_dir / "config.yaml").write_text(yaml.safe_dump(_plain(self.cfg.to_dict()), sort_keys=False))

    # ------------------------------------------------------------------------------ loop
    def fit(self) -> dict[str, Any]:
        """Train from `self.start` to `train.steps`; returns a summary (last losses, paths)."""
        from tqdm import tqdm

        tc, ctx = self.cfg.train, self.ctx
        self._header()
        if self.start >= tc.steps:
            self.log.info(f"nothing to do: the checkpoint is at step {self.start} >= train.steps {tc.steps}")
            return {"steps": self.start, "checkpoint": self.last_checkpoint}
        bs = self.cfg.data.batch_size
        paired = StepBatches(self.dataset, bs, tc.seed, ctx.rank, ctx.world, self.cfg.data.num_workers)
        p_iter = paired.iterate(self.start)
        u_iter = None
        if self.unpaired is not None:
            u_iter = StepBatches(self.unpaired, bs, tc.seed + 1, ctx.rank, ctx.world,
                                 self.cfg.data.num_workers).iterate(self.start)
        bar = tqdm(total=tc.steps, initial=self.start, desc="train", dynamic_ncols=True,
                   disable=True if not (self.progress and ctx.is_main) else None)
        t_last, n_last, scores = time.time(), 0, None
        try:
            for step in range(self.start, tc.steps):
                torch.manual_seed(step_seed(tc.seed, step, ctx.rank))
                vals = self.g_step(step, next(p_iter), next(u_iter) if u_iter is not None else None)
                vals.update(self.d_step(step))
                done = step + 1
                self.history.append({"step": done, **vals})
                bar.update(1)
                bar.set_postfix({k: f"{v:.4f}" for k, v in vals.items() if k in ("total", "l1", "gan", "d_gan")})
                n_last += 1
                if done % tc.log_every == 0 or done == tc.steps:
                    rate = (time.time() - t_last) / n_last
                    terms = "  ".join(f"{k} {v:.4f}" for k, v in vals.items() if k != "total")
                    self.log.info(f"step {done}/{tc.steps}  total {vals['total']:.4f}  {terms}  ({rate:.2f} s/step)")
                    self.log.scalars("train", vals, done)
                    t_last, n_last = time.time(), 0
                if done % tc.ckpt_every == 0 or done == tc.steps:
                    self.save(done)
                if self.validator is not None and (done % tc.val_every == 0 or done == tc.steps):
                    scores = self.validate(done)
        finally:
            bar.close()
            self.log.close()
        return {"steps": tc.steps, "last": self.history[-1] if self.history else None, "val": scores,
                "checkpoint": self.last_checkpoint, "ema": self.out_dir / "latest_ema.safetensors"}


def _trim_csv(path: Path, step: int) -> None:
    """Drop validation rows written after `step` (a resumed run writes them again)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    keep = lines[:1] + [ln for ln in lines[1:] if int(ln.split(",")[0]) <= step]
    path.write_text("\n".join(keep) + "\n")


def train(cfg: Config, resume: bool = False, progress: bool = True) -> Trainer:
    """Train `cfg` (joining the torchrun process group when launched by torchrun); returns the Trainer."""
    ctx = dist_utils.setup(cfg.train.device)
    try:
        trainer = Trainer(cfg, resume=resume, progress=progress, ctx=ctx)
        trainer.fit()
        return trainer
    finally:
        dist_utils.shutdown(ctx)
