"""The one architecture registry and the one loader (timm style).

* `build_model({"arch": "mmrface", "size": 64, ...})` imports the architecture's module lazily and
  calls its class with the remaining keys as constructor arguments, so every YAML option is a
  constructor argument and a typo is a clear error, not a silently ignored key.
* `load_model(name_or_file)` rebuilds a network from a weight file alone (its embedded config),
  loads it strictly and returns it in eval mode: the restorer, export, evaluation, `weights info`
  and the identity loss all load through it.
* `discriminator_for(model_cfg)` is the StyleGAN2 discriminator the trainer pairs with a restorer.

Every network we build or load is registered in `ARCHS`: the restorers, their StyleGAN2 prior on
its own, the StyleGAN2 discriminator and the ArcFace identity network.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

from torch import Tensor, nn

ARCHS = {
    "mmrface": "mmrface.models.mmrface_net:MMRFaceNet",
    "gfpgan_v1clean": "mmrface.models.gfpgan_v1clean:GFPGANv1Clean",
    "stylegan2": "mmrface.models.stylegan2:StyleGAN2Generator",
    "stylegan2_discriminator": "mmrface.models.discriminator:StyleGAN2Discriminator",
    "arcface": "mmrface.models.arcface:ArcFaceResNet",
}
RESTORERS = ("mmrface", "gfpgan_v1clean")  # archs that `Restorer` can run
_TITLES = {"mmrface": "an mmrface restorer", "gfpgan_v1clean": "a GFPGANv1Clean restorer",
           "stylegan2": "a StyleGAN2 prior", "stylegan2_discriminator": "a StyleGAN2 discriminator",
           "arcface": "an ArcFace identity network"}
# Training-only keys that older weight files carry inside `model.prior`; inference ignores them.
_TRAINING_ONLY_PRIOR_KEYS = ("init", "lr_mul")


def get_arch(name: str) -> type[nn.Module]:
    try:
        target = ARCHS[name]
    except KeyError:
        raise ValueError(f"unknown model arch {name!r}; known: {sorted(ARCHS)}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def build_model(model_cfg: dict) -> nn.Module:
    """Build a network from the `model:` section of a config (a dict with an `arch` key)."""
    cfg = dict(model_cfg)
    cls = get_arch(cfg.pop("arch", "mmrface"))
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(cfg) - set(params))
        if unknown:
            raise ValueError(f"unknown option(s) for {cls.__name__}: {unknown}")
    return cls(**cfg)


def discriminator_for(model_cfg: dict) -> nn.Module:
    """The StyleGAN2 discriminator the trainer pairs with this model (mirrors the prior's widths)."""
    prior = model_cfg.get("prior", {}) if isinstance(model_cfg.get("prior"), dict) else {}
    return build_model({
        "arch": "stylegan2_discriminator",
        "size": model_cfg["size"],
        "channel_multiplier": prior.get("channel_multiplier", model_cfg.get("channel_multiplier", 2)),
        "narrow": prior.get("narrow", model_cfg.get("narrow", 1.0)),
        "max_channels": prior.get("max_channels", 512),
    })


def inference_config(model_cfg: dict) -> dict:
    """A weight file's model section without the training-only keys (`prior.init`, `prior.lr_mul`)."""
    cfg = dict(model_cfg)
    if isinstance(cfg.get("prior"), dict):
        cfg["prior"] = {k: v for k, v in cfg["prior"].items() if k not in _TRAINING_ONLY_PRIOR_KEYS}
    return cfg


def load_state_strict(model: nn.Module, state: dict[str, Tensor], where: str, strict: bool = True) -> None:
    """Load `state` into `model`; UserError naming `where` if keys are missing/unexpected or shapes differ.

    With `strict=False` missing and unexpected keys are allowed; a shape mismatch is still an error.
    """
    from mmrface.errors import UserError

    own = model.state_dict().keys()
    missing, unexpected = sorted(own - state.keys()), sorted(state.keys() - own)
    if strict and (missing or unexpected):
        raise UserError(f"{where}: does not fit the model: {len(missing)} missing (e.g. {missing[:3]}), "
                        f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln]
        first = lines[0] if lines else (str(exc).strip().splitlines() or [""])[0][:200]
        raise UserError(f"{where}: does not fit the model ({first})") from None


def load_model(name_or_file: str | Path, strict: bool = True, arch: str | tuple[str, ...] | None = None,
               device: Any = None) -> tuple[nn.Module, dict[str, Any]]:
    """(network in eval mode, meta) from a registry name or a weight file (ours, or a convertible .pth).

    `arch` names the architecture(s) the caller can use; another one is a UserError before anything is
    built. `meta` is what `mmrface.weights.load_weights` returns (config, sha256, path, ...).
    """
    from mmrface.errors import UserError
    from mmrface.weights import load_weights

    state, meta = load_weights(name_or_file)
    config = meta.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise UserError(f"{name_or_file}: the weight file carries no model config; "
                        f"re-save it with `mmrface weights import`")
    model_cfg = inference_config(config["model"])
    got = model_cfg.get("arch", "mmrface")
    wanted = (arch,) if isinstance(arch, str) else arch
    if wanted is not None and got not in wanted:
        raise UserError(f"{name_or_file}: holds a {got} model, not {' or '.join(_TITLES.get(a, a) for a in wanted)}")
    try:
        model = build_model(model_cfg)
    except (ValueError, TypeError) as exc:
        raise UserError(f"{name_or_file}: cannot build its {got} model ({exc})") from None
    load_state_strict(model, state, str(meta.get("path", name_or_file)), strict=strict)
    if device is not None:
        model = model.to(device)
    return model.eval(), meta
