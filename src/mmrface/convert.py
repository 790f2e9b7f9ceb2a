"""Convert third-party StyleGAN2 / GFPGAN checkpoints into our key layout (shapes and values exact).

Supported sources (layouts in tests/layouts/README.md), auto-detected from their keys:

* `rosinality`     stylegan2-pytorch `Generator` (`g_ema` [+ `latent_avg`], also `550000.pt`)
* `basicsr`        BasicSR `StyleGAN2Generator` (GFPGAN's `StyleGAN2_512_Cmul1_..._800k.pth`)
* `gfpgan-clean`   GFPGAN `StyleGAN2GeneratorClean` (`params_ema`)
* `gfpgan-v1clean` the whole GFPGANv1Clean restorer (`GFPGANv1.3.pth`, `GFPGANv1.4.pth`)
* `arcface`        GFPGAN's ArcFace ResNet18 (`arcface_resnet18.pth`), bare state dict

rosinality and BasicSR priors become our generator with `upsample="blur", equalized_lr=True,
gain_mode="post"`; GFPGAN-clean ones with `upsample="bilinear", equalized_lr=False,
gain_mode="pre"`; so every value is copied unchanged, only keys and a few shapes change.
Every source key must be consumed and every target key filled, or the import fails.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from mmrface.errors import UserError
from mmrface.models.ops import make_fir_kernel
from mmrface.models.stylegan2 import BASE_CHANNELS, channel_table

FORMATS = ("gfpgan-clean", "gfpgan-v1clean", "basicsr", "rosinality", "arcface", "mmrface")
RESAVE_HINT = ("python -c \"import torch; c=torch.load('{src}', weights_only=False); c.pop('args', None); "
               "torch.save(c, '{dst}')\"")


@dataclass
class Converted:
    """A state dict in our key layout plus the model config that rebuilds its network."""

    state_dict: dict[str, Tensor]
    config: dict[str, Any]  # the `model:` section, with `arch`
    source_format: str
    found: str  # one line: what was found in the file
    notes: list[str] = field(default_factory=list)


# ---- reading files ------------------------------------------------------------------------------
def read_checkpoint(path: str | Path) -> Any:
    """Load a .pth/.pt (torch.load, weights_only=True) or .safetensors file; UserError if unreadable."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except Exception as exc:  # safetensors raises several types for corrupt headers
            raise UserError(f"{p}: not a readable safetensors file ({_first_line(exc)})") from None
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if "Weights only load failed" in msg and "Unsupported global" in msg:
            what = re.search(r"Unsupported global: GLOBAL ([\w.]+)", msg)
            dst = p.with_name(p.stem + "_clean" + p.suffix)
            raise UserError(
                f"{p} needs pickled Python code to load ({what[1] if what else 'a Python object'}, e.g. the "
                f"'args' Namespace of a rosinality train.py checkpoint), which is refused for safety; if you "
                f"trust the file, re-save it without that entry: {RESAVE_HINT.format(src=p, dst=dst)}") from None
        raise UserError(f"{p}: not a PyTorch checkpoint ({_first_line(exc)})") from None
    except Exception as exc:  # truncated zip, random bytes, ...
        raise UserError(f"{p}: cannot read it as a PyTorch checkpoint, truncated or not a checkpoint "
                        f"({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def unwrap(obj: Any, name: str = "checkpoint") -> tuple[dict[str, Tensor], Tensor | None, str]:
    """Find the state dict in a container: params_ema > params > g_ema > state_dict > bare dict.

    Returns (state dict with any `module.` prefix stripped, latent_avg or None, description).
    """
    if not isinstance(obj, dict):
        raise UserError(f"{name}: holds a {type(obj).__name__}, not a state dict")
    latent_avg = obj.get("latent_avg") if isinstance(obj.get("latent_avg"), Tensor) else None
    for key in ("params_ema", "params", "g_ema", "state_dict"):
        if _is_state_dict(obj.get(key)):
            sd, where = obj[key], f"container keys {sorted(obj)}; using '{key}'"
            break
    else:
        sd = {k: v for k, v in obj.items() if k != "latent_avg"}
        if not _is_state_dict(sd):
            raise UserError(f"{name}: no state dict found (top-level keys: {sorted(map(str, obj))[:8]})")
        where = "bare state dict"
    if all(k.startswith("module.") for k in sd):
        sd, where = {k[len("module."):]: v for k, v in sd.items()}, where + ", 'module.' prefix stripped"
    return dict(sd), latent_avg, where


def detect_format(sd: dict[str, Tensor]) -> str:
    """Name the source layout from its keys (UserError if none fits)."""
    keys = set(sd)
    if "conv_body_first.0.weight" in keys:
        raise UserError("this is the original GFPGANv1 (GFPGANv1.pth, FIR up/down-sampling with compiled ops); "
                        "only the clean architecture (GFPGANv1.2-clean/1.3/1.4) is supported")
    if "conv_body_first.weight" in keys and any(k.startswith("stylegan_decoder.") for k in keys):
        return "gfpgan-v1clean"
    if "input.input" in keys and "style.1.weight" in keys:
        return "rosinality"
    if "style_conv1.activate.bias" in keys:
        return "basicsr"
    if "style_conv1.bias" in keys and "style_mlp.1.weight" in keys:
        return "gfpgan-clean"
    if "fc5.weight" in keys and "layer1.0.bn0.weight" in keys:
        return "arcface"
    if "mapping.layers.0.weight" in keys or "prior.mapping.layers.0.weight" in keys:
        return "mmrface"
    if "final_linear.0.weight" in keys and "convs.0.0.weight" in keys:
        raise UserError("this is a StyleGAN2 discriminator, not a generator or restorer")
    raise UserError(f"unknown checkpoint layout (first keys: {sorted(keys)[:6]}); expected a StyleGAN2 "
                    f"generator (rosinality, BasicSR, GFPGAN-clean), GFPGANv1.3/1.4 or ArcFace-ResNet18")


# ---- key rules ----------------------------------------------------------------------------------
Rule = tuple[str, "str | Callable[[re.Match], str] | None", "str | None"]  # pattern, target (None: drop), op
_L, _RGB = r"(conv1|convs\.\d+)", r"(to_rgb1|to_rgbs\.\d+)"


def _mlp(step: int) -> Callable[[re.Match], str]:
    def name(m: re.Match) -> str:
        i = int(m[1]) - 1
        if i % step:
            raise UserError(f"unexpected mapping key {m[0]}")
        return f"mapping.layers.{i // step}.{m[2]}"
    return name


RULES: dict[str, list[Rule]] = {
    "rosinality": [
        (r"style\.(\d+)\.(weight|bias)", _mlp(1), None),
        (r"input\.input", "const.weight", None),
        (rf"{_L}\.conv\.weight", r"\1.conv.weight", "squeeze0"),
        (rf"{_L}\.conv\.modulation\.(weight|bias)", r"\1.conv.modulation.\2", None),
        (rf"{_L}\.noise\.weight", r"\1.noise_strength", None),
        (rf"{_L}\.activate\.bias", r"\1.bias", None),
        (rf"{_RGB}\.conv\.weight", r"\1.conv.weight", "squeeze0"),
        (rf"{_RGB}\.conv\.modulation\.(weight|bias)", r"\1.conv.modulation.\2", None),
        (rf"{_RGB}\.bias", r"\1.bias", "flat"),
        (r"convs\.\d+\.conv\.blur\.kernel|to_rgbs\.\d+\.upsample\.kernel", None, "fir"),
        (r"noises\.noise_(\d+)", r"noises.noise\1", None),
    ],
}
_BASICSR_AND_CLEAN: list[Rule] = [  # identical in BasicSR and GFPGAN-clean
    (r"constant_input\.weight", "const.weight", None),
    (r"style_(conv1|convs\.\d+)\.modulated_conv\.weight", r"\1.conv.weight", "squeeze0"),
    (r"style_(conv1|convs\.\d+)\.modulated_conv\.modulation\.(weight|bias)", r"\1.conv.modulation.\2", None),
    (r"style_(conv1|convs\.\d+)\.weight", r"\1.noise_strength", None),  # noise strength, not a conv weight
    (rf"{_RGB}\.modulated_conv\.weight", r"\1.conv.weight", "squeeze0"),
    (rf"{_RGB}\.modulated_conv\.modulation\.(weight|bias)", r"\1.conv.modulation.\2", None),
    (rf"{_RGB}\.bias", r"\1.bias", "flat"),
    (r"noises\.noise(\d+)", r"noises.noise\1", None),
]
RULES["basicsr"] = [
    (r"style_mlp\.(\d+)\.(weight|bias)", _mlp(1), None),
    (r"style_(conv1|convs\.\d+)\.activate\.bias", r"\1.bias", None),  # FusedLeakyReLU bias (C,)
] + _BASICSR_AND_CLEAN
RULES["gfpgan-clean"] = [
    (r"style_mlp\.(\d+)\.(weight|bias)", _mlp(2), None),  # LeakyReLU modules sit at the even indices
    (r"style_(conv1|convs\.\d+)\.bias", r"\1.bias", "flat"),  # (1, C, 1, 1)
] + _BASICSR_AND_CLEAN
UNET_RULES: list[Rule] = [
    (r"conv_body_first\.(weight|bias)", r"encoder.first.\1", None),
    (r"conv_body_down\.(\d+)\.(conv1|conv2|skip)\.(weight|bias)", r"encoder.down.\1.\2.\3", None),
    (r"final_conv\.(weight|bias)", r"encoder.last.\1", None),
    (r"final_linear\.(weight|bias)", r"encoder.to_wplus.\1", None),
    (r"conv_body_up\.(\d+)\.(conv1|conv2|skip)\.(weight|bias)", r"decoder.up.\1.\2.\3", None),
    (r"toRGB\.(\d+)\.(weight|bias)", r"decoder.to_rgbs.\1.\2", None),
    (r"condition_(scale|shift)\.(\d+)\.([02])\.(weight|bias)", r"decoder.sft_\1.\2.\3.\4", None),
]
_OPS = {"squeeze0": lambda t: t.reshape(t.shape[1:]), "flat": lambda t: t.reshape(-1)}


def apply_rules(sd: dict[str, Tensor], rules: list[Rule], fmt: str) -> dict[str, Tensor]:
    """Rename every key by the first matching rule; an unmatched key is an error (nothing is lost)."""
    out: dict[str, Tensor] = {}
    compiled = [(re.compile(p), t, op) for p, t, op in rules]
    unmatched = []
    for key, value in sd.items():
        for pattern, target, op in compiled:
            m = pattern.fullmatch(key)
            if m is None:
                continue
            if target is None:  # a constant FIR buffer: dropped, we rebuild it
                if op == "fir" and not value.is_meta and value.shape == (4, 4):
                    if not torch.allclose(value.float(), make_fir_kernel() * 4, atol=1e-6):
                        raise UserError(f"{key}: FIR kernel differs from [1,3,3,1]; unsupported resampling kernel")
                break
            name = target(m) if callable(target) else m.expand(target)
            out[name] = _OPS[op](value) if op else value
            break
        else:
            unmatched.append(key)
    if unmatched:
        raise UserError(f"{len(unmatched)} key(s) not part of a {fmt} checkpoint, e.g. {unmatched[:4]}; "
                        f"try another --format")
    return out


# ---- config inference ---------------------------------------------------------------------------
CONVENTIONS = {
    "rosinality": {"upsample": "blur", "equalized_lr": True, "gain_mode": "post"},
    "basicsr": {"upsample": "blur", "equalized_lr": True, "gain_mode": "post"},
    "gfpgan-clean": {"upsample": "bilinear", "equalized_lr": False, "gain_mode": "pre"},
}


def _num(x: float) -> float | int:
    return int(x) if float(x).is_integer() else float(x)


def infer_generator_config(sd: dict[str, Tensor]) -> dict[str, Any]:
    """Size, style dim, MLP depth and channel table of a generator state dict in our keys."""
    try:
        style_dim = sd["mapping.layers.0.weight"].shape[1]
        n_mlp = sum(1 for k in sd if re.fullmatch(r"mapping\.layers\.\d+\.weight", k))
        n_levels = sum(1 for k in sd if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k))
        table = {4: sd["const.weight"].shape[1]}
        table.update({2 ** (r + 3): sd[f"convs.{2 * r}.conv.weight"].shape[0] for r in range(n_levels)})
    except KeyError as exc:
        raise UserError(f"incomplete StyleGAN2 generator: no {exc.args[0]!r}") from None
    size = 2 ** (n_levels + 2)
    if size not in BASE_CHANNELS or size < 8:
        raise UserError(f"unsupported generator size {size} px ({n_levels} to-RGB levels)")
    narrow = table[4] / 512
    cm = table[size] / (BASE_CHANNELS[size] * narrow) if size >= 64 else 2
    for cand_narrow, cand_max in ((narrow, 512), (1.0, table[4])):
        cand_cm = table[size] / (BASE_CHANNELS[size] * cand_narrow) if size >= 64 else cm
        if channel_table(size, cand_cm, cand_narrow, cand_max) == table:
            cfg = {"arch": "stylegan2", "size": size, "style_dim": style_dim, "n_mlp": n_mlp,
                   "channel_multiplier": _num(cand_cm), "narrow": _num(cand_narrow)}
            if cand_max != 512:
                cfg["max_channels"] = cand_max
            return cfg
    raise UserError(f"channel table {table} is not a StyleGAN2 table (channel multiplier x narrow)")


