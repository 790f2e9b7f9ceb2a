"""What to do with a face larger than the model's output: blend, keep or restore (measured).

    python benchmarks/large_faces.py --faces data/congress/val --weights mmrface-small [--side 256] [--limit 100]

Each aligned face of `--faces` (people the model never saw), resized to `--side` pixels (twice
the 128-px model's output by default), is degraded three ways at that size (none; mild: blur
σ 0.5-2, x1-2, JPEG 60-95; strong: blur σ 1-4, x3-6, JPEG 40-80), restored with
`mmrface restore --aligned --large-faces {blend,keep,restore}` semantics, and scored against the
clean face at `--side`: PSNR and LPIPS (alex). Prints one table: degradation x policy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

DEGRADATIONS = {
    "none": None,
    "mild": {"preset": "gfpgan", "sigma": [0.5, 2.0], "scale": [1.0, 2.0], "jpeg_quality": [60, 95],
             "noise_sigma": [0.0, 5.0], "jitter_prob": 0.0, "gray_prob": 0.0},
    "strong": {"preset": "gfpgan", "sigma": [1.0, 4.0], "scale": [3.0, 6.0], "jpeg_quality": [40, 80],
               "noise_sigma": [0.0, 10.0], "jitter_prob": 0.0, "gray_prob": 0.0},
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=Path, required=True, help="aligned faces of people the model never saw")
    ap.add_argument("--weights", default="mmrface-small")
    ap.add_argument("--side", type=int, default=256, help="face size in pixels (larger than the model's)")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("-w", "--fidelity", type=float, default=1.0)
    args = ap.parse_args(argv)

    import cv2

    from mmrface.data.degrade import Degradation
    from mmrface.evaluation.report import markdown_rows
    from mmrface.metrics import get_metric
    from mmrface.pipeline.imageio import list_images, read_image
    from mmrface.pipeline.restorer import LARGE_FACES, Restorer

    files = list_images(args.faces)[: args.limit]
    if not files:
        print(f"large_faces.py: no images in {args.faces}", file=sys.stderr)
        return 1
    restorer = Restorer(args.weights, device="cpu", upscale=1, fidelity=args.fidelity)
    psnr, lpips = get_metric("psnr"), get_metric("lpips")
    rows = []
    for dname, spec in DEGRADATIONS.items():
        deg = Degradation.from_config(spec) if spec else None
        rng = np.random.default_rng(args.seed)
        scores = {p: ([], []) for p in LARGE_FACES}
        for f in files:
            hq = cv2.resize(read_image(f).rgb, (args.side, args.side), interpolation=cv2.INTER_AREA)
            lq = hq if deg is None else deg(hq, rng)[0]
            for policy in LARGE_FACES:
                out = restorer.restore(lq, aligned=True, large_faces=policy).image
                scores[policy][0].append(psnr(out, hq))
                scores[policy][1].append(lpips(out, hq))
        for policy in LARGE_FACES:
            p, lp = scores[policy]
            rows.append([dname, policy, f"{np.mean(p):.2f}", f"{np.mean(lp):.3f}"])
    print(f"# {len(files)} faces of {args.faces} at {args.side} px, model {args.weights} "
          f"({restorer.size} px), w = {args.fidelity}")
    print(markdown_rows(["degradation", "--large-faces", "PSNR ↑", "LPIPS ↓"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
