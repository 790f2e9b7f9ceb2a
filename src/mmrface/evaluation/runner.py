"""Score methods on a `make-testset` test set: per-image metrics, mean and std per method.

    result = evaluate("testsets/gfpgan", [BicubicBaseline(), ModelMethod("small", weights=...)],
                      metrics=["psnr", "ssim", "lpips"])
    result.report   # JSON-ready dict (see `report.py` for the files written from it)

A metric that cannot run is reported as n/a with its reason, never raised: a metric that cannot be
built (FID without weights, dlib missing) is n/a for every method; a metric that fails on one image
(or an image a method has no output for) is n/a for that image, and the summary counts the images
it was computed on. Means and stds are over those images (std: population, ddof=0).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmrface.errors import UserError
from mmrface.evaluation.methods import Method, MissingOutput, OutputsMethod, check_names
from mmrface.metrics import METRICS, get_metric
from mmrface.pipeline.imageio import ImageReadError, read_image, write_image

DEFAULT_METRICS = ("psnr", "ssim", "lpips", "niqe", "id_dlib", "lmd_dlib")
REPORT_FORMAT = "mmrface-eval-report"


@dataclass
class TestPairs:
    """The pairs of a test set: names, its params.json (if any), and a reader."""

    root: Path
    names: list[str]
    meta: dict[str, Any]
    total: int

    def read(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(lq, hq) uint8 RGB, writable (torch warns on read-only arrays); raises ImageReadError."""
        return tuple(np.require(read_image(self.root / sub / name).rgb, requirements="W") for sub in ("lq", "hq"))

    def describe(self) -> dict[str, Any]:
        keys = ("format", "version", "preset", "seed", "size", "config")
        return {"path": str(self.root), "pairs": len(self.names), "pairs_in_set": self.total,
                **{k: self.meta[k] for k in keys if k in self.meta}}


def open_testset(root: str | Path, limit: int | None = None) -> TestPairs:
    """A test set written by `make-testset` (lq/, hq/, optional params.json); UserError if not."""
    from mmrface.data.datasets import PairedTestSet

    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"test set folder not found: {root}")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be positive, got {limit}")
    ds = PairedTestSet(root)  # warns about (and drops) pairs missing a side
    names = [name for name, _ in ds.items]
    total = len(names)
    return TestPairs(root, names[:limit] if limit else names, ds.meta, total)


@dataclass
class MetricSet:
    """The metrics requested: built callables, and reasons for those that cannot run."""

    names: list[str]
    per_image: dict[str, Callable[..., float]] = field(default_factory=dict)
    fid: Any = None
    unavailable: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, names: Sequence[str], fid_weights: str | Path | None = None,
              crop_border: int = 0) -> MetricSet:
        names = list(dict.fromkeys(names))
        if fid_weights is not None and "fid" not in names:
            names.append("fid")
        unknown = [n for n in names if n not in METRICS]
        if unknown:
            raise UserError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
        out = cls(names)
        for name in names:
            opts: dict[str, Any] = {}
            if name == "fid":
                if fid_weights is None:
                    out.unavailable[name] = "FID needs --fid-weights pt_inception-2015-12-05-6726825d.pth"
                    continue
                opts["weights"] = str(fid_weights)
            elif crop_border and name in ("psnr", "ssim", "psnr_y", "ssim_y", "niqe"):
                opts["crop_border"] = crop_border
            try:
                fn = get_metric(name, **opts)
            except Exception as exc:  # UserError (missing model files) or a broken dependency
                out.unavailable[name] = _reason(exc)
                continue
            if METRICS[name].per_image:
                out.per_image[name] = fn
            else:
                out.fid = fn
        return out

    def describe(self) -> list[dict[str, Any]]:
        return [{"name": n, "label": METRICS[n].label, "higher_is_better": METRICS[n].higher_is_better,
                 "n/a": self.unavailable.get(n)} for n in self.names]


@dataclass
class Evaluation:
    """What `evaluate` returns: the JSON-ready report and a few example images for the figure."""

    report: dict[str, Any]
    examples: dict[str, list[np.ndarray | None]]  # "lq", "hq" and each method name -> images
    example_names: list[str]


def _reason(exc: BaseException) -> str:
    text = (str(exc).splitlines() or [""])[0].strip()
    return text if isinstance(exc, (UserError, MissingOutput)) else f"{type(exc).__name__}: {text}"


def summarize(values: list[float | None]) -> dict[str, Any]:
    """mean / std (ddof=0; None when a value is infinite) / min / max / n over the non-None values."""
    vals = np.array([v for v in values if v is not None], dtype=np.float64)
    if vals.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    std = float(vals.std()) if np.isfinite(vals).all() else None  # e.g. PSNR inf of an exact copy
    return {"mean": float(vals.mean()), "std": std, "min": float(vals.min()), "max": float(vals.max()),
            "n": int(vals.size)}


