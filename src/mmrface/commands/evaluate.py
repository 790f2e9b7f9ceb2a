"""`mmrface evaluate`: score models and folders of restored outputs on a `make-testset` test set.

    mmrface evaluate --testset testsets/gfpgan --weights mmrface-small other=run/ema.safetensors \\
        --outputs gfpgan14=results/gfpgan14 [--metrics psnr,ssim,lpips,niqe,id_dlib,lmd_dlib] \\
        [--fid-weights pt_inception-2015-12-05-6726825d.pth] [-w 0.5] [-o results/evaluate/gfpgan]

Without --weights and --outputs it scores `--weights auto` (the best installed model). A published
name (`gfpgan-v1.4`) is fetched on first use unless --no-download; each model runs at its own
default fidelity (1 for GFPGAN weights) unless -w is given.

Writes REPORT_DIR/report.json, report.md (mean ± std table, one row per method) and report.png,
and prints the table. The `bicubic` floor (the LQ input itself) is always a row unless
--no-baseline. How LQ faces are restored and scored is stated in `mmrface.evaluation.methods`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from mmrface.errors import UserError
from mmrface.hub.choose import WEIGHTS_HELP, add_weights_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    from mmrface.evaluation.runner import DEFAULT_METRICS

    p.add_argument("--testset", required=True, type=Path, help="folder written by `mmrface make-testset`")
    p.add_argument("--weights", nargs="+", action="extend", default=[], metavar="[NAME=]WEIGHTS",
                   help="weights to evaluate, each " + WEIGHTS_HELP + " (method name: NAME, the registry name or "
                        "the file stem; default: auto when no --outputs are given)")
    p.add_argument("--outputs", nargs="+", action="extend", default=[], metavar="[NAME=]DIR",
                   help="folders of already restored images, matched to the test pairs by file name")
    p.add_argument("--baseline", default="bicubic", choices=["bicubic"],
                   help="the floor row: the LQ input itself (default)")
    p.add_argument("--no-baseline", action="store_true", help="leave the bicubic floor out")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                   help=f"comma-separated metric names (default: {','.join(DEFAULT_METRICS)}; also "
                        "psnr_y, ssim_y, lpips_vgg, fid)")
    p.add_argument("--fid-weights", default=None, help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth, or "
                                                       "pytorch-fid-inception once fetched; turns FID on (off without it)")
    add_weights_arguments(p, weights=False)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="report folder (default: results/evaluate/<test set folder name>)")
    p.add_argument("--limit", type=int, default=None, help="score only the first N pairs")
    p.add_argument("--crop-border", type=int, default=0, help="pixels cropped from each side for PSNR/SSIM/NIQE")
    p.add_argument("--examples", type=int, default=3, help="example pairs shown in report.png (default 3)")
    p.add_argument("--save-outputs", action="store_true",
                   help="also write each model's restored images to REPORT_DIR/outputs/<method>/")
    p.add_argument("--no-figure", action="store_true", help="skip report.png")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def build_methods(args: argparse.Namespace) -> list:
    """Baseline, then one method per --weights, then one per --outputs."""
    from mmrface.evaluation.methods import BicubicBaseline, ModelMethod, OutputsMethod, default_name, split_named

    from mmrface.hub.choose import choose

    methods = [] if args.no_baseline else [BicubicBaseline()]
    for value in args.weights or ([] if args.outputs else ["auto"]):
        name, source = split_named(value)
        choice = choose(source, no_download=args.no_download, progress=not args.quiet)
        methods.append(ModelMethod(name or default_name(choice.weights), weights=choice.weights,
                                   fidelity=args.fidelity, device=args.device))
        print(f"mmrface: weights: {choice.weights} ({choice.reason})", file=sys.stderr)
    for value in args.outputs:
        name, source = split_named(value)
        methods.append(OutputsMethod(name or default_name(source), folder=Path(source)))
    return methods


def command_line(args: argparse.Namespace) -> str:
    """The call in canonical form (for the report)."""
    parts = ["mmrface", "evaluate", "--testset", str(args.testset)]
    for flag, values in (("--weights", args.weights), ("--outputs", args.outputs)):
        if values:
            parts += [flag, *values]
    parts += ["--metrics", args.metrics] + (["--fidelity", str(args.fidelity)] if args.fidelity is not None else [])
    parts += ["--device", args.device]
    if args.no_baseline:
        parts.append("--no-baseline")
    for flag, value in (("--fid-weights", args.fid_weights), ("--limit", args.limit),
                        ("--crop-border", args.crop_border or None), ("-o", args.output)):
        if value is not None:
            parts += [flag, str(value)]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    from mmrface.evaluation import evaluate, write_report
    from mmrface.evaluation.runner import open_testset

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if not metrics and not args.fid_weights:
        raise UserError("--metrics is empty")
    if args.examples < 0:
        raise UserError(f"--examples must be >= 0, got {args.examples}")
    pairs = open_testset(args.testset, args.limit)
    out_dir = args.output or Path("results") / "evaluate" / (args.testset.resolve().name or "testset")
    methods = build_methods(args)
    bar = None

    def progress(method: str, done: int, total: int) -> None:
        nonlocal bar
        if args.quiet:
            return
        from tqdm import tqdm

        if bar is None or bar.desc != method:
            if bar is not None:
                bar.close()
            bar = tqdm(total=total, desc=method, unit="img", file=sys.stderr, leave=False)
        bar.update(done - bar.n)

    try:
        result = evaluate(pairs, methods, metrics, fid_weights=args.fid_weights, crop_border=args.crop_border,
                          n_examples=args.examples,
                          save_outputs=out_dir / "outputs" if args.save_outputs else None, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    paths = write_report(result, out_dir, command_line(args), figure=not args.no_figure)
    from mmrface.evaluation.report import markdown_table

    print(markdown_table(result.report))
    written = ", ".join(str(p) for p in paths.values() if p is not None)
    print(f"wrote {written}")
    return 0
