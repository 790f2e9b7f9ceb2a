"""Weight files: a sha256-checked registry, safetensors with the config inside, and prior loading.

* Registry entries (YAML: `weights_dir` + a `weights:` list of name, file, size, sha256, config,
  licence, trained_on) come from the bundled `weights_registry.yaml` (files under
  `mmrface/weights/`), from the index of checkpoints fetched by `mmrface weights fetch`
  (`weights.yaml` in the cache, see `mmrface.hub.cache`) and from the user's
  `~/.config/mmrface/weights.yaml`, or the file named by `$MMRFACE_WEIGHTS_REGISTRY`. Later files
  override earlier ones by name.
* `save_weights` writes safetensors whose metadata holds the model config (JSON), so a weight file
  alone rebuilds its network (`mmrface.models.load_model`); `load_weights` reads those, or
  converts a third-party .pth/.pt.
* Files resolved through the registry are verified against their sha256 before use.

Inference code: nothing here imports training code.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from torch import Tensor, nn

from mmrface.errors import UserError

BUNDLED_REGISTRY = Path(__file__).with_name("weights_registry.yaml")
USER_REGISTRY = Path("~/.config/mmrface/weights.yaml")
FORMAT_TAG = "mmrface-weights/1"


@dataclass
class WeightsEntry:
    """One registry row; `path` is `file` resolved against the registry's weights dir."""

    name: str
    file: str
    sha256: str
    path: Path
    registry: Path
    size: int | None = None
    config: Any = None
    licence: str = "unknown"
    trained_on: str = "unknown"


def registry_files() -> list[Path]:
    """The registries in effect: bundled, fetched (the cache index), the user's ($MMRFACE_WEIGHTS_REGISTRY or ~/.config)."""
    from mmrface.hub.cache import index_path

    files = [BUNDLED_REGISTRY] if BUNDLED_REGISTRY.is_file() else []
    if index_path().is_file():
        files.append(index_path())
    user = os.environ.get("MMRFACE_WEIGHTS_REGISTRY")
    if user:
        if not Path(user).expanduser().is_file():
            raise UserError(f"weights registry {user} (from $MMRFACE_WEIGHTS_REGISTRY) does not exist")
        files.append(Path(user).expanduser())
    elif USER_REGISTRY.expanduser().is_file():
        files.append(USER_REGISTRY.expanduser())
    return files


def read_registry(path: Path) -> list[WeightsEntry]:
    """Parse one registry file (UserError naming the file if it is malformed)."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"weights registry {path}: cannot read it ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("weights", []), list):
        raise UserError(f"weights registry {path}: expected a mapping with a 'weights:' list")
    base = (path.parent / str(data.get("weights_dir", "."))).resolve()
    entries = []
    for i, row in enumerate(data.get("weights") or []):
        if not isinstance(row, dict) or not all(row.get(k) for k in ("name", "file", "sha256")):
            raise UserError(f"weights registry {path}: entry {i + 1} needs name, file and sha256")
        file = Path(str(row["file"])).expanduser()
        entries.append(WeightsEntry(
            name=str(row["name"]), file=str(row["file"]), sha256=str(row["sha256"]).lower(),
            path=file if file.is_absolute() else base / file, registry=path,
            size=int(row["size"]) if row.get("size") is not None else None, config=row.get("config"),
            licence=str(row.get("licence", "unknown")), trained_on=str(row.get("trained_on", "unknown"))))
    return entries


def registry() -> dict[str, WeightsEntry]:
    """All registry entries by name."""
    out: dict[str, WeightsEntry] = {}
    for f in registry_files():
        out.update({e.name: e for e in read_registry(f)})
    return out


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_file(path: str | Path, sha256: str, size: int | None = None) -> None:
    """Raise UserError naming the file if it is missing or its size / sha256 differ."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"weight file {p} is missing")
    if size is not None and p.stat().st_size != size:
        raise UserError(f"weight file {p}: size {p.stat().st_size} bytes, registry says {size}")
    actual = file_sha256(p)
    if actual != sha256.lower():
        raise UserError(f"weight file {p}: sha256 mismatch (expected {sha256[:16]}..., got {actual[:16]}...)")


def resolve_weights(name_or_path: str | Path) -> Path:
    """A registry name or a file path -> an existing file (UserError listing the names otherwise)."""
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p
    entries = registry()
    entry = entries.get(str(name_or_path))
    if entry is None:
        from mmrface.hub.catalog import catalog

        if str(name_or_path) in catalog():
            raise UserError(f"weights {str(name_or_path)!r} are published but not installed: run "
                            f"`mmrface weights fetch {name_or_path}` (or `mmrface weights import FILE`)")
        known = ", ".join(sorted(entries)) or "none registered"
        raise UserError(f"weights {str(name_or_path)!r}: no such file and not a registry name (known: {known}; "
                        f"published: `mmrface weights list --remote`)")
    if not entry.path.is_file():
        raise UserError(f"weights {entry.name!r}: registered file {entry.path} is missing")
    return entry.path