def _score_method(method: Method, pairs: TestPairs, metrics: MetricSet, example_names: list[str],
                  save_dir: Path | None, fid_gt: np.ndarray | None,
                  progress: Callable[[str, int, int], None] | None) -> tuple[dict[str, Any], list]:
    rows, examples, restored_all, seconds = [], [], [], []
    method.load()
    try:
        for i, name in enumerate(pairs.names):
            row: dict[str, Any] = {"name": name}
            errors: dict[str, str] = {}
            try:
                lq, hq = pairs.read(name)
                t0 = time.perf_counter()
                out = np.require(method(name, lq, hq), requirements="W")
                seconds.append(time.perf_counter() - t0)
            except (MissingOutput, ImageReadError) as exc:
                out, reason = None, _reason(exc)
            if out is None:
                row.update({m: None for m in metrics.per_image})
                row["errors"] = {"all": reason}
            else:
                for m, fn in metrics.per_image.items():
                    try:
                        row[m] = float(fn(out, hq if METRICS[m].needs_gt else None))
                    except Exception as exc:  # one bad image must not end the evaluation
                        row[m], errors[m] = None, _reason(exc)
                if errors:
                    row["errors"] = errors
                if save_dir is not None:
                    write_image(save_dir / f"{Path(name).stem}.png", out)
                if metrics.fid is not None:
                    restored_all.append(out)
            if name in example_names:
                examples.append(out)
            rows.append(row)
            if progress:
                progress(method.name, i + 1, len(pairs.names))
        info = method.info()
    finally:
        method.unload()
    summary = {m: summarize([r.get(m) for r in rows]) for m in metrics.per_image}
    for m, reason in metrics.unavailable.items():
        summary[m] = {**summarize([]), "n/a": reason}
    for m in metrics.per_image:
        if summary[m]["n"] == 0:
            first = next((r["errors"] for r in rows if "errors" in r), {})
            summary[m]["n/a"] = first.get(m) or first.get("all") or "no image could be scored"
    if metrics.fid is not None:
        summary["fid"] = _fid_summary(metrics.fid, restored_all, fid_gt)
    info.update({"summary": summary, "per_image": rows,
                 "seconds_per_image": float(np.median(seconds)) if seconds else None})
    return info, examples


def _fid_summary(fid, restored: list[np.ndarray], gt_features: np.ndarray | None) -> dict[str, Any]:
    base = {**summarize([]), "n": len(restored)}
    if gt_features is None or len(restored) < 2:
        return {**base, "n/a": "FID needs at least 2 scored images"}
    try:
        from mmrface.metrics.fid import fid_from_features

        value = fid_from_features(fid.features(restored), gt_features)
    except Exception as exc:
        return {**base, "n/a": _reason(exc)}
    return {**base, "mean": value, "std": None, "min": value, "max": value}


def evaluate(testset: str | Path | TestPairs, methods: Sequence[Method],
             metrics: Sequence[str] = DEFAULT_METRICS, fid_weights: str | Path | None = None,
             limit: int | None = None, crop_border: int = 0, n_examples: int = 3,
             save_outputs: str | Path | None = None,
             progress: Callable[[str, int, int], None] | None = None) -> Evaluation:
    """Score every method on the test set; see the module docstring for the n/a rules."""
    pairs = testset if isinstance(testset, TestPairs) else open_testset(testset, limit)
    if not methods:
        raise UserError("nothing to evaluate: give --weights, --outputs or keep the baseline")
    check_names(list(methods))
    for m in methods:
        if isinstance(m, OutputsMethod):
            m.check(pairs.names)
    mset = MetricSet.build(metrics, fid_weights, crop_border)
    fid_gt = None
    if mset.fid is not None:
        try:
            fid_gt = mset.fid.features(pairs.read(n)[1] for n in pairs.names) if len(pairs.names) >= 2 else None
        except Exception as exc:
            mset.unavailable["fid"], mset.fid = _reason(exc), None
    example_names = pairs.names[:n_examples]
    examples: dict[str, list[np.ndarray | None]] = {"lq": [], "hq": []}
    for name in example_names:
        try:
            lq, hq = pairs.read(name)
        except ImageReadError:
            lq = hq = None
        examples["lq"].append(lq)
        examples["hq"].append(hq)
    results = []
    for m in methods:
        save_dir = None
        if save_outputs is not None:
            save_dir = Path(save_outputs) / m.name
            save_dir.mkdir(parents=True, exist_ok=True)
        info, ex = _score_method(m, pairs, mset, example_names, save_dir, fid_gt, progress)
        results.append(info)
        examples[m.name] = ex
    report = {"format": REPORT_FORMAT, "version": 1, "testset": pairs.describe(),
              "metrics": mset.describe(), "methods": results}
    return Evaluation(report, examples, example_names)


def json_safe(obj: Any) -> Any:
    """Replace non-finite floats by the strings "inf", "-inf", "nan" (strict JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
