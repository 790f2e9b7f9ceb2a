"""Which share of colour faces per batch (`data.colour_share`) restores colour faces best?

For each share, a short fine-tune of the same start (`--init`, a restorer at the recipe's size) on
the recipe's data, the same seed and steps; then the EMA is scored on the val pairs of `--val`
split by the colour of their HQ face (mean HSV saturation of the central half >= 40, as the
dataset's `colour_flags`): PSNR / LPIPS on colour faces and on grey ones.

    python benchmarks/colour_share.py --config small --init mmrface-small --val data/congress/valset \\
        --shares none,0.5,0.8 --steps 250

`none` is the folder's own share (about a fifth of the congress faces are in colour).
Choose on one part of the val identities and report on another: `--val` is the choosing part.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def split_pairs(val: Path) -> dict[str, list[tuple[Path, Path]]]:
    from mmrface.data.recipe import COLOUR_THRESHOLD, colourfulness
    from mmrface.pipeline.imageio import read_image

    groups: dict[str, list] = {"colour": [], "grey": []}
    for hq in sorted((val / "hq").iterdir()):
        lq = val / "lq" / hq.name
        if not lq.is_file():
            continue
        rgb = read_image(hq).rgb
        groups["colour" if colourfulness(rgb) >= COLOUR_THRESHOLD else "grey"].append((lq, hq))
    return groups


def score(weights: str | Path, groups: dict[str, list]) -> dict[str, dict[str, float]]:
    import torch

    from mmrface.metrics import get_metric
    from mmrface.models import load_model
    from mmrface.pipeline.imageio import read_image
    from mmrface.pipeline.restorer import to_tensor, to_uint8

    model, _ = load_model(weights)
    psnr, lpips = get_metric("psnr"), get_metric("lpips")
    out = {}
    for name, pairs in groups.items():
        p, l = [], []
        for lq, hq in pairs:
            x = to_tensor(read_image(lq).rgb[None])
            with torch.no_grad():
                y = to_uint8(model(x, w=1.0, noise_mode="const"))[0]
            h = read_image(hq).rgb
            p.append(psnr(y, h))
            l.append(lpips(y, h))
        out[name] = {"n": len(pairs), "psnr": float(np.mean(p)), "lpips": float(np.mean(l))}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="small")
    p.add_argument("--init", default="mmrface-small", help="restorer to fine-tune from (train.init)")
    p.add_argument("--val", type=Path, required=True, help="val set folder (hq/, lq/) to score on")
    p.add_argument("--shares", default="none,0.5,0.8")
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from mmrface.config import load_config
    from mmrface.train.trainer import Trainer

    groups = split_pairs(args.val)
    rows = [("start: " + args.init, score(args.init, groups))]
    for share in args.shares.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config(args.config, [
                f"data.colour_share={'null' if share == 'none' else share}", f"train.init={args.init}",
                f"train.steps={args.steps}", f"train.lr_g={args.lr}", "train.warmup_steps=0",
                "train.lr_schedule=constant", "train.val_every=0", f"train.ckpt_every={args.steps}",
                "train.fidelity_full=1.0", "train.fidelity_full_from=null", "loss.pyramid_until=0",
                "train.cpu_amp=true", "train.channels_last=true", "train.fused_modconv=false",
                f"train.out_dir={tmp}", *args.set])
            t0 = time.time()
            Trainer(cfg, progress=False).fit()
            rows.append((f"colour_share {share}", score(Path(tmp) / "latest_ema.safetensors", groups)))
            print(f"share {share}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    n = {k: len(v) for k, v in groups.items()}
    print(f"{time.strftime('%Y-%m-%d')}, `python benchmarks/colour_share.py {' '.join(argv or sys.argv[1:])}`\n")
    print(f"| run | colour faces ({n['colour']}) PSNR / LPIPS | grey faces ({n['grey']}) PSNR / LPIPS |")
    print("|---|---|---|")
    for name, s in rows:
        print(f"| {name} | {s['colour']['psnr']:.2f} dB / {s['colour']['lpips']:.4f} | "
              f"{s['grey']['psnr']:.2f} dB / {s['grey']['lpips']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
