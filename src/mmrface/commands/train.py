"""`mmrface train --config C [--resume] [--set key=value ...] [--out DIR]`.

Under `torchrun --nproc_per_node N -m mmrface train ...` the same command trains data-parallel
(gloo on CPU, nccl on GPUs); only rank 0 writes files and logs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mmrface.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", default=None,
                   help="config file or bundled name (tiny, small, 512, ...); with --resume and --out it "
                        "defaults to OUT/config.yaml")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the output folder")
    p.add_argument("--allow-changes", action="store_true",
                   help="with --resume: continue even if the data, loss or optimiser settings or the world size "
                        "changed since the checkpoint (the model must stay the same)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.steps=20 --set data.train_root=~/faces")
    p.add_argument("--out", default=None, help="output folder (overrides train.out_dir)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads per process (default: torch's choice; torchrun sets 1)")


def run(args) -> int:
    from mmrface.config import load_config

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    config = args.config
    if config is None:
        saved = Path(args.out).expanduser() / "config.yaml" if args.out else None
        if not (args.resume and saved is not None and saved.is_file()):
            raise UserError("--config is required (or --resume with --out pointing to a run folder)")
        config = saved
    cfg = load_config(config, args.set)
    if args.out:
        cfg.train.out_dir = str(args.out)
    from mmrface.train.trainer import train

    train(cfg, resume=args.resume, progress=not args.no_progress, allow_changes=args.allow_changes)
    return 0
