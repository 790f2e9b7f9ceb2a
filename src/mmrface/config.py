"""Typed experiment configs loaded from YAML (one file = one experiment, BasicSR style).

    cfg = load_config("configs/tiny.yaml", overrides=["train.steps=20", "data.train_root=~/ffhq"])

A config may start with `_base_: other.yaml` (path relative to the file) and override any key of
it. Unknown keys are errors (a typo never silently changes what is trained). The `model:` section
is a plain dict of constructor arguments, validated by `mmrface.models.build_model`; the other
sections are dataclasses with defaults. `Config.to_dict()` is what the trainer writes next to its
checkpoints as the record of the run.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmrface.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


@dataclass
class DataConfig:
    train_root: str = "assets/faces"  # folder of aligned HQ faces (FFHQ-style); one line to change
    unpaired_root: str | None = None  # optional folder of real LQ faces for self-supervised fine-tuning
    val_root: str | None = None  # test set written by `make-testset`; None = seeded set from train_root
    val_count: int = 4
    degradation: dict = field(default_factory=lambda: {"preset": "gfpgan"})
    augment: bool = True
    batch_size: int = 4
    num_workers: int = 0


@dataclass
class SelfSupConfig:
    p_identity: float = 0.2  # probability that the clean HQ face is the input (HQ self-reconstruction)
    p_identity_final: float = 0.0  # value reached at the end of the decay
    p_identity_decay_steps: int = 10000
    redegrade: float = 0.0  # weight of the re-degradation consistency loss
    unpaired: float = 0.0  # weight of the low-pass consistency on unpaired real LQ faces
    lowpass_scale: int = 8  # unpaired consistency compares both at 1/lowpass_scale resolution
    mean_teacher: float = 0.0  # weight of the EMA-teacher pseudo-pair loss


@dataclass
class LossConfig:
    l1: float = 1.0
    pyramid: float = 1.0
    pyramid_until: int = 5000  # pyramid loss only for the first N iterations
    perceptual: float = 0.0
    style: float = 0.0
    perceptual_layers: dict | None = None  # VGG16 layer -> weight for perceptual/style; None = conv1_2..conv5_3
    lpips: float = 0.0
    lpips_net: str = "alex"  # alex | vgg (backbone of the LPIPS loss)
    gan: float = 0.0
    r1: float = 10.0
    r1_every: int = 16
    component: float = 0.0  # facial-component discriminators (eyes, mouth)
    identity: float = 0.0
    identity_weights: str | None = None  # ArcFace-ResNet18 file; identity loss is off without it
    selfsup: SelfSupConfig = field(default_factory=SelfSupConfig)


@dataclass
class TrainConfig:
    steps: int = 1000
    lr_g: float = 2e-3
    lr_d: float = 2e-3
    betas: tuple[float, float] = (0.0, 0.99)
    ema_decay: float = 0.999
    ema_rampup: bool = True  # decay min(ema_decay, (1 + t) / (10 + t)) so short runs get a useful EMA
    seed: int = 0
    out_dir: str = "runs/exp"
    ckpt_every: int = 500
    keep_last: int = 3
    val_every: int = 500
    log_every: int = 10
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)
    fidelity_range: tuple[float, float] = (1.0, 1.0)  # w sampled per sample during training


@dataclass
class Config:
    model: dict = field(default_factory=lambda: {"arch": "mmrface", "size": 512})
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str = "mmrface"
    source: str | None = None  # the file this config was read from

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def resolve_config_path(path_or_name: str | Path) -> Path:
    """A path, or a bundled config name such as `tiny` or `512_resblock`."""
    p = Path(path_or_name).expanduser()
    if p.is_file():
        return p
    for candidate in (CONFIG_DIR / f"{path_or_name}.yaml", CONFIG_DIR / str(path_or_name)):
        if candidate.is_file():
            return candidate
    known = ", ".join(sorted(q.stem for q in CONFIG_DIR.glob("*.yaml"))) if CONFIG_DIR.is_dir() else "none"
    raise UserError(f"config not found: {path_or_name} (bundled configs: {known})")


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if path in seen:
        raise UserError(f"config {path} includes itself through _base_")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read config {path}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(raw, dict):
        raise UserError(f"config {path} must be a YAML mapping")
    base = raw.pop("_base_", None)
    if base is None:
        return raw
    return deep_merge(_read_yaml((path.parent / base).resolve(), seen + (path,)), raw)


def deep_merge(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in top.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides; values are parsed as YAML (numbers, lists, null …)."""
    raw = copy.deepcopy(raw)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects key=value, got {item!r}")
        node = raw
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {key}: {part!r} is not a section")
        node[leaf] = yaml.safe_load(value)
    return raw


def _build(cls, raw: dict, where: str):
    if not isinstance(raw, dict):
        raise UserError(f"config section {where or 'top level'} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise UserError(f"unknown config key(s) in {where or 'top level'}: {unknown}; known: {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        default = getattr(cls(), name) if name in fields else None
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value or {}, f"{where}.{name}".strip("."))
        elif isinstance(default, tuple) and isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def config_from_dict(raw: dict, source: str | None = None) -> Config:
    raw = dict(raw)
    raw.setdefault("source", source)
    cfg = _build(Config, raw, "")
    if not isinstance(cfg.model, dict) or "size" not in cfg.model:
        raise UserError("config `model:` must be a mapping with at least `size`")
    return cfg


def load_config(path_or_name: str | Path, overrides: list[str] | None = None) -> Config:
    path = resolve_config_path(path_or_name)
    raw = apply_overrides(_read_yaml(path.resolve()), overrides or [])
    return config_from_dict(raw, source=str(path))