def _target_state(config: dict[str, Any]) -> dict[str, Tensor]:
    """Our model's state dict on the meta device (keys and shapes, no memory), built by the registry."""
    from mmrface.models import build_model

    with torch.device("meta"):
        model = build_model(config)
    return model.state_dict()


def _fill_generator(sd: dict[str, Tensor], cfg: dict[str, Any], latent_avg: Tensor | None, prefix: str,
                    notes: list[str]) -> None:
    """Add the noise buffers and latent_avg a source may lack (550000.pt; GFPGAN files have no latent_avg)."""
    n = 2 * (cfg["size"].bit_length() - 1) - 3
    meta = sd[prefix + "const.weight"].is_meta
    missing = [i for i in range(n) if f"{prefix}noises.noise{i}" not in sd]
    if missing:
        gen = torch.Generator().manual_seed(0)
        for i in missing:
            side = 2 ** ((i + 5) // 2)
            sd[f"{prefix}noises.noise{i}"] = (torch.empty(1, 1, side, side, device="meta") if meta
                                              else torch.randn(1, 1, side, side, generator=gen))
        notes.append(f"{len(missing)} noise buffers missing in the source: regenerated from seed 0 "
                     f"('const' noise differs from the original's)")
    if latent_avg is not None:
        sd[prefix + "latent_avg"] = latent_avg.reshape(-1).float()
        return
    sd[prefix + "latent_avg"] = torch.empty(cfg["style_dim"], device="meta") if meta else _mean_w(sd, cfg, prefix)
    notes.append("no latent_avg in the source: computed as the mean of 4096 mapped z (seed 0), for truncation")


def _mean_w(sd: dict[str, Tensor], cfg: dict[str, Any], prefix: str) -> Tensor:
    from mmrface.models.stylegan2 import MappingNetwork

    conv = {k: cfg[k] for k in ("equalized_lr", "gain_mode")}
    mapping = MappingNetwork(cfg["style_dim"], cfg["n_mlp"], cfg.get("lr_mlp", 0.01), **conv)
    mapping.load_state_dict({k[len(prefix + "mapping."):]: v for k, v in sd.items()
                             if k.startswith(prefix + "mapping.")})
    z = torch.randn(4096, cfg["style_dim"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return mapping(z).mean(0)


def check_complete(sd: dict[str, Tensor], config: dict[str, Any]) -> None:
    """Every target key present with its shape, and nothing else."""
    target = _target_state(config)
    missing = [k for k in target if k not in sd]
    extra = [k for k in sd if k not in target]
    bad = [f"{k}: {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in target.items()
           if k in sd and sd[k].shape != v.shape]
    if missing or extra or bad:
        raise UserError(f"converted checkpoint does not fit {config['arch']} {config.get('size', '')}: "
                        f"missing {missing[:3]}, unexpected {extra[:3]}, wrong shape {bad[:3]}")


# ---- entry points -------------------------------------------------------------------------------
def convert_state(obj: Any, fmt: str = "auto", name: str = "checkpoint") -> Converted:
    """Convert a loaded checkpoint object (any supported container) to our layout."""
    sd, latent_avg, where = unwrap(obj, name)
    detected = detect_format(sd)
    fmt = detected if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose from auto, {', '.join(FORMATS)}")
    notes: list[str] = []
    if fmt != detected:
        notes.append(f"keys look like {detected}, converting as {fmt} as asked")
    if fmt == "arcface":
        from mmrface.models.arcface import convert_arcface

        out, config = convert_arcface(sd)
    elif fmt == "mmrface":
        raise UserError(f"{name}: already in mmrface layout (nothing to convert)")
    elif fmt == "gfpgan-v1clean":
        dec = {k[len("stylegan_decoder."):]: v for k, v in sd.items() if k.startswith("stylegan_decoder.")}
        out = apply_rules({k: v for k, v in sd.items() if not k.startswith("stylegan_decoder.")}, UNET_RULES, fmt)
        prior = apply_rules(dec, RULES["gfpgan-clean"], fmt)
        g = infer_generator_config(prior) | CONVENTIONS["gfpgan-clean"]
        _fill_generator(prior, g, latent_avg, "", notes)
        out.update({"prior." + k: v for k, v in prior.items()})
        sft = out["decoder.sft_scale.0.2.weight"].shape[0]
        config = {"arch": "gfpgan_v1clean", "size": g["size"], "style_dim": g["style_dim"],
                  "channel_multiplier": g["channel_multiplier"], "n_mlp": g["n_mlp"], "narrow": g["narrow"],
                  "sft_half": sft * 2 == prior["convs.0.conv.weight"].shape[0]}
    else:
        out = apply_rules(sd, RULES[fmt], fmt)
        config = infer_generator_config(out) | CONVENTIONS[fmt]
        _fill_generator(out, config, latent_avg, "", notes)
    check_complete(out, config)
    desc = ", ".join(f"{k}={v}" for k, v in config.items() if k != "arch")
    found = f"{fmt} {config['arch']} ({desc}); {where}; {len(sd)} tensors -> {len(out)}"
    return Converted(out, config, fmt, found, notes)


# The fidelity w that reproduces the original network: GFPGAN's own code runs its SFT at full strength.
DEFAULT_FIDELITY_OF_ARCH = {"gfpgan_v1clean": 1.0}


def import_checkpoint(src: str | Path, out: str | Path, fmt: str = "auto",
                      extra_meta: dict[str, Any] | None = None) -> tuple[Converted, str]:
    """Convert `src` and write it as our safetensors `out` (temp name, then renamed); returns (conversion, sha256).

    The file's metadata records the source (format, file name, sha256), the conversion notes and,
    for architectures with one, the default fidelity that reproduces the original network.
    """
    import os

    from mmrface.weights import file_sha256, save_weights

    out = Path(out)
    conv = convert_file(src, fmt)
    meta: dict[str, Any] = {"source_format": conv.source_format, "source_file": Path(src).name,
                            "source_sha256": file_sha256(src), "notes": conv.notes}
    if conv.config["arch"] in DEFAULT_FIDELITY_OF_ARCH:
        meta["default_fidelity"] = str(DEFAULT_FIDELITY_OF_ARCH[conv.config["arch"]])
    meta.update(extra_meta or {})
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        sha = save_weights(tmp, conv.state_dict, {"model": conv.config}, meta)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return conv, sha


def convert_file(path: str | Path, fmt: str = "auto") -> Converted:
    """Read a checkpoint file and convert it (see `convert_state`)."""
    obj = read_checkpoint(path)
    try:
        return convert_state(obj, fmt, name=str(path))
    except UserError as exc:
        msg = str(exc)
        raise UserError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
