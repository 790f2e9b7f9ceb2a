"""Reference point for the fidelity gates: a plain U-Net (no face prior) trained with L1 for a fixed
CPU time on one degradation, scored by PSNR against the bicubic floor on the benchmark sets.

    python benchmarks/unet_baseline.py --train data/congress/train --sets data/congress/bench128 \
        --degradation sr8 --minutes 8 --threads 1
    python benchmarks/unet_baseline.py ... --degradation '{mix: {gfpgan: 0.4, heavy: 0.3, sr8: 0.3}}' --lr 3e-4

It answers one question about a restorer that sits at the floor on a preset: is that preset out of
reach at this budget, or is it the restorer (its architecture, or training blind on a mixture)?
The network is a 4-level residual U-Net (16-32-64-64 channels, about 0.54 M parameters) that
predicts a residual on the input, so it starts exactly at the floor. `--degradation` is a preset
name or an inline YAML mapping, as `data.degradation` in a training config. docs/training.md has
what it measured. Output: one line per evaluation, and a JSON report with `-o`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.data import DataLoader

from mmrface.data.datasets import FaceFolderDataset, PairedTestSet
from mmrface.metrics.psnr_ssim import psnr

PRESETS = ("gfpgan", "heavy", "sr8")


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.leaky_relu(self.conv1(x), 0.2))


class UNet(nn.Module):
    """lq (B, 3, S, S) in [-1, 1] -> lq + residual; S divisible by 8. The last conv starts at zero."""

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 64)):
        super().__init__()
        self.conv_in = nn.Conv2d(3, channels[0], 3, padding=1)
        self.enc = nn.ModuleList(ResBlock(c) for c in channels)
        self.downs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(channels, channels[1:]))
        self.mid = nn.Sequential(ResBlock(channels[-1]), ResBlock(channels[-1]))
        self.ups = nn.ModuleList(nn.Conv2d(b, a, 3, padding=1) for a, b in zip(channels, channels[1:]))
        self.dec = nn.ModuleList(ResBlock(c) for c in channels[:-1])
        self.conv_out = nn.Conv2d(channels[0], 3, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.conv_in(x), 0.2)
        skips = []
        for block, down in zip(self.enc, self.downs):
            h = block(h)
            skips.append(h)  # (B, C_l, S / 2^l, S / 2^l)
            h = F.leaky_relu(down(h), 0.2)
        h = self.mid(self.enc[-1](h))
        for up, block, skip in reversed(list(zip(self.ups, self.dec, skips))):
            h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
            h = block(F.leaky_relu(up(h), 0.2) + skip)
        return x + self.conv_out(h)


def to_u8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8, rounded as a saved PNG would be."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def load_sets(root: Path, count: int, size: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    sets = {}
    for name in PRESETS:
        ds = PairedTestSet(root / name, size=size)
        items = [ds[i] for i in range(min(count, len(ds)))]
        sets[name] = (torch.stack([it["lq"] for it in items]), torch.stack([it["hq"] for it in items]))
    return sets


@torch.no_grad()
def evaluate(net: nn.Module, sets: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, dict[str, float]]:
    """Per set: mean PSNR of the input (the bicubic floor) and of the U-Net output, and the gain."""
    net.eval()
    scores = {}
    for name, (lq, hq) in sets.items():
        out = torch.cat([net(lq[i:i + 16]) for i in range(0, len(lq), 16)])
        gt = to_u8(hq)
        floor = float(np.mean([psnr(a, b) for a, b in zip(to_u8(lq), gt)]))
        model = float(np.mean([psnr(a, b) for a, b in zip(to_u8(out), gt)]))
        scores[name] = {"floor": round(floor, 3), "unet": round(model, 3), "gain": round(model - floor, 3)}
    net.train()
    return scores


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=Path, required=True, help="folder of aligned HQ training faces")
    ap.add_argument("--sets", type=Path, required=True, help="folder with gfpgan/, heavy/, sr8/ test sets")
    ap.add_argument("--degradation", default="sr8", help="preset name or inline YAML mapping")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--minutes", type=float, default=8.0, help="training time budget")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: time only)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--clip", type=float, default=1.0, help="global gradient-norm clip")
    ap.add_argument("--count", type=int, default=60, help="faces per test set")
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--out", type=Path, help="write the JSON report here")
    args = ap.parse_args(argv)
    for folder in (args.train, args.sets):
        if not folder.is_dir():
            print(f"unet_baseline: no folder {folder}", file=sys.stderr)
            return 2
    if args.size % 8:
        print(f"unet_baseline: --size must be divisible by 8, got {args.size}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    degradation = yaml.safe_load(args.degradation)
    data = FaceFolderDataset(args.train, args.size, degradation=degradation, landmarks=None, seed=args.seed)
    sets = load_sets(args.sets, args.count, args.size)
    net = UNet()
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    history, step, epoch, start = [], 0, 0, time.time()
    print(f"unet_baseline: {sum(p.numel() for p in net.parameters())} parameters, degradation {degradation}, "
          f"{len(data)} training faces", flush=True)

    def done() -> bool:
        return (args.max_steps and step >= args.max_steps) or time.time() - start > 60 * args.minutes

    while not done():
        data.set_epoch(epoch)
        epoch += 1
        for batch in DataLoader(data, batch_size=args.batch, shuffle=True, drop_last=True,
                                generator=torch.Generator().manual_seed(args.seed + epoch)):
            loss = F.l1_loss(net(batch["lq"]), batch["hq"])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), args.clip)
            opt.step()
            step += 1
            if step % args.eval_every == 0 or done():
                row = {"step": step, "minutes": round((time.time() - start) / 60, 2), "l1": round(loss.item(), 4),
                       "sets": evaluate(net, sets)}
                history.append(row)
                gains = " ".join(f"{k} {v['gain']:+.2f}" for k, v in row["sets"].items())
                print(f"step {step} ({row['minutes']} min) l1 {row['l1']}: PSNR gain over bicubic {gains} dB", flush=True)
            if done():
                break
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                        "history": history}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
