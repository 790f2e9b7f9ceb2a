"""`mmrface export --weights W --format onnx [-o OUT.onnx]`: the restorer network as an ONNX graph.

The graph takes `lq` (N, 3, S, S) float32 in [-1, 1] and the fidelity `w` (N,) float32, and
returns the restored faces. Noise is fixed (`--noise const`: the weight file's stored noise maps;
`zero`: none) and recorded in the file's metadata with the weights' sha256, size, opset and the
mmrface version. `--config C` without weights exports a RANDOM-WEIGHT graph (for benchmarks only;
its metadata says so). The export ends with `onnx.checker`, a load in ONNX Runtime and a parity
check against eager torch, summarised in one line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmrface.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="registry name or weight file of the network to export (-w is the fidelity "
                                        "elsewhere, so it has no short form here)")
    src.add_argument("--config", "-c", help="export a config with RANDOM weights (speed benchmarks only)")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="export format (only onnx)")
    p.add_argument("-o", "--output", default=None, help="output file (default: <weights or config name>.onnx)")
    p.add_argument("--size", type=int, default=None,
                   help="face size S of the graph; must equal the model's size (a check, default: the model's)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--dynamic-batch", action="store_true", help="free batch axis (default: fixed --batch)")
    p.add_argument("--batch", type=int, default=1, help="fixed batch size when not --dynamic-batch (default 1)")
    p.add_argument("--noise", default="const", choices=["const", "zero"],
                   help="noise baked into the graph: the stored maps (const, as `restore` uses) or none")
    p.add_argument("--fused-modconv", action="store_true",
                   help="export the grouped per-sample-weight modulated conv (fixed batch; slower in ONNX Runtime)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights with --config")


def _load(args) -> tuple[object, dict, str]:
    """(model, metadata_props, default output stem) from --weights or --config."""
    import torch

    from mmrface.export.onnx import weights_metadata

    if args.weights:
        from mmrface.models import RESTORERS, load_model

        model, meta = load_model(args.weights, arch=RESTORERS, device=torch.device("cpu"))
        stem = Path(str(meta.get("path", args.weights))).stem
        return model, weights_metadata(meta), stem
    from mmrface.config import load_config
    from mmrface.models import build_model

    cfg = load_config(args.config)
    torch.manual_seed(args.seed)
    try:
        model = build_model(cfg.model).eval()
    except (ValueError, TypeError) as exc:
        raise UserError(f"cannot build the model of {cfg.source}: {exc}") from exc
    meta = {"weights_sha256": f"none: RANDOM weights (config {cfg.source}, seed {args.seed})",
            "weights": "random", "config": json.dumps(cfg.model, sort_keys=True)}
    return model, meta, f"{cfg.name}-random"


def run(args) -> int:
    from mmrface.export.onnx import export_onnx

    model, meta, stem = _load(args)
    size = int(model.size)
    if args.size is not None and args.size != size:
        raise UserError(f"--size {args.size} does not match the model's size {size} (the graph's size is the "
                        f"network's; omit --size or export a {args.size}px model)")
    out = Path(args.output) if args.output else Path(f"{stem}.onnx")
    if out.suffix != ".onnx":
        raise UserError(f"output {out} should end in .onnx")
    report = export_onnx(model, out, opset=args.opset, dynamic_batch=args.dynamic_batch, batch=args.batch,
                         noise=args.noise, fused_modconv=args.fused_modconv, metadata=meta)
    if not report.max_abs_diff <= 1e-3:
        out.unlink(missing_ok=True)
        raise UserError(f"{out}: ONNX Runtime differs from torch by {report.max_abs_diff:.2e} (> 1e-3); "
                        f"the graph is not trustworthy and was removed")
    print(report.summary() + (" [RANDOM weights]" if args.config else ""))
    return 0
