"""Typed experiment configs loaded from YAML (one file = one experiment, BasicSR style).

    cfg = load_config("tiny", overrides=["train.steps=20", "data.train_root=~/ffhq"])   # or a file path

A config may start with `_base_: other.yaml` (path relative to the file) and override any key of
it. Unknown keys are errors (a typo never silently changes what is trained). The `model:` section
is a plain dict of constructor arguments, validated by `mmrface.models.build_model`; the other
sections are dataclasses with defaults. `Config.to_dict()` is what the trainer writes next to its
checkpoints as the record of the run.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmrface.errors import UserError

from mmrface.resources import CONFIG_DIR  # the bundled configs ship in the package: `--config 512` works anywhere


def spec(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, lo: float | None = None,
         hi: float | None = None, gt: float | None = None, choices: tuple | None = None) -> Any:
    """A config field with its allowed range: `lo <= v <= hi`, `v > gt`, or `v in choices`.

    The type comes from the annotation (int, float, bool, str, dict, `X | None`,
    `tuple[float, float]`); `check_section` enforces both and names the key in its error.
    """
    meta = {"lo": lo, "hi": hi, "gt": gt, "choices": choices}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    train_root: str = "assets/faces"  # folder of aligned HQ faces (FFHQ-style); one line to change
    unpaired_root: str | None = None  # optional folder of real LQ faces for self-supervised fine-tuning
    val_root: str | None = None  # test set written by `make-testset`; None = seeded set from train_root
    val_count: int = spec(4, lo=0)  # validation pairs; 0 = every pair of data.val_root
    degradation: dict = field(default_factory=lambda: {"preset": "gfpgan"})  # preset, overrides or {mix: ...}
    augment: bool = True
    batch_size: int = spec(4, lo=1)
    unpaired_batch_size: int = spec(0, lo=0)  # real LQ faces per step for the self-supervised terms; 0 = batch_size
    num_workers: int = spec(0, lo=0)
    colour_share: float | None = spec(None, lo=0, hi=1)  # share of colour faces per batch; None = as in the folder


@dataclass
class SelfSupConfig:
    p_identity: float = spec(0.2, lo=0, hi=1)  # probability that the clean HQ face is the input
    p_identity_final: float = spec(0.0, lo=0, hi=1)  # value reached at the end of the decay
    p_identity_decay_steps: int = spec(10000, lo=0)
    redegrade: float = spec(0.0, lo=0)  # weight of the re-degradation consistency loss
    unpaired: float = spec(0.0, lo=0)  # weight of the low-pass consistency on unpaired real LQ faces
    lowpass_scale: int = spec(8, choices=(1, 2, 4, 8, 16, 32))  # compare at 1/lowpass_scale resolution
    mean_teacher: float = spec(0.0, lo=0)  # weight of the EMA-teacher pseudo-pair loss


@dataclass
class LossConfig:
    l1: float = spec(1.0, lo=0)
    pyramid: float = spec(1.0, lo=0)
    pyramid_until: int = spec(5000, lo=0)  # pyramid loss only for the first N iterations
    perceptual: float = spec(0.0, lo=0)
    style: float = spec(0.0, lo=0)
    perceptual_layers: dict | None = None  # VGG16 layer -> weight for perceptual/style; None = conv1_2..conv5_3
    lpips: float = spec(0.0, lo=0)
    lpips_net: str = spec("alex", choices=("alex", "vgg"))  # backbone of the LPIPS loss
    # a sample's LPIPS weight x (1 - lpips_fidelity x w): 1 = none at w = 1, so full fidelity means pixel fidelity
    lpips_fidelity: float = spec(0.0, lo=0, hi=1)
    gan: float = spec(0.0, lo=0)
    r1: float = spec(10.0, lo=0)
    r1_every: int = spec(16, lo=1)
    component: float = spec(0.0, lo=0)  # facial-component discriminators (eyes, mouth)
    identity: float = spec(0.0, lo=0)
    identity_weights: str | None = None  # ArcFace-ResNet18 file; identity loss is off without it
    # a term's weight from a step on: {lpips: [[1250, 0.1]]} = the lpips weight until step 1250, then 0.1
    schedule: dict = field(default_factory=dict)
    selfsup: SelfSupConfig = field(default_factory=SelfSupConfig)


@dataclass
class TrainConfig:
    steps: int = spec(1000, lo=1)
    stop_after: int | None = spec(None, lo=1)  # end the run at this step; the lr schedule still spans `steps`
    max_minutes: float | None = spec(None, gt=0)  # end the run (checkpoint + validation) after this wall time
    lr_g: float = spec(2e-4, gt=0, hi=1)  # codec (encoder + decoder) learning rate
    lr_d: float = spec(2e-4, gt=0, hi=1)
    prior_lr_mul: float = spec(1.0, gt=0, hi=100)  # prior learning rate = lr_g * prior_lr_mul
    prior_init: str | None = None  # a converted StyleGAN2 prior (file or registry name) loaded first
    init: str | None = None  # a whole restorer (weight file or registry name) to start from (fine-tuning)
    warm_start: str | None = None  # an mmrface restorer at half this size, grown by one level (train/warm_start.py)
    betas: tuple[float, float] = spec((0.0, 0.99), lo=0, hi=0.9999)
    warmup_steps: int = spec(0, lo=0)  # learning rates rise linearly from 0 over these steps
    lr_schedule: str = spec("constant", choices=("constant", "cosine"))  # after the warm-up
    lr_final: float = spec(0.1, lo=0, hi=1)  # cosine: the final learning rate, as a share of the peak
    grad_clip: float = spec(0.0, lo=0)  # clip the generator's global gradient norm (0 = off)
    divergence_factor: float = spec(20.0, lo=0)  # a loss above factor x its running median is a blow-up (0 = off)
    divergence_window: int = spec(200, lo=10)  # steps in the running median
    divergence_patience: int = spec(3, lo=1)  # blow-up steps in a row that stop the run (each one is skipped)
    ema_decay: float = spec(0.999, lo=0, hi=1)
    ema_rampup: bool = True  # decay min(ema_decay, (1 + t) / (10 + t)) so short runs get a useful EMA
    seed: int = spec(0, lo=0)
    out_dir: str = "runs/exp"
    ckpt_every: int = spec(500, lo=1)
    keep_last: int = spec(3, lo=1)
    val_every: int = spec(500, lo=0)
    log_every: int = spec(10, lo=1)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision on CUDA (fp16 with a gradient scaler; see cpu_amp for the CPU)
    cpu_amp: bool = False  # bf16 autocast on a CPU with native bf16 (avx512_bf16 / AMX); fp32 on others
    channels_last: bool = False  # NHWC memory format for the networks and their inputs (faster CPU convs)
    fused_modconv: bool = True  # the prior's modulated convs as one grouped conv; false = the same function
                                # as a shared-weight conv (faster to train on a CPU: benchmarks/train_speed.py)
    fidelity_range: tuple[float, float] = spec((1.0, 1.0), lo=0, hi=1)  # w sampled per sample during training
    fidelity_full: float = spec(0.0, lo=0, hi=1)  # share of samples trained at exactly w = 1 (the rest in fidelity_range)
    fidelity_full_from: dict | None = field(default_factory=dict)  # {step: share}: fidelity_full from that step on (null clears a base config's)


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


def _expected(type_name: str) -> str:
    return {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
            "dict": "a mapping", "tuple[float, float]": "a list of two numbers"}.get(type_name, type_name)


def _coerce(type_name: str, value: Any) -> tuple[bool, Any]:
    """(ok, value) for one annotation; numbers written as strings (`2e-4`, which YAML reads as a
    string) are accepted for number fields."""
    if type_name.endswith(" | None"):
        return (True, None) if value is None else _coerce(type_name[: -len(" | None")], value)
    if type_name == "bool":
        return isinstance(value, bool), value
    if type_name in ("int", "float"):
        if isinstance(value, str):
            try:
                value = int(value) if type_name == "int" else float(value)
            except ValueError:
                return False, value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False, value
        if type_name == "int":
            return (isinstance(value, int) or float(value).is_integer()), int(value)
        return math.isfinite(value), float(value)
    if type_name == "str":
        return isinstance(value, str), value
    if type_name == "dict":
        return isinstance(value, dict), value
    if type_name == "tuple[float, float]":
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            return False, value
        items = [_coerce("float", v) for v in value]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    return True, value


def _check_value(key: str, f: dataclasses.Field, value: Any) -> Any:
    ok, value = _coerce(str(f.type), value)
    meta = f.metadata
    if ok and value is not None:
        items = value if isinstance(value, tuple) else (value,)
        lo, hi, gt, choices = meta.get("lo"), meta.get("hi"), meta.get("gt"), meta.get("choices")
        ok = all((lo is None or v >= lo) and (hi is None or v <= hi) and (gt is None or v > gt)
                 and (choices is None or v in choices) for v in items)
    if not ok:
        want = _expected(str(f.type).replace(" | None", "")) + (" or null" if str(f.type).endswith("None") else "")
        bounds = [f"one of {list(meta['choices'])}" if meta.get("choices") else "",
                  f">= {meta['lo']:g}" if meta.get("lo") is not None else "",
                  f"> {meta['gt']:g}" if meta.get("gt") is not None else "",
                  f"<= {meta['hi']:g}" if meta.get("hi") is not None else ""]
        rule = ", ".join(b for b in bounds if b)
        raise UserError(f"config {key} = {value!r}: expected {want}{' (' + rule + ')' if rule else ''}")
    return value


def _build(cls, raw: dict, where: str):
    if not isinstance(raw, dict):
        raise UserError(f"config section {where or 'top level'} must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise UserError(f"unknown config key(s) in {where or 'top level'}: {unknown}; known: {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        key = f"{where}.{name}".strip(".")
        sub = fields[name].default_factory if fields[name].default_factory is not dataclasses.MISSING else None
        sub_default = sub() if sub is not None else None
        if dataclasses.is_dataclass(sub_default):
            kwargs[name] = _build(type(sub_default), value or {}, key)
        else:
            kwargs[name] = _check_value(key, fields[name], value)
    cfg = cls(**kwargs)
    _check_relations(cfg, where)
    return cfg


def _check_relations(cfg: Any, where: str) -> None:
    """Checks that involve two keys of one section."""
    if isinstance(cfg, TrainConfig):
        lo, hi = cfg.fidelity_range
        if lo > hi:
            raise UserError(f"config {where}.fidelity_range = {list(cfg.fidelity_range)}: low must be <= high")
        # JSON records (checkpoints) hold the steps as strings: read them back as integers
        cfg.fidelity_full_from = {int(k) if isinstance(k, str) and k.isdigit() else k: v
                                  for k, v in (cfg.fidelity_full_from or {}).items()}
        for step, share in cfg.fidelity_full_from.items():
            if (not isinstance(step, int) or isinstance(step, bool) or step < 0 or isinstance(share, bool)
                    or not isinstance(share, (int, float)) or not 0 <= share <= 1):
                raise UserError(f"config {where}.fidelity_full_from = {cfg.fidelity_full_from!r}: expected "
                                "{step: share} with integer steps >= 0 and shares in [0, 1]")


def config_from_dict(raw: dict, source: str | None = None) -> Config:
    raw = dict(raw)
    raw.setdefault("source", source)
    cfg = _build(Config, raw, "")
    if not isinstance(cfg.model, dict) or "size" not in cfg.model:
        raise UserError("config `model:` must be a mapping with at least `size`")
    from mmrface.data.degrade import Degradation

    try:
        Degradation.from_config(cfg.data.degradation)
    except UserError as exc:
        raise UserError(f"config data.degradation: {exc}") from None
    return cfg


def load_config(path_or_name: str | Path, overrides: list[str] | None = None) -> Config:
    path = resolve_config_path(path_or_name)
    raw = apply_overrides(_read_yaml(path.resolve()), overrides or [])
    return config_from_dict(raw, source=str(path))
