"""Building a training run: `build_run(cfg, ctx, resume_from)` -> `Run`, every object a config asks for.

A `Run` holds the networks, their optimisers and scalers, the data sets, the loss terms and the
degradation model. It is built identically on every rank (same seed, weights broadcast from rank
0) and holds no per-step results: the steps (`train/steps.py`) take a `Run` and return theirs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from mmrface.config import Config
from mmrface.errors import UserError
from mmrface.losses.gan import lazy_r1_adam
from mmrface.train import distributed as dist_utils
from mmrface.train.ema import EMA
from mmrface.train.objectives import Objectives


@dataclass
class Run:
    cfg: Config
    ctx: dist_utils.DistContext
    G: nn.Module
    ema: EMA
    opt_g: torch.optim.Optimizer
    dataset: torch.utils.data.Dataset
    obj: Objectives
    degradation: object
    prior_line: str
    unpaired: torch.utils.data.Dataset | None = None
    D: nn.Module | None = None
    opt_d: torch.optim.Optimizer | None = None
    comp: nn.Module | None = None
    opt_c: torch.optim.Optimizer | None = None
    scaler_g: torch.amp.GradScaler | None = None
    scaler_d: torch.amp.GradScaler | None = None
    peak_lrs: dict[str, list[float]] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    @property
    def amp(self) -> bool:
        """fp16 autocast with gradient scalers (CUDA only)."""
        return bool(self.cfg.train.amp and self.device.type == "cuda")

    @property
    def cpu_bf16(self) -> bool:
        """bf16 autocast on this CPU: asked for (train.cpu_amp) and native here (no scaler needed)."""
        return bool(self.cfg.train.cpu_amp and self.device.type == "cpu" and cpu_has_bf16())

    def autocast(self):
        if self.cpu_bf16:
            return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
        return torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp)

    def memory_format(self, x: torch.Tensor) -> torch.Tensor:
        """A batch in the networks' memory format (train.channels_last)."""
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.train.channels_last else x

    def nets(self) -> dict[str, nn.Module]:
        nets = {"g": self.G, "g_ema": self.ema.model}
        if self.D is not None:
            nets["d"] = self.D
        if self.comp is not None:
            nets["comp"] = self.comp
        return nets

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opts = {"g": self.opt_g}
        if self.opt_d is not None:
            opts["d"] = self.opt_d
        if self.opt_c is not None:
            opts["comp"] = self.opt_c
        return opts

    def set_lr_factor(self, factor: float) -> None:
        """Every optimiser's groups at `factor` x their peak learning rate."""
        for name, opt in self.optimizers().items():
            for group, peak in zip(opt.param_groups, self.peak_lrs[name]):
                group["lr"] = peak * factor


