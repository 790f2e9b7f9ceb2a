"""`mmrface info --config C`: parameters and GFLOPs per part, and one forward time."""

from __future__ import annotations

import argparse

import torch

from mmrface.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", default="512", help="config file or bundled name (tiny, small, 512, ...)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--batch", type=int, default=1, help="batch size of the timed forward pass")
    p.add_argument("--no-time", action="store_true", help="skip the timed forward pass")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def run(args) -> int:
    from mmrface.config import load_config
    from mmrface.models import build_model, discriminator_for
    from mmrface.models.summary import count_params, flops_by_part, format_table, time_forward

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.set)
    try:
        model = build_model(cfg.model).eval()
        disc = discriminator_for(cfg.model)
    except (ValueError, TypeError) as exc:
        raise UserError(f"cannot build the model of {cfg.source}: {exc}") from exc
    size = cfg.model["size"]
    parts = model.parts() if hasattr(model, "parts") else {"network": model}
    x = torch.zeros(1, 3, size, size)
    total_flops, part_flops = flops_by_part(model, (x,), parts, noise_mode="zero")

    rows = []
    for name, module in parts.items():
        total, trainable = count_params(module)
        rows.append([name, f"{total:,}", f"{trainable:,}", f"{part_flops[name] / 1e9:.2f}"])
    total, trainable = count_params(model)
    other = total_flops - sum(part_flops.values())
    if abs(other) > 1e3:
        rows.append(["(other)", "", "", f"{other / 1e9:.2f}"])
    rows.append(["restorer total", f"{total:,}", f"{trainable:,}", f"{total_flops / 1e9:.2f}"])
    d_total, _ = count_params(disc)
    rows.append(["discriminator (training only)", f"{d_total:,}", f"{d_total:,}", ""])

    print(f"config: {cfg.source}  arch: {cfg.model.get('arch', 'mmrface')}  size: {size}")
    print(format_table(rows, ["part", "params", "trainable", "GFLOPs/face"]))
    if not args.no_time:
        xb = torch.randn(args.batch, 3, size, size).clamp(-1, 1)
        t = time_forward(model, (xb,), repeats=3, warmup=1, noise_mode="zero")
        print(f"forward: {t:.3f} s for batch {args.batch} on CPU ({torch.get_num_threads()} threads), "
              f"{t / args.batch:.3f} s/face (median of 3 after 1 warm-up)")
    return 0
