"""The run log: rank 0 prints each line (above the progress bar) and appends it to out_dir/run.log;
scalars also go to TensorBoard when the `tensorboard` package is installed (optional)."""

from __future__ import annotations

import time
from pathlib import Path

import torch


class RunLog:
    """`info(line)` on rank 0; a no-op on the other ranks."""

    def __init__(self, out_dir: Path | None, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = Path(out_dir) / "run.log" if (enabled and out_dir is not None) else None
        self.tb = None
        self.tb_status = "TensorBoard: off (rank > 0)" if not enabled else "TensorBoard: off (not installed)"
        if enabled and tensorboard and out_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(Path(out_dir) / "tb"))
                self.tb_status = f"TensorBoard: {Path(out_dir) / 'tb'}"
            except ImportError:
                pass

    def info(self, line: str) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        tqdm.write(line)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"{prefix}/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def precision(run) -> str:
    if run.amp:
        return "fp16 autocast (CUDA)"
    if run.cpu_bf16:
        return "bf16 autocast (CPU)"
    if run.cfg.train.cpu_amp and run.device.type == "cpu":
        return "fp32 (train.cpu_amp: this CPU has no native bf16)"
    return "fp32"


def colour_line(t) -> str:
    share = t.cfg.data.colour_share
    if share is None:
        return ""
    n = sum(t.dataset.colour_flags())
    return f", colour-balanced: {share:g} of each batch from the {n} colour faces"


def header_lines(t) -> list[str]:
    """The first lines of a run: what is trained, on what, with which losses (a `Trainer`)."""
    cfg, ctx, tc = t.cfg, t.ctx, t.cfg.train
    n_g = sum(p.numel() for p in t.G.parameters())
    n_t = sum(p.numel() for p in t.G.parameters() if p.requires_grad)
    full = f" (w = 1 for a share of {tc.fidelity_full:g})" if tc.fidelity_full else ""
    for start, share in sorted((tc.fidelity_full_from or {}).items()):
        full += f"; {share:g} from step {start}"
    lines = [f"mmrface train: {cfg.name} ({cfg.source}) -> {t.out_dir}",
             f"device: {t.device}, ranks: {ctx.world}, threads: {torch.get_num_threads()}, precision: {precision(t.run)}"
             f", memory format: {'channels_last' if tc.channels_last else 'contiguous'}"
             f", modulated convs: {'fused' if tc.fused_modconv else 'unfused'}, data workers: {cfg.data.num_workers}",
             f"model: {cfg.model.get('arch', 'mmrface')} {t.G.size} px, {n_g:,} parameters ({n_t:,} trained)",
             t.prior_line,
             f"data: {len(t.dataset)} faces in {cfg.data.train_root} (landmarks: "
             f"{'used' if t.dataset.landmarks is not None else 'not used'}), degradation {t.degradation.label}, "
             f"batch {cfg.data.batch_size} per rank x {ctx.world}{colour_line(t)}",
             f"steps: {tc.steps}, lr G {tc.lr_g:g} D {tc.lr_d:g}, betas {list(tc.betas)}, EMA {tc.ema_decay:g}"
             f"{' (ramp-up)' if tc.ema_rampup else ''}, fidelity w in {list(tc.fidelity_range)}{full}, seed {tc.seed}"]
    if t.unpaired is not None:
        lines.append(f"unpaired: {len(t.unpaired)} real LQ faces in {cfg.data.unpaired_root}")
    lines += t.obj.report
    if t.resumed_from is not None:
        lines.append(f"resumed from {t.resumed_from} at step {t.start}")
    if t.validator is not None:
        base = t.validator.baseline()
        lines.append(f"validation: {t.validator.where}; LQ inputs score PSNR {base['psnr']:.2f} dB "
                     f"LPIPS {base['lpips']:.4f}")
    lines.append(t.log.tb_status)
    return lines
