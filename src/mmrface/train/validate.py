"""Validation on a fixed, seeded test set: PSNR and LPIPS of the EMA generator.

The set is `data.val_root` (written by `mmrface make-testset`) when given, otherwise it is built
in memory from the first `data.val_count` training faces with the training degradation and the
fixed seed `VAL_SEED` (so runs with different training seeds are scored on the same pairs).
The network runs at fidelity w = 1 with constant noise, as the restorer does.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mmrface.config import Config

VAL_SEED = 20220529  # fixed: never derived from train.seed


def _uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, S, S) in [-1, 1] -> (B, S, S, 3) uint8."""
    return x.detach().float().clamp(-1, 1).add(1).mul(127.5).round().permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()


def build_val_pairs(cfg: Config, size: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(lq, hq) tensors (N, 3, S, S) in [-1, 1] and a description of where they came from."""
    from mmrface.data.datasets import FaceFolderDataset, PairedTestSet

    n = int(cfg.data.val_count)
    if cfg.data.val_root:
        ds = PairedTestSet(Path(cfg.data.val_root).expanduser(), size=size)
        count = len(ds) if n <= 0 else min(n, len(ds))
        where = f"{cfg.data.val_root} ({count} of {len(ds)} pairs)"
    else:
        ds = FaceFolderDataset(Path(cfg.data.train_root).expanduser(), size, cfg.data.degradation,
                               augment=False, landmarks=None, seed=VAL_SEED)
        count = max(1, n)
        where = f"{count} faces of {cfg.data.train_root}, training degradation, seed {VAL_SEED}"
    items = [ds[i % len(ds)] for i in range(count)]
    return torch.stack([it["lq"] for it in items]), torch.stack([it["hq"] for it in items]), where


class Validator:
    """Scores a generator on the validation pairs; appends rows to `val.csv` (and TensorBoard)."""

    def __init__(self, cfg: Config, size: int, device: torch.device, out_dir: Path | None = None,
                 batch_size: int = 4):
        self.lq, self.hq, self.where = build_val_pairs(cfg, size)
        self.hq_u8 = _uint8(self.hq)
        self.device, self.batch_size = device, batch_size
        self.csv_path = Path(out_dir) / "val.csv" if out_dir is not None else None
        self._lpips = None

    def _metrics(self, restored: np.ndarray) -> dict[str, float]:
        from mmrface.metrics import get_metric

        psnr = get_metric("psnr")
        if self._lpips is None:
            self._lpips = get_metric("lpips")
        vals = {"psnr": [psnr(r, h) for r, h in zip(restored, self.hq_u8)],
                "lpips": [self._lpips(r, h) for r, h in zip(restored, self.hq_u8)]}
        return {k: float(np.mean(v)) for k, v in vals.items()}

    def baseline(self) -> dict[str, float]:
        """The scores of the LQ inputs themselves (the floor the network must beat)."""
        return self._metrics(_uint8(self.lq))

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        outs = []
        for i in range(0, len(self.lq), self.batch_size):
            x = self.lq[i:i + self.batch_size].to(self.device)
            outs.append(model(x, w=1.0, noise_mode="const").float().cpu())
        model.train(was_training)
        return self._metrics(_uint8(torch.cat(outs)))

    def log(self, step: int, scores: dict[str, float]) -> None:
        if self.csv_path is None:
            return
        new = not self.csv_path.is_file()
        with open(self.csv_path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "psnr", "lpips"])
            w.writerow([step, f"{scores['psnr']:.4f}", f"{scores['lpips']:.5f}"])
