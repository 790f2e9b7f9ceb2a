"""The training loop: `Trainer(cfg).fit()`, or `train(cfg)`; `mmrface train` calls it.

One step t (0-based) on every rank:
  1. seed torch from (train.seed, t, rank); set the learning rates of step t (`schedule.py`);
     take batch t of this rank (`train.data.StepBatches`);
  2. generator step (`steps.generator_step`): HQ self-reconstruction swap, fidelity w per sample,
     one forward pass over the paired LQ (+ unpaired real LQ + mean-teacher pseudo LQ), the active
     loss terms (`objectives.Objectives`), the divergence guard, backward, gradient all-reduce and
     clipping, Adam, EMA update;
  3. discriminator step (`steps.discriminator_step`, when gan or component losses are on);
  4. rank 0: log every `log_every`, checkpoint every `ckpt_every`, validate every `val_every`.
Every random draw derives from (seed, step, rank), so a resumed run repeats the draws of an
uninterrupted one exactly (bit-identical weights on the CPU). Building the run is `run.build_run`.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from mmrface.config import Config
from mmrface.errors import UserError
from mmrface.train import distributed as dist_utils
from mmrface.train.checkpoint import latest_checkpoint, load_checkpoint, publish, save_checkpoint
from mmrface.train.data import StepBatches
from mmrface.train.guard import DivergenceGuard
from mmrface.train.run import build_run
from mmrface.train.runlog import RunLog, header_lines
from mmrface.train.schedule import lr_factor, objective_changes
from mmrface.train.steps import Diverged, Judge, discriminator_step, generator_step


class NonFiniteLossError(UserError):
    """A loss became NaN, infinite or blew up; training stopped before applying that step."""


def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of one step on one rank."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0] % (2**63))


def _plain(obj: Any) -> Any:
    """JSON round trip: tuples become lists (what YAML/JSON files hold)."""
    return json.loads(json.dumps(obj))


class Trainer:
    """Builds the run a config describes (or resumes it) and trains it; see the module docstring."""

    def __init__(self, cfg: Config, resume: bool = False, progress: bool = True,
                 ctx: dist_utils.DistContext | None = None, allow_changes: bool = False):
        self.cfg, self.progress = cfg, progress
        self.ctx = ctx or dist_utils.setup(cfg.train.device)
        tc, main = cfg.train, self.ctx.is_main
        self.out_dir = Path(tc.out_dir).expanduser()
        self.ckpt_dir = self.out_dir / "checkpoints"
        resume_from = latest_checkpoint(self.ckpt_dir)
        if resume and resume_from is None:
            raise UserError(f"--resume: no checkpoint in {self.ckpt_dir}")
        if not resume and resume_from is not None:
            raise UserError(f"{self.out_dir} already holds checkpoints: pass --resume to continue that run, "
                            "or choose another --out")
        self.run = build_run(cfg, self.ctx, resuming=resume_from is not None)
        self.guard = DivergenceGuard(tc.divergence_factor, tc.divergence_window, tc.divergence_patience)
        self.start, self.resumed_from = 0, None
        if resume_from is not None:
            record = load_checkpoint(resume_from, self.run.nets(), self.run.optimizers(), self.device)
            check_resume(record, cfg, self.ctx.world, resume_from, allow_changes)
            if record.get("guard"):
                self.guard.load_state_dict(record["guard"])
            if self.run.amp and record["scalers"]:
                self.run.scaler_g.load_state_dict(record["scalers"]["g"])
                self.run.scaler_d.load_state_dict(record["scalers"]["d"])
            self.start, self.resumed_from = int(record["step"]), resume_from
            if main:
                _trim_csv(self.out_dir / "val.csv", self.start)
        if main:  # only now: a config error above leaves no output folder behind
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if not resume:
                for stale in ("val.csv", "run.log"):
                    (self.out_dir / stale).unlink(missing_ok=True)
        self.log = RunLog(self.out_dir, enabled=main)
        self.judge = Judge(self.guard, self.ctx, self.log)
        self.validator = None
        if main and tc.val_every > 0:
            from mmrface.train.validate import Validator

            self.validator = Validator(cfg, self.G.size, self.device, self.out_dir)
        self.history: list[dict[str, float]] = []
        self.step_ends: list[float] = []  # perf_counter() after each step (benchmarks/train_speed.py)
        self.last_checkpoint = resume_from

    # the run's parts under the names the run log, the tests and users' scripts use
    G = property(lambda self: self.run.G)
    ema = property(lambda self: self.run.ema)
    D = property(lambda self: self.run.D)
    opt_g = property(lambda self: self.run.opt_g)
    dataset = property(lambda self: self.run.dataset)
    unpaired = property(lambda self: self.run.unpaired)
    obj = property(lambda self: self.run.obj)
    degradation = property(lambda self: self.run.degradation)
    prior_line = property(lambda self: self.run.prior_line)
    device = property(lambda self: self.ctx.device)
    amp = property(lambda self: self.run.amp)

    # ------------------------------------------------------------------------------ outputs
    def save(self, done: int) -> None:
        """Checkpoint + out_dir/latest_ema.safetensors (rank 0 only)."""
        if not self.ctx.is_main:
            return
        from mmrface.weights import save_weights

        run, cfg = self.run, _plain(self.cfg.to_dict())
        scalers = {"g": run.scaler_g.state_dict(), "d": run.scaler_d.state_dict()} if run.amp else {}
        extra = {"config": cfg, "scalers": scalers, "world": self.ctx.world, "guard": self.guard.state_dict(),
                 "rng": "derived from (train.seed, step, rank) at every step; nothing else to restore"}
        self.last_checkpoint = save_checkpoint(self.ckpt_dir, done, run.nets(), run.optimizers(), extra,
                                               self.cfg.train.keep_last)
        final = self.out_dir / "latest_ema.safetensors"
        tmp = self.out_dir / ".latest_ema.safetensors.tmp"
        save_weights(tmp, run.ema.model.state_dict(), cfg,
                     {"step": done, "name": self.cfg.name, "trained_on": self.cfg.data.train_root, "weights": "ema"})
        publish(tmp, final)
        self.log.info(f"checkpoint: {self.last_checkpoint.name} and {final.name} (step {done})")

    def validate(self, done: int) -> dict[str, float]:
        scores = self.validator.evaluate(self.run.ema.model)
        self.validator.log(done, scores)
        self.log.scalars("val", scores, done)
        self.log.info(f"val step {done}: PSNR {scores['psnr']:.2f} dB  LPIPS {scores['lpips']:.4f} (EMA, w=1)")
        return scores

    def _header(self) -> None:
        for line in header_lines(self):
            self.log.info(line)
        if self.ctx.is_main:
            (self.out_dir / "config.yaml").write_text(yaml.safe_dump(_plain(self.cfg.to_dict()), sort_keys=False))

    def _stop(self, exc: Diverged) -> None:
        last = (f"the last good checkpoint is {self.last_checkpoint} (EMA weights: "
                f"{self.out_dir / 'latest_ema.safetensors'})" if self.last_checkpoint
                else "no checkpoint was written yet")
        msg = (f"{exc.reason} at step {exc.step + 1}; training stopped without applying this step, {last}. "
               "Lower the learning rate or that loss's weight (train.lr_g, train.warmup_steps, train.grad_clip).")
        self.log.info(f"error: {msg}")
        raise NonFiniteLossError(msg) from None

    # ------------------------------------------------------------------------------ loop
    def _batches(self):
        tc, dc, ctx = self.cfg.train, self.cfg.data, self.ctx
        colour = self.run.dataset.colour_flags() if dc.colour_share is not None else None
        paired = StepBatches(self.run.dataset, dc.batch_size, tc.seed, ctx.rank, ctx.world, dc.num_workers,
                             colour, dc.colour_share)
        p_iter = paired.iterate(self.start)
        if self.run.unpaired is None:
            return zip(p_iter, itertools.repeat(None))
        u_iter = StepBatches(self.run.unpaired, dc.unpaired_batch_size or dc.batch_size, tc.seed + 1, ctx.rank,
                             ctx.world, dc.num_workers).iterate(self.start)
        return zip(p_iter, u_iter)

    def fit(self) -> dict[str, Any]:
        """Train from `self.start` to `train.steps`; returns a summary (last losses, paths)."""
        from tqdm import tqdm

        tc, ctx = self.cfg.train, self.ctx
        self._header()
        end = min(tc.steps, tc.stop_after or tc.steps)  # stop_after: end early, same lr schedule
        if self.start >= end:
            self.log.info(f"nothing to do: the checkpoint is at step {self.start} >= the last step {end}")
            return {"steps": self.start, "checkpoint": self.last_checkpoint}
        bar = tqdm(total=end, initial=self.start, desc="train", dynamic_ncols=True,
                   disable=True if not (self.progress and ctx.is_main) else None)
        t_last, n_last, scores = time.time(), 0, None
        t_start, done = time.time(), self.start
        batches = self._batches()
        changes = objective_changes(tc.fidelity_full_from, self.run.obj.schedule)
        try:
            for step in range(self.start, end):
                if step in changes:  # a planned jump of the losses is not a blow-up
                    self.guard.restart()
                    self.log.info(f"step {step}: the objective changes (fidelity_full_from / loss.schedule); "
                                  "the divergence guard starts fresh medians")
                torch.manual_seed(step_seed(tc.seed, step, ctx.rank))
                self.run.set_lr_factor(lr_factor(step, tc.steps, tc.warmup_steps, tc.lr_schedule, tc.lr_final))
                batch, ubatch = next(batches)
                g = generator_step(self.run, self.judge, step, batch, ubatch)
                vals = {**g.values, **discriminator_step(self.run, self.judge, step, g.fakes)}
                done = step + 1
                self.history.append({"step": done, **vals})
                self.step_ends.append(time.perf_counter())
                bar.update(1)
                bar.set_postfix({k: f"{v:.4f}" for k, v in vals.items() if k in ("total", "l1", "gan", "d_gan")})
                n_last += 1
                last = done == end or self._out_of_time(t_start)
                if done % tc.log_every == 0 or last:
                    rate = (time.time() - t_last) / n_last
                    terms = "  ".join(f"{k} {v:.4f}" for k, v in vals.items() if k != "total")
                    terms += f"  lr {self.run.opt_g.param_groups[0]['lr']:.3g}"
                    self.log.info(f"step {done}/{tc.steps}  total {vals['total']:.4f}  {terms}  ({rate:.2f} s/step)")
                    self.log.scalars("train", vals, done)
                    t_last, n_last = time.time(), 0
                if done % tc.ckpt_every == 0 or last:
                    self.save(done)
                if self.validator is not None and (done % tc.val_every == 0 or last):
                    scores = self.validate(done)
                if last and done < end:
                    self.log.info(f"train.max_minutes = {tc.max_minutes}: stopped at step {done} of {end}; "
                                  "--resume continues the run")
                    break
        except Diverged as exc:
            self._stop(exc)
        finally:
            bar.close()
            self.log.close()
        return {"steps": done, "last": self.history[-1] if self.history else None, "val": scores,
                "checkpoint": self.last_checkpoint, "ema": self.out_dir / "latest_ema.safetensors"}


    def _out_of_time(self, t_start: float) -> bool:
        """train.max_minutes has passed on some rank (agreed by all-reduce: every rank stops at the same step)."""
        limit = self.cfg.train.max_minutes
        if limit is None:
            return False
        late = torch.tensor([float(time.time() - t_start > limit * 60)], device=self.device)
        return bool(dist_utils.all_reduce_mean(late, self.ctx).item() > 0)


#: Config keys a resumed run may change freely (how long, how often to log / save / validate).
RESUME_FREE = {("train", k) for k in ("steps", "stop_after", "out_dir", "ckpt_every", "keep_last", "val_every", "log_every",
                                      "device", "divergence_factor", "divergence_window", "divergence_patience",
                                      "channels_last", "fused_modconv", "max_minutes")} | {("data", "num_workers")}
RESUME_FREE |= {("name",), ("source",)}


def check_resume(record: dict, cfg: Config, world: int, path: Path, allow_changes: bool) -> None:
    """Refuse to resume with another model (always) or another data / loss / optimiser / world size
    (unless `allow_changes`): such a run would silently not be the continuation it claims to be."""
    old, new = _with_defaults(record["config"]), _plain(cfg.to_dict())
    if old["model"] != new["model"]:
        raise UserError(f"--resume: the model config differs from the one of {path}")
    changed = [k for k in _diff(old, new) if k not in RESUME_FREE and k[:1] != ("model",)]
    if int(record.get("world", world)) != world:
        changed.append(("world size", f"{record.get('world')} -> {world}"))
    if changed and not allow_changes:
        names = ", ".join(".".join(str(p) for p in k) for k in changed[:6])
        raise UserError(f"--resume: {names} changed since {path.name}; pass --allow-changes to continue "
                        "anyway (the run is then no longer the continuation of the same recipe)")


#: The config sections whose keys are fields (dict-valued fields such as data.degradation are values).
SECTIONS = (("data",), ("loss",), ("loss", "selfsup"), ("train",))


def _with_defaults(old: dict) -> dict:
    """A checkpoint's config with the keys added since it was written at their defaults: a key
    that did not exist then meant what its default means now (a new option starts off)."""
    out, defaults = json.loads(json.dumps(old)), _plain(Config().to_dict())
    for path in SECTIONS:
        have, want = out, defaults
        for part in path:
            have, want = have.setdefault(part, {}), want[part]
        for key, value in want.items():
            have.setdefault(key, value)
    return out


def _diff(a: Any, b: Any, prefix: tuple = ()) -> list[tuple]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), prefix + (k,))
        return out
    return [] if a == b else [prefix]


def _trim_csv(path: Path, step: int) -> None:
    """Drop validation rows written after `step` (a resumed run writes them again)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    keep = lines[:1] + [ln for ln in lines[1:] if int(ln.split(",")[0]) <= step]
    path.write_text("\n".join(keep) + "\n")


def train(cfg: Config, resume: bool = False, progress: bool = True, allow_changes: bool = False) -> Trainer:
    """Train `cfg` (joining the torchrun process group when launched by torchrun); returns the Trainer."""
    ctx = dist_utils.setup(cfg.train.device)
    try:
        trainer = Trainer(cfg, resume=resume, progress=progress, ctx=ctx, allow_changes=allow_changes)
        trainer.fit()
        return trainer
    finally:
        dist_utils.shutdown(ctx)