def _entry_for(name_or_path: str | Path, path: Path) -> WeightsEntry | None:
    entries = registry()
    if str(name_or_path) in entries:
        return entries[str(name_or_path)]
    return next((e for e in entries.values() if e.path.resolve() == path.resolve()), None)


def save_weights(path: str | Path, state_dict: dict[str, Tensor], config: dict[str, Any],
                 extra_meta: dict[str, Any] | None = None) -> str:
    """Write safetensors with the config (JSON, under `config`) in the metadata; returns its sha256.

    `config` is either a full config with a `model:` section or a bare model section with `arch`.
    """
    from safetensors.torch import save_file

    if "model" not in config:
        config = {"model": config}
    seen, tensors = set(), {}
    for k, v in state_dict.items():  # safetensors refuses shared storage: copy any repeat
        v = v.detach().cpu().contiguous()
        ptr = (v.untyped_storage().data_ptr(), v.storage_offset())
        tensors[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    meta = {"format": FORMAT_TAG, "config": json.dumps(config, sort_keys=True)}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in (extra_meta or {}).items()})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    return file_sha256(path)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata block of a safetensors file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:
        raise UserError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0]})") from None


def load_weights(name_or_path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(state_dict, meta) from a registry name, our safetensors, or a third-party .pth/.pt.

    meta: `config` (dict with a `model:` section), `sha256` of the file, `path`, `format`, plus the
    file's other metadata (for converted files: `source_format`, `notes`).
    """
    path = resolve_weights(name_or_path)
    entry = _entry_for(name_or_path, path)
    if entry is not None:
        verify_file(path, entry.sha256, entry.size)
    sha = entry.sha256 if entry is not None else file_sha256(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        meta: dict[str, Any] = read_metadata(path)
        if "config" not in meta:
            raise UserError(f"{path}: safetensors without an mmrface config in its metadata; "
                            f"import the original checkpoint with 'mmrface weights import'")
        meta["config"] = json.loads(meta["config"])
        sd = load_file(str(path))
    else:
        from mmrface.convert import DEFAULT_FIDELITY_OF_ARCH, convert_file

        conv = convert_file(path)
        sd, meta = conv.state_dict, {"config": {"model": conv.config}, "source_format": conv.source_format,
                                     "notes": conv.notes, "format": "converted on load"}
        if conv.config["arch"] in DEFAULT_FIDELITY_OF_ARCH:  # as `weights import` records it
            meta["default_fidelity"] = str(DEFAULT_FIDELITY_OF_ARCH[conv.config["arch"]])
    meta.update(sha256=sha, path=str(path))
    return sd, meta


_CONVENTION = ("upsample", "equalized_lr", "gain_mode")


def prior_config(name_or_path: str | Path) -> dict[str, Any]:
    """StyleGAN2Generator kwargs of a prior file (a converted generator, or a GFPGAN restorer's prior)."""
    cfg = dict(load_weights(name_or_path)[1]["config"]["model"])
    arch = cfg.pop("arch", None)
    if arch == "gfpgan_v1clean":
        cfg.pop("sft_half", None)
        return cfg | {"upsample": "bilinear", "equalized_lr": False, "gain_mode": "pre"}
    if arch != "stylegan2":
        raise UserError(f"{name_or_path}: holds a {arch} model, not a StyleGAN2 prior")
    return cfg


def load_prior(generator: nn.Module, name_or_path: str | Path) -> str:
    """Load a converted prior into a StyleGAN2Generator strictly; returns the file's sha256.

    Accepts a prior file (arch stylegan2) or a GFPGANv1Clean file (its `prior.*` part). The
    generator must be built with the prior's convention (see `prior_config`).
    """
    sd, meta = load_weights(name_or_path)
    cfg = meta["config"]["model"]
    if cfg.get("arch") == "gfpgan_v1clean":
        sd = {k[len("prior."):]: v for k, v in sd.items() if k.startswith("prior.")}
        cfg = prior_config(name_or_path)
    elif cfg.get("arch") != "stylegan2":
        raise UserError(f"{name_or_path}: holds a {cfg.get('arch')} model, not a StyleGAN2 prior")
    wrong = {k: cfg[k] for k in _CONVENTION if k in cfg and getattr(generator, k, cfg[k]) != cfg[k]}
    if wrong:
        raise UserError(f"prior {name_or_path} needs a generator built with {wrong} "
                        f"(set them under model.prior)")
    from mmrface.models import load_state_strict

    load_state_strict(generator, sd, f"prior {name_or_path}")
    return meta["sha256"]
