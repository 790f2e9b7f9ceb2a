"""Which losses a config trains, the run-log lines that say so, and the loss terms of a step.

Every term has a YAML weight and is off (not computed, no network built for it) at weight 0.
`Objectives.report` lists each active term with its weight and each inactive one with the reason;
a term the user turned on but whose input is missing (no identity weights file, no landmarks for
the component discriminators, no unpaired folder) is a UserError, never a silent change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from mmrface.config import Config
from mmrface.errors import UserError
from mmrface.losses import gan
from mmrface.losses.basic import l1_loss, pyramid_l1
from mmrface.losses.identity import build_identity_loss, check_identity_config
from mmrface.losses.selfsup import lowpass_loss, p_identity_at, redegrade_loss
from mmrface.train.schedule import from_step

@dataclass
class GenBatch:
    """The paired batch of a generator step (B, 3, S, S) and the unpaired real LQ faces, if used."""

    hq: Tensor
    lq: Tensor  # the observed LQ (also where the HQ self-reconstruction swapped it in)
    params: Sequence[str]  # degradation records, JSON
    not_swapped: Tensor  # (B,) bool: the input was the LQ (the re-degradation loss applies)
    boxes: Tensor | None = None  # (B, 3, 4) eye / mouth boxes
    u_lq: Tensor | None = None  # real LQ faces without ground truth


@dataclass
class GenOutputs:
    """What the generator produced for a `GenBatch`."""

    out: Tensor  # restorations of the paired LQ
    rgbs: Sequence[Tensor] = ()  # decoder RGBs (pyramid loss)
    u_out: Tensor | None = None  # restorations of the unpaired LQ
    m_out: Tensor | None = None  # restorations of the mean-teacher pseudo LQ
    m_target: Tensor | None = None  # the teacher's outputs they should match
    w: float | Tensor = 1.0  # fidelity of the paired restorations (a float or (B,))


G_TERMS = ("l1", "pyramid", "perceptual", "style", "lpips", "identity", "gan", "component",
           "redegrade", "unpaired", "mean_teacher")


class Objectives(nn.Module):
    """The loss modules of a config and the terms they give.

    Args:
        cfg: the experiment config.
        has_landmarks: the training faces come with eye / mouth boxes.
        has_unpaired: a folder of real LQ faces is loaded (`data.unpaired_root`).
    """

    def __init__(self, cfg: Config, has_landmarks: bool, has_unpaired: bool):
        super().__init__()
        lc, ss = cfg.loss, cfg.loss.selfsup
        self.lc, self.ss = lc, ss
        w = {"l1": lc.l1, "pyramid": lc.pyramid, "perceptual": lc.perceptual, "style": lc.style,
             "lpips": lc.lpips, "identity": lc.identity, "gan": lc.gan, "component": lc.component,
             "redegrade": ss.redegrade, "unpaired": ss.unpaired, "mean_teacher": ss.mean_teacher}
        bad = {k: v for k, v in w.items() if not isinstance(v, (int, float)) or v < 0}
        if bad:
            raise UserError(f"loss weights must be numbers >= 0, got {bad}")
        self.weights = {k: float(v) for k, v in w.items()}
        on, off = [], []

        def say(name: str, active: bool, text: str) -> None:
            (on if active else off).append(f"{name}: {text}")

        say("l1", lc.l1 > 0, f"{lc.l1:g}" if lc.l1 > 0 else "off (loss.l1 = 0)")
        if lc.pyramid > 0 and lc.pyramid_until > 0:
            say("pyramid", True, f"{lc.pyramid:g} (decoder RGBs, first {lc.pyramid_until} steps)")
        else:
            say("pyramid", False, "off (loss.pyramid = 0)" if lc.pyramid <= 0 else "off (loss.pyramid_until = 0)")
            self.weights["pyramid"] = 0.0

        self.percep = None
        if lc.perceptual > 0 or lc.style > 0:
            from mmrface.losses.perceptual import DEFAULT_LAYER_WEIGHTS, PerceptualLoss

            layers = lc.perceptual_layers or DEFAULT_LAYER_WEIGHTS
            self.percep = PerceptualLoss(layers, perceptual=lc.perceptual > 0, style=lc.style > 0)
            desc = ", ".join(f"{k}:{v:g}" for k, v in layers.items())
        for name in ("perceptual", "style"):
            wt = self.weights[name]
            say(name, wt > 0, f"{wt:g} (VGG16 {desc})" if wt > 0 else f"off (loss.{name} = 0)")

        self.lpips = None
        if lc.lpips > 0:
            from mmrface.losses.perceptual import LPIPSLoss

            self.lpips = LPIPSLoss(lc.lpips_net)
        by_w = f", x (1 - {lc.lpips_fidelity:g} w) per sample" if lc.lpips_fidelity > 0 else ""
        say("lpips", lc.lpips > 0, f"{lc.lpips:g} (LPIPS {lc.lpips_net}{by_w})" if lc.lpips > 0 else "off (loss.lpips = 0)")

        line = check_identity_config(lc.identity, lc.identity_weights)
        self.identity = build_identity_loss(lc.identity, lc.identity_weights)
        (on if self.identity is not None else off).append(line)

        self.use_gan = lc.gan > 0
        if self.use_gan and lc.r1_every < 1:
            raise UserError(f"loss.r1_every must be >= 1, got {lc.r1_every}")
        r1 = f"R1 {lc.r1:g} every {lc.r1_every} steps" if lc.r1 > 0 else "no R1 (loss.r1 = 0)"
        say("gan", self.use_gan, f"{lc.gan:g} (StyleGAN2 D, non-saturating; {r1})"
            if self.use_gan else "off (loss.gan = 0: no discriminator, no R1)")

        self.use_component = lc.component > 0
        if self.use_component and not has_landmarks:
            raise UserError(f"loss.component = {lc.component} needs eye/mouth boxes: put a landmarks.json "
                            f"in data.train_root ({cfg.data.train_root}) or set loss.component=0")
        say("component", self.use_component, f"{lc.component:g} (patch Ds on left eye, right eye, mouth)"
            if self.use_component else "off (loss.component = 0)")

        say("redegrade", ss.redegrade > 0, f"{ss.redegrade:g} (recorded degradation replayed on the output)"
            if ss.redegrade > 0 else "off (selfsup.redegrade = 0)")
        self.use_unpaired = ss.unpaired > 0
        if self.use_unpaired and not has_unpaired:
            raise UserError(f"selfsup.unpaired = {ss.unpaired} needs data.unpaired_root (a folder of real LQ "
                            "faces); set selfsup.unpaired=0 to train without it")
        if self.use_unpaired:
            adv = f" + gan {lc.gan:g} on their outputs" if self.use_gan else " (no adversarial term: loss.gan = 0)"
            say("unpaired", True, f"{ss.unpaired:g} (low-pass L1 at 1/{ss.lowpass_scale} on real LQ{adv})")
        else:
            extra = "; data.unpaired_root is not used for it" if cfg.data.unpaired_root else ""
            say("unpaired", False, f"off (selfsup.unpaired = 0{extra})")
        self.use_mean_teacher = ss.mean_teacher > 0
        src = "real LQ of data.unpaired_root" if has_unpaired else "training LQ (no data.unpaired_root)"
        say("mean_teacher", self.use_mean_teacher, f"{ss.mean_teacher:g} (EMA teacher on {src})"
            if self.use_mean_teacher else "off (selfsup.mean_teacher = 0)")

        if ss.p_identity > 0 or ss.p_identity_final > 0:
            for k in ("p_identity", "p_identity_final"):
                if not 0 <= getattr(ss, k) <= 1:
                    raise UserError(f"selfsup.{k} must be in [0, 1], got {getattr(ss, k)}")
            on.append(f"hq self-reconstruction: p {ss.p_identity:g} -> {ss.p_identity_final:g} "
                      f"over {ss.p_identity_decay_steps} steps")
        else:
            off.append("hq self-reconstruction: off (selfsup.p_identity = 0)")
        self.schedule = _check_schedule(lc.schedule, self.weights)
        for name, points in self.schedule.items():
            on.append(f"schedule: {name} " + ", ".join(f"{w:g} from step {s}" for s, w in points))
        active = [k for k, v in self.weights.items() if v > 0]
        if not active:
            raise UserError("no loss is active: every loss weight is 0")
        self.report = ["losses (active):"] + [f"  {s}" for s in on] + ["losses (off):"] + [f"  {s}" for s in off]

    def train(self, mode: bool = True) -> "Objectives":
        return super().train(False)  # fixed networks only

    # ------------------------------------------------------------------------------------------
    def pyramid_on(self, step: int) -> bool:
        return self.weights["pyramid"] > 0 and step < self.lc.pyramid_until

    def p_identity(self, step: int) -> float:
        return p_identity_at(self.ss.p_identity, self.ss.p_identity_final, self.ss.p_identity_decay_steps, step)

    def generator_terms(self, step: int, outs: GenOutputs, batch: GenBatch, d: nn.Module | None = None,
                        comp: nn.Module | None = None) -> dict[str, Tensor]:
        """Unweighted terms of the active losses; `d` / `comp` are the (frozen) discriminators."""
        wt, terms, out, hq = self.weights, {}, outs.out, batch.hq
        if wt["l1"] > 0:
            terms["l1"] = l1_loss(out, hq)
        if self.pyramid_on(step):
            terms["pyramid"] = pyramid_l1(outs.rgbs, hq)
        if self.percep is not None:
            percep, style = self.percep(out, hq)
            if percep is not None:
                terms["perceptual"] = percep
            if style is not None:
                terms["style"] = style
        if self.lpips is not None:
            scale = None
            if self.lc.lpips_fidelity > 0:  # pixel fidelity where the user asks for fidelity
                w = outs.w if isinstance(outs.w, Tensor) else torch.full((out.shape[0],), float(outs.w))
                scale = 1.0 - self.lc.lpips_fidelity * w.to(out.device, out.dtype)
            terms["lpips"] = self.lpips(out, hq, scale)
        if self.identity is not None:
            terms["identity"] = self.identity(out, hq)
        if self.use_gan:
            fakes = out if outs.u_out is None else torch.cat([out, outs.u_out])
            terms["gan"] = gan.g_nonsaturating(d(fakes))
        if self.use_component:
            logits = comp(out, batch.boxes)
            terms["component"] = torch.stack([gan.g_nonsaturating(v) for v in logits.values()]).sum()
        if wt["redegrade"] > 0:
            with torch.autocast(out.device.type, enabled=False):  # the replay runs in float32
                terms["redegrade"] = redegrade_loss(out, batch.lq, batch.params, batch.not_swapped)
        if self.use_unpaired:
            terms["unpaired"] = lowpass_loss(outs.u_out, batch.u_lq, self.ss.lowpass_scale)
        if self.use_mean_teacher:
            terms["mean_teacher"] = l1_loss(outs.m_out, outs.m_target)
        return terms

    def weight(self, name: str, step: int | None = None) -> float:
        """The weight of a term at `step` (its `loss.schedule`, else the configured weight)."""
        w = self.weights[name]
        return w if step is None else from_step(dict(self.schedule.get(name, ())), step, w)

    def total(self, terms: dict[str, Tensor], step: int | None = None) -> Tensor:
        return sum(self.weight(k, step) * v.float() for k, v in terms.items())

    @staticmethod
    def discriminator_terms(d: nn.Module | None, comp: nn.Module | None, real: Tensor, fake: Tensor,
                            boxes: Tensor | None, fake_paired: Tensor) -> dict[str, Tensor]:
        """Logistic D losses: `d_gan` on real HQ vs all fakes; `d_component` on eye/mouth crops."""
        terms = {}
        if d is not None:
            terms["d_gan"] = gan.d_logistic(d(real), d(fake))
        if comp is not None:
            real_l, fake_l = comp(real, boxes), comp(fake_paired, boxes)
            terms["d_component"] = torch.stack([gan.d_logistic(real_l[k], fake_l[k]) for k in real_l]).sum()
        return terms


def _check_schedule(schedule: dict, weights: dict[str, float]) -> dict[str, list[tuple[int, float]]]:
    """`loss.schedule` as {term: [(step, weight), ...]} ascending; a term must be on to be scheduled."""
    out = {}
    for name, points in (schedule or {}).items():
        if name not in weights:
            raise UserError(f"config loss.schedule: unknown loss {name!r}; known: {sorted(weights)}")
        if weights[name] <= 0:
            raise UserError(f"config loss.schedule.{name}: the loss is off (weight 0), so it cannot be scheduled")
        ok = isinstance(points, list) and all(
            isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], int) and not isinstance(p[0], bool)
            and p[0] >= 0 and isinstance(p[1], (int, float)) and not isinstance(p[1], bool) and p[1] >= 0
            for p in points)
        steps = [p[0] for p in points] if ok else []
        if not ok or steps != sorted(set(steps)):
            raise UserError(f"config loss.schedule.{name} = {points!r}: expected [[step, weight], ...] with "
                            "ascending integer steps >= 0 and weights >= 0")
        out[name] = [(int(a), float(b)) for a, b in points]
    return out