def cpu_has_bf16() -> bool:
    """True where this CPU computes bf16 natively (avx512_bf16 or AMX): there bf16 autocast is a
    speed lever; elsewhere torch emulates it, slower than fp32, so train.cpu_amp falls back to fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:  # not Linux: ask torch's dispatcher level instead
        return "AVX512" in torch.backends.cpu.get_cpu_capability()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def check_run_config(cfg: Config, size: int) -> None:
    """What the typed config cannot check alone: values that depend on the model."""
    scale = cfg.loss.selfsup.lowpass_scale
    if scale > size // 4:
        raise UserError(f"config loss.selfsup.lowpass_scale = {scale}: must be at most size/4 = {size // 4} "
                        f"for {size}-px faces")


def build_run(cfg: Config, ctx: dist_utils.DistContext, resuming: bool = False) -> Run:
    """Everything `cfg` describes, on `ctx.device`; the prior is loaded only for a fresh run."""
    from mmrface.data.datasets import FaceFolderDataset, UnpairedLQDataset
    from mmrface.data.degrade import Degradation
    from mmrface.models import build_model

    tc, dc, lc = cfg.train, cfg.data, cfg.loss
    torch.manual_seed(tc.seed)  # identical initial weights on every rank
    try:
        G = build_model(cfg.model)
    except (ValueError, TypeError) as exc:
        raise UserError(f"cannot build the model of {cfg.source}: {exc}") from None
    size = G.size
    check_run_config(cfg, size)
    root = Path(dc.train_root).expanduser()
    if not root.is_dir():
        raise UserError(f"data.train_root: folder not found: {dc.train_root}")
    dataset = FaceFolderDataset(root, size, dc.degradation, augment=dc.augment,
                                landmarks="auto" if lc.component > 0 else None, seed=tc.seed)
    ss = lc.selfsup
    unpaired = None
    if dc.unpaired_root and (ss.unpaired > 0 or ss.mean_teacher > 0):
        u_root = Path(dc.unpaired_root).expanduser()
        if not u_root.is_dir():
            raise UserError(f"data.unpaired_root: folder not found: {dc.unpaired_root}")
        unpaired = UnpairedLQDataset(u_root, size, augment=dc.augment, seed=tc.seed + 1)
    for ds in (dataset, unpaired):  # a folder where nothing decodes: one line now, not a worker traceback later
        if ds is not None:
            ds.load(0)
    obj = Objectives(cfg, dataset.landmarks is not None, unpaired is not None).to(ctx.device)
    prior_line = _load_start(G, cfg, resuming)
    G.to(ctx.device).train()
    if not tc.fused_modconv:  # before the EMA copy, so teacher and validation run the same form
        from mmrface.models.stylegan2 import set_fused_modconv

        set_fused_modconv(G, False)
    if tc.channels_last:
        G.to(memory_format=torch.channels_last)
    dist_utils.broadcast_module(G, ctx)
    run = Run(cfg, ctx, G, EMA(G, tc.ema_decay, tc.ema_rampup), _generator_optimizer(G, cfg), dataset, obj,
              Degradation.from_config(dc.degradation), prior_line, unpaired)
    betas = tuple(float(b) for b in tc.betas)
    if obj.use_gan:
        from mmrface.models import discriminator_for

        run.D = discriminator_for(cfg.model).to(ctx.device)
        lr_d, betas_d = lazy_r1_adam(tc.lr_d, betas, lc.r1_every if lc.r1 > 0 else 0)
        run.opt_d = torch.optim.Adam(run.D.parameters(), lr=lr_d, betas=betas_d)
    if obj.use_component:
        from mmrface.losses.component import ComponentDiscriminators

        run.comp = ComponentDiscriminators(size).to(ctx.device)
        run.opt_c = torch.optim.Adam(run.comp.parameters(), lr=tc.lr_d, betas=betas)
    for net in (run.D, run.comp):
        if net is not None:
            if tc.channels_last:
                net.to(memory_format=torch.channels_last)
            dist_utils.broadcast_module(net, ctx)
            net.requires_grad_(False)  # trainable only inside the D step
    run.peak_lrs = {name: [g["lr"] for g in opt.param_groups] for name, opt in run.optimizers().items()}
    run.scaler_g = torch.amp.GradScaler("cuda", enabled=run.amp)
    run.scaler_d = torch.amp.GradScaler("cuda", enabled=run.amp)
    return run


def _generator_optimizer(G: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """Adam over the trainable codec parameters (lr_g) and prior parameters (lr_g x prior_lr_mul)."""
    tc = cfg.train
    groups = [{"params": [p for n, p in G.named_parameters() if p.requires_grad and not n.startswith("prior.")],
               "lr": tc.lr_g}]
    prior_params = [p for n, p in G.named_parameters() if p.requires_grad and n.startswith("prior.")]
    if prior_params:
        groups.append({"params": prior_params, "lr": tc.lr_g * tc.prior_lr_mul})
    return torch.optim.Adam(groups, betas=tuple(float(b) for b in tc.betas))


def _load_start(G: nn.Module, cfg: Config, resuming: bool) -> str:
    """The weights a fresh run starts from (train.init | train.warm_start | train.prior_init | random)."""
    tc = cfg.train
    given = [k for k in ("init", "warm_start", "prior_init") if getattr(tc, k)]
    if len(given) > 1:
        raise UserError(f"config sets {' and '.join('train.' + k for k in given)}: choose one starting point")
    if tc.init:
        return _load_init(G, cfg, resuming)
    if tc.warm_start:
        if resuming:
            return f"warm start: {tc.warm_start} (weights from the checkpoint)"
        from mmrface.train.warm_start import warm_start

        return warm_start(G, tc.warm_start)
    return _load_prior(G, cfg, resuming)


def _load_init(G: nn.Module, cfg: Config, resuming: bool) -> str:
    """Load `train.init` (a whole restorer of the same model config) into a fresh run; its run-log line."""
    init = cfg.train.init
    if resuming:
        return f"init: {init} (weights from the checkpoint)"
    from mmrface.models import inference_config, load_state_strict
    from mmrface.weights import load_weights

    state, meta = load_weights(init)
    theirs, ours = inference_config((meta.get("config") or {}).get("model") or {}), inference_config(cfg.model)
    if theirs != ours:
        differ = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        raise UserError(f"train.init {init}: its model differs from this config's in {', '.join(differ)}")
    load_state_strict(G, state, f"train.init {init}")
    prior = "fine-tuned" if G.prior_trainable else "frozen"
    return f"init: {init} sha256 {meta.get('sha256', '?')} (every weight; prior {prior})"


def _load_prior(G: nn.Module, cfg: Config, resuming: bool) -> str:
    """Load `train.prior_init` into the prior of a fresh run; the run-log line that says what happened."""
    init = cfg.train.prior_init
    if not G.prior_trainable and not init:
        raise UserError("model.prior.trainable is false but train.prior_init names no prior: a frozen "
                        "random prior cannot restore faces (set train.prior_init or model.prior.trainable: true)")
    if not init:
        return "prior: random init, trained with the rest"
    state = "fine-tuned" if G.prior_trainable else "frozen"
    if resuming:
        return f"prior: {init} ({state}; weights from the checkpoint)"
    from mmrface.weights import load_prior

    sha = load_prior(G.prior, init)
    return f"prior: {init} sha256 {sha} ({state})"
