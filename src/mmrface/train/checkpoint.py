"""Training checkpoints: safetensors for the weights and the optimiser tensors, JSON for the rest.

A checkpoint at step s is three files in `out_dir/checkpoints/`:
    step_{s:08d}.safetensors        networks, keys "<net>.<param>" (net: g, g_ema, d, comp)
    step_{s:08d}.optim.safetensors  optimiser tensors, keys "<opt>.<param index>.<state key>"
    step_{s:08d}.json               step, optimiser param groups, scaler state, config, file names
Each file is written to a temporary name and renamed into place (os.replace, atomic on POSIX);
the JSON is written last, so a checkpoint exists only once it is complete. Older checkpoints
beyond `keep_last` are deleted. All randomness of the trainer is derived from (seed, step, rank),
so the step is all the RNG state a resume needs.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmrface.errors import UserError

CKPT_FORMAT = "mmrface-train-checkpoint/1"
_NAME = re.compile(r"^step_(\d{8})\.json$")


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def publish(tmp: Path, path: Path) -> None:
    """Give a finished temporary file the usual permissions (umask) and rename it into place."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    os.replace(tmp, path)


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: Path,
                            metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    tmp = _tmp(path)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    publish(tmp, path)


def atomic_write_text(text: str, path: Path) -> None:
    tmp = _tmp(path)
    tmp.write_text(text, encoding="utf-8")
    publish(tmp, path)


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Split an optimiser's state dict into tensors (for safetensors) and JSON-able param groups."""
    sd = opt.state_dict()
    tensors = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                value = torch.tensor(value)
            tensors[f"{prefix}.{pid}.{key}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, groups


def load_optimizer(opt: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor],
                   groups: list[dict]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        head, pid, name = key.rsplit(".", 2)
        if head == prefix:
            state.setdefault(int(pid), {})[name] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in groups]
    opt.load_state_dict({"state": state, "param_groups": groups})


def checkpoint_paths(ckpt_dir: Path, step: int) -> tuple[Path, Path, Path]:
    stem = ckpt_dir / f"step_{step:08d}"
    return stem.with_suffix(".safetensors"), Path(f"{stem}.optim.safetensors"), stem.with_suffix(".json")


def save_checkpoint(ckpt_dir: str | Path, step: int, nets: dict[str, nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer], extra: dict[str, Any],
                    keep_last: int = 3) -> Path:
    """Write the checkpoint of `step` atomically, prune old ones; returns the JSON path."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    w_path, o_path, j_path = checkpoint_paths(ckpt_dir, step)
    weights = {f"{name}.{k}": v for name, net in nets.items() for k, v in net.state_dict().items()}
    atomic_save_safetensors(weights, w_path, {"format": CKPT_FORMAT, "step": str(step)})
    opt_tensors, groups = {}, {}
    for name, opt in optimizers.items():
        t, g = optimizer_tensors(opt, name)
        opt_tensors.update(t)
        groups[name] = g
    atomic_save_safetensors(opt_tensors, o_path, {"format": CKPT_FORMAT, "step": str(step)})
    record = {"format": CKPT_FORMAT, "step": step, "weights": w_path.name, "optim": o_path.name,
              "nets": sorted(nets), "optimizers": groups, **extra}
    atomic_write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", j_path)
    prune(ckpt_dir, keep_last)
    return j_path


def list_checkpoints(ckpt_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (JSON and both safetensors present), sorted by step."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = []
    for p in ckpt_dir.iterdir():
        m = _NAME.match(p.name)
        if m:
            step = int(m.group(1))
            w, o, _ = checkpoint_paths(ckpt_dir, step)
            if w.is_file() and o.is_file():
                found.append((step, p))
    return sorted(found)


def prune(ckpt_dir: Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` checkpoints (JSON first, so none is half-deleted)."""
    if keep_last <= 0:
        return
    for step, j_path in list_checkpoints(ckpt_dir)[:-keep_last]:
        w, o, _ = checkpoint_paths(ckpt_dir, step)
        for p in (j_path, w, o):
            p.unlink(missing_ok=True)


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    found = list_checkpoints(ckpt_dir)
    return found[-1][1] if found else None


def load_checkpoint(j_path: str | Path, nets: dict[str, nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer], device: torch.device) -> dict[str, Any]:
    """Restore networks and optimisers in place from a checkpoint JSON; returns the JSON record."""
    from safetensors.torch import load_file

    j_path = Path(j_path)
    try:
        record = json.loads(j_path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read checkpoint {j_path}: {exc}") from None
    if record.get("format") != CKPT_FORMAT:
        raise UserError(f"{j_path} is not an mmrface training checkpoint")
    if sorted(nets) != record["nets"]:
        raise UserError(f"{j_path} holds networks {record['nets']}, this config trains {sorted(nets)} "
                        "(the losses that need a discriminator changed?)")
    weights = load_file(str(j_path.with_name(record["weights"])), device=str(device))
    for name, net in nets.items():
        sd = {k[len(name) + 1:]: v for k, v in weights.items() if k.startswith(name + ".")}
        try:
            net.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise UserError(f"{j_path}: network {name!r} does not fit this config "
                            f"({str(exc).splitlines()[0]})") from None
    # on the CPU: load_state_dict moves moments to their parameter's device and keeps Adam's `step`
    # where torch wants it
    opt_tensors = load_file(str(j_path.with_name(record["optim"])), device="cpu")
    for name, opt in optimizers.items():
        if name not in record["optimizers"]:
            raise UserError(f"{j_path} has no state for optimiser {name!r}")
        load_optimizer(opt, name, opt_tensors, record["optimizers"][name])
    return record
