"""report.png: per-image metric distributions and a strip of LQ / restored / HQ examples.

Top: one panel per metric with per-image values, a box plot per method and every image as a
jittered point (set-level FID and metrics that are n/a everywhere are left out).
Bottom: one row per example pair, columns LQ (which is also the bicubic floor), each non-baseline
method, HQ. Needs matplotlib (Agg backend, no display); without it the figure is skipped.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mmrface.evaluation.runner import Evaluation

THUMB = 160  # px per example tile


def _thumb(img: np.ndarray | None) -> np.ndarray:
    if img is None:
        return np.full((THUMB, THUMB, 3), 235, np.uint8)
    interp = cv2.INTER_AREA if img.shape[0] > THUMB else cv2.INTER_CUBIC
    return cv2.resize(img, (THUMB, THUMB), interpolation=interp)


def _metric_panels(report: dict[str, Any]) -> list[tuple[dict[str, Any], list[list[float]]]]:
    panels = []
    for m in report["metrics"]:
        if m["name"] == "fid":
            continue
        per_method = [[r[m["name"]] for r in meth["per_image"]
                       if isinstance(r.get(m["name"]), float) and math.isfinite(r[m["name"]])]
                      for meth in report["methods"]]
        if any(per_method):
            panels.append((m, per_method))
    return panels


def plot_report(report: dict[str, Any], evaluation: Evaluation, path: str | Path) -> bool:
    """Draw the figure into ``path``; False (with a warning) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed: report.png skipped (pip install matplotlib)", stacklevel=2)
        return False
    names = [m["name"] for m in report["methods"]]
    panels = _metric_panels(report)
    shown = [m["name"] for m in report["methods"] if m["kind"] != "baseline"]
    columns = ["LQ / bicubic", *shown, "HQ"]
    n_ex = len(evaluation.example_names)
    ncols = min(3, max(1, len(panels)))
    prow = math.ceil(len(panels) / ncols)
    width = max(4.2 * ncols, 1.6 * len(columns))
    heights = [3.2] * prow + ([1.7 * n_ex + 0.4] if n_ex else [])
    fig = plt.figure(figsize=(width, sum(heights) + 0.6), layout="constrained")
    subs = fig.subfigures(len(heights), 1, height_ratios=heights) if len(heights) > 1 else [fig]
    subs = list(np.atleast_1d(subs))
    rng = np.random.default_rng(0)
    for r in range(prow):
        row = panels[r * ncols:(r + 1) * ncols]
        axes = np.atleast_1d(subs[r].subplots(1, ncols))
        for ax, (m, values) in zip(axes, row):
            pos = [i for i, v in enumerate(values) if v]
            ax.boxplot([values[i] for i in pos], positions=pos, widths=0.5, showfliers=False)
            for i in pos:
                ax.scatter(i + rng.uniform(-0.12, 0.12, len(values[i])), values[i], s=10, alpha=0.6)
            ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
            ax.set_xlim(-0.6, len(names) - 0.4)
            ax.set_title(f"{m['label']} ({'higher' if m['higher_is_better'] else 'lower'} is better)", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
        for ax in axes[len(row):]:
            ax.axis("off")
    if n_ex:
        sources = ["lq", *shown, "hq"]
        axes = np.atleast_2d(subs[-1].subplots(n_ex, len(columns)))
        for i in range(n_ex):
            for j, src in enumerate(sources):
                imgs = evaluation.examples.get(src) or []
                img = imgs[i] if i < len(imgs) else None
                ax = axes[i, j]
                ax.imshow(_thumb(img))
                ax.set_xticks([])
                ax.set_yticks([])
                if img is None:
                    ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes)
                if i == 0:
                    ax.set_title(columns[j], fontsize=8)
                if j == 0:
                    ax.set_ylabel(evaluation.example_names[i], fontsize=7)
    fig.suptitle(f"{report['testset']['path']}  ({report['testset']['pairs']} pairs)", fontsize=10)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True
