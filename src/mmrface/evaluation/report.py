"""The files `mmrface evaluate` writes: report.json, report.md and report.png.

* report.json: command, date, machine, test set (with its params.json header), the evaluation
  conventions, the metrics (with n/a reasons) and per method its summary (mean, std, min, max,
  n per metric) and per-image values. Non-finite numbers are written as "inf"/"nan" strings.
* report.md: one markdown table, mean ± std per metric, one row per method (best mean in bold),
  then the n/a reasons.
* report.png (needs matplotlib): per-image distribution of every metric (box plot with the
  images as points), and a strip of examples: LQ (= the bicubic floor) | each method | HQ.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from mmrface.evaluation.methods import BASELINE, __doc__ as _METHODS_DOC
from mmrface.evaluation.runner import Evaluation, json_safe

DECIMALS = {"psnr": 2, "psnr_y": 2, "ssim": 4, "ssim_y": 4, "lpips": 4, "lpips_vgg": 4, "niqe": 3,
            "id_dlib": 2, "lmd_dlib": 2, "fid": 2}


def convention() -> str:
    """The evaluation conventions (from `methods.py`), as one paragraph of text."""
    doc = _METHODS_DOC or ""
    start = doc.find("Conventions")
    return " ".join(doc[start:].split()) if start >= 0 else ""


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """Where the numbers were measured: OS, CPU, cores, torch threads and version, GPU."""
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu_name(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def machine_line(info: dict[str, Any]) -> str:
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ""
    return (f"{info['cpu']} ({info['cpu_count']} cores, torch {info['torch']} on {info['torch_threads']} "
            f"threads{gpu}), {info['platform']}")


def fmt(value: Any, metric: str, std: Any = None) -> str:
    """A mean (± std) with the metric's decimals; "n/a" for None."""
    if value is None:
        return "n/a"
    d = DECIMALS.get(metric, 4)
    text = f"{value:.{d}f}" if isinstance(value, float) else str(value)
    if std is not None and isinstance(std, float):
        text += f" ± {std:.{d}f}"
    return text


def _best(report: dict[str, Any], metric: dict[str, Any]) -> float | None:
    means = [m["summary"][metric["name"]]["mean"] for m in report["methods"]]
    means = [v for v in means if isinstance(v, float) and np.isfinite(v)]
    if len(means) < 2:
        return None
    return max(means) if metric["higher_is_better"] else min(means)


def markdown_table(report: dict[str, Any]) -> str:
    """Mean ± std per metric (columns) and method (rows); best finite mean in bold."""
    metrics = report["metrics"]
    header = ["method"] + [f"{m['label']} {'↑' if m['higher_is_better'] else '↓'}" for m in metrics] + ["s/img"]
    rows = []
    total = report["testset"]["pairs"]
    for meth in report["methods"]:
        cells = [meth["name"]]
        for m in metrics:
            s = meth["summary"][m["name"]]
            text = fmt(s["mean"], m["name"], s.get("std"))
            if s["mean"] is not None and s["mean"] == _best(report, m):
                text = f"**{text}**"
            if s["mean"] is not None and 0 < s["n"] < total and m["name"] != "fid":
                text += f" (n={s['n']})"
            cells.append(text)
        sec = meth.get("seconds_per_image")
        cells.append(f"{sec:.3f}" if sec is not None and meth["kind"] == "model" else "")
        rows.append(cells)
    return markdown_rows(header, rows)


def markdown_rows(header: list[str], rows: list[list[str]]) -> str:
    """A plain markdown table (header, separator, one line per row) — shared by the benchmarks."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _na_notes(report: dict[str, Any]) -> list[str]:
    notes = []
    for m in report["metrics"]:
        reasons = {meth["summary"][m["name"]].get("n/a") for meth in report["methods"]}
        if m.get("n/a") or (len(reasons) == 1 and None not in reasons):
            notes.append(f"- {m['label']}: n/a ({m.get('n/a') or reasons.pop()})")
            continue
        for meth in report["methods"]:
            reason = meth["summary"][m["name"]].get("n/a")
            if reason:
                notes.append(f"- {m['label']} of {meth['name']}: n/a ({reason})")
            failed = [r["name"] for r in meth["per_image"] if r.get(m["name"], 0) is None]
            if failed and not reason:
                notes.append(f"- {m['label']} of {meth['name']}: n/a on {len(failed)} image(s), "
                             f"e.g. {failed[0]} (see report.json)")
    return notes


def markdown(report: dict[str, Any]) -> str:
    ts = report["testset"]
    desc = ", ".join(f"{k} {ts[k]}" for k in ("preset", "seed", "size") if k in ts)
    count = f"{ts['pairs']} pairs" + (f" (first {ts['pairs']} of {ts['pairs_in_set']})"
                                      if ts["pairs"] < ts["pairs_in_set"] else "")
    lines = [f"# Evaluation on `{ts['path']}`", "",
             f"- Test set: {count}" + (f"; {desc}" if desc else ""),
             f"- Command: `{report['command']}`",
             f"- Date: {report['date']}",
             f"- Machine: {machine_line(report['machine'])}",
             f"- Baseline `{BASELINE}`: the LQ input itself (the floor). Models restore the LQ as an "
             "aligned crop at their own size, scored at the HQ size (see `convention` in report.json).",
             f"- Mean ± std over the images (std with ddof=0); s/img: median seconds per image of the model.",
             "", markdown_table(report), ""]
    notes = _na_notes(report)
    if notes:
        lines += ["Not available:", *notes, ""]
    return "\n".join(lines)


def write_report(evaluation: Evaluation, out_dir: str | Path, command: str,
                 figure: bool = True) -> dict[str, Path | None]:
    """Write report.json, report.md and (with matplotlib) report.png into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {"format": evaluation.report["format"], "version": evaluation.report["version"],
              "command": command, "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
              "machine": machine_info(), "convention": convention(),
              **{k: v for k, v in evaluation.report.items() if k not in ("format", "version")}}
    paths: dict[str, Path | None] = {"json": out / "report.json", "md": out / "report.md", "png": None}
    paths["json"].write_text(json.dumps(json_safe(report), indent=1, allow_nan=False) + "\n")
    paths["md"].write_text(markdown(report))
    if figure:
        from mmrface.evaluation.figure import plot_report

        if plot_report(report, evaluation, out / "report.png"):
            paths["png"] = out / "report.png"
    evaluation.report.update({k: report[k] for k in ("command", "date", "machine", "convention")})
    return paths
