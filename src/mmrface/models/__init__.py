"""Model factory: a config names the architecture, this module builds it (timm style).

`build_model({"arch": "mmrface", "size": 64, ...})` imports the architecture's module lazily and
calls its class with the remaining keys as constructor arguments, so every YAML option is a
constructor argument and a typo is a clear error, not a silently ignored key.
"""

from __future__ import annotations

import importlib
import inspect

from torch import nn

ARCHS = {
    "mmrface": "mmrface.models.mmrface_net:MMRFaceNet",
    "gfpgan_v1clean": "mmrface.models.gfpgan_v1clean:GFPGANv1Clean",
}


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
