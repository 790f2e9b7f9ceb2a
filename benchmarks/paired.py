"""Paired differences of two models on the same faces, from two `benchmarks/quality.py` report folders.

    python benchmarks/quality.py ... --weights mmrface-small -o reports/mmrb
    python benchmarks/quality.py ... --weights mmrface-small-resblock -o reports/resblock
    python benchmarks/paired.py reports/mmrb reports/resblock

For every set folder both hold (`<set>/report.json`) and every metric both measured, the mean and
the standard error of (A - B) over the faces both scored, matched by file name. A paired difference
removes the spread between faces, which is far larger than the difference between two models.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

METRICS = {"psnr": "PSNR dB", "ssim": "SSIM", "lpips": "LPIPS (alex)", "lpips_vgg": "LPIPS (vgg)",
           "id_dlib": "Deg °", "lmd_dlib": "LMD px"}


def model_rows(report: Path) -> tuple[str, dict[str, dict[str, float]]]:
    """(model name, {face name: {metric: value}}) of the one model row of a quality report."""
    methods = [m for m in json.loads(report.read_text())["methods"] if m.get("kind") == "model"]
    if len(methods) != 1:
        raise SystemExit(f"{report}: expected one model row, found {len(methods)} (run quality.py with --ablation '')")
    return methods[0]["name"], {row["name"]: row for row in methods[0]["per_image"]}


def mean_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var / n)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="quality.py output folder of model A")
    ap.add_argument("b", type=Path, help="quality.py output folder of model B")
    args = ap.parse_args(argv)
    sets = sorted(p.parent.name for p in args.a.glob("*/report.json") if (args.b / p.parent.name / "report.json").is_file())
    if not sets:
        print(f"error: no <set>/report.json in both {args.a} and {args.b}", file=sys.stderr)
        return 2
    header = None
    for name in sets:
        a_name, a = model_rows(args.a / name / "report.json")
        b_name, b = model_rows(args.b / name / "report.json")
        faces = sorted(set(a) & set(b))
        metrics = [m for m in METRICS if all(m in a[f] and m in b[f] for f in faces)]
        if header is None:
            header = metrics
            print(f"paired differences, {a_name} minus {b_name}, mean ± standard error over the same faces")
            print("| set | faces | " + " | ".join(METRICS[m] for m in metrics) + " |")
            print("|---|---|" + "---|" * len(metrics))
        cells = []
        for m in header:
            diffs = [a[f][m] - b[f][m] for f in faces if m in a[f] and m in b[f]]
            mean, se = mean_se(diffs) if diffs else (float("nan"), float("nan"))
            digits = 2 if m in ("id_dlib", "lmd_dlib") else 3
            cells.append(f"{mean:+.{digits}f} ± {se:.{digits}f}")
        print(f"| {name} | {len(faces)} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
