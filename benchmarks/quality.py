"""Quality of the bundled weights and their ablation on seeded benchmark sets of unseen people.

    python benchmarks/quality.py --faces data/congress/val --size 128 --sets testsets/congress-val128 \
        [--weights mmrface-small --ablation mmrface-small-resblock] [-w 1.0] [--gate]

1. Builds the benchmark sets that are missing under `--sets` (gfpgan, heavy, sr8, with the fixed
   seeds of `mmrface.data.testset.BENCHMARK_SEEDS`) from `--faces`, a folder of aligned faces of
   people the models never trained on (`mmrface prepare` writes the val split), exactly as
   `mmrface make-testset --benchmark -i FACES -o SETS` does. Without `--faces`: the bundled
   assets/faces (four faces; the bundled weights never saw them either, but four is an anecdote).
2. Runs the bicubic floor, `--weights` and `--ablation` on each set (reports in `-o/<set>/`).
3. Prints one table (set x method x metric, mean ± std); with the faces' landmarks.json (written by
   `mmrface prepare`) also the same split by head pose (|yaw| < 15°, 15-30°, > 30°, estimated
   from the 68 landmarks) and by colour vs greyscale (mean saturation >= 40); with `--gate` the
   gate of the bundled model against the bicubic floor (exit status 1 when it fails).

Exits 1 with a clear message when the weights are not in the registry (or not a file).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GATE = {"psnr": 1.0, "lpips": 0.10}  # the model must beat bicubic by this much on every set; Deg no worse


def ensure_sets(sets: Path, faces: Path | None, size: int) -> list[Path]:
    """The benchmark set folders, building each one that has no params.json yet."""
    from mmrface.data.testset import BENCHMARK_SEEDS, bundled_faces_dir, make_testset

    faces_dir = faces or bundled_faces_dir()
    out = []
    for name, seed in BENCHMARK_SEEDS.items():
        target = sets / name
        if not (target / "params.json").is_file():
            print(f"building benchmark set {target} (preset {name}, seed {seed}, {size} px, faces {faces_dir})",
                  file=sys.stderr)
            if not Path(faces_dir).is_dir():
                raise SystemExit(f"quality.py: no aligned faces in {faces_dir} to build the benchmark sets from")
            make_testset(faces_dir, target, preset=name, seed=seed, size=size)
        out.append(target)
    return out


def check_weights(names: list[str]) -> str | None:
    """None when every name resolves (registry name or file), else the message to print."""
    from mmrface.errors import UserError
    from mmrface.weights import registry, resolve_weights

    missing = []
    for n in names:
        try:
            resolve_weights(n)
        except UserError:
            missing.append(n)
    if not missing:
        return None
    known = ", ".join(sorted(registry())) or "none"
    return (f"quality.py: weights {', '.join(missing)} not found in the weights registry "
            f"(registered: {known}) nor as files. Train and register them first "
            "(see `mmrface weights list`), or pass --weights/--ablation FILE.")


def face_groups(faces: Path | None) -> dict[str, dict[str, str]]:
    """source face name -> {"pose": yaw bucket, "colour": colour | grey}, from FACES/landmarks.json."""
    from mmrface.data.pose import yaw_bucket
    from mmrface.data.recipe import COLOUR_THRESHOLD

    path = (faces / "landmarks.json") if faces else None
    if path is None or not path.is_file():
        return {}
    groups = {}
    for name, rec in json.loads(path.read_text()).items():
        g = {}
        if "yaw" in rec:
            g["pose"] = yaw_bucket(rec["yaw"])
        if "colour" in rec:
            g["colour"] = "colour" if rec["colour"] >= COLOUR_THRESHOLD else "grey"
        groups[name] = g
    return groups


def grouped_rows(report: dict, sources: dict[str, str], groups: dict, key: str, set_name: str,
                 metrics: list[str]) -> list[list[str]]:
    """Rows set x group x method: mean of each metric over the faces of that group (and n)."""
    import numpy as np

    from mmrface.evaluation.report import fmt

    labels = sorted({g[key] for g in groups.values() if key in g}, key=_group_order)
    rows = []
    for label in labels:
        for meth in report["methods"]:
            vals = {m: [r[m] for r in meth["per_image"] if r.get(m) is not None
                        and groups.get(sources.get(r["name"], ""), {}).get(key) == label] for m in metrics}
            n = max((len(v) for v in vals.values()), default=0)
            if n == 0:
                continue
            rows.append([set_name, label, str(n), meth["name"]]
                        + [fmt(float(np.mean(vals[m])), m) if vals[m] else "n/a" for m in metrics])
    return rows


def _group_order(label: str) -> tuple:
    order = ["<15°", "15-30°", ">30°", "colour", "grey"]
    return (order.index(label) if label in order else len(order), label)


def gate_rows(reports: dict[str, dict], model: str) -> tuple[list[list[str]], bool]:
    """The bundled model against the bicubic floor on each set: margins and PASS / FAIL."""
    rows, ok_all = [], True
    for set_name, rep in reports.items():
        by = {m["name"]: m["summary"] for m in rep["methods"]}
        base, ours = by.get("bicubic"), by.get(model)
        if base is None or ours is None:
            continue
        d_psnr = ours["psnr"]["mean"] - base["psnr"]["mean"]
        d_lpips = base["lpips"]["mean"] - ours["lpips"]["mean"]
        deg = ours.get("id_dlib", {}).get("mean")
        deg_base = base.get("id_dlib", {}).get("mean")
        ok = d_psnr >= GATE["psnr"] and d_lpips >= GATE["lpips"] and (deg is None or deg <= deg_base)
        ok_all &= ok
        deg_cell = "n/a" if deg is None else f"{deg:.2f} vs {deg_base:.2f}"
        rows.append([set_name, f"+{d_psnr:.2f} dB" if d_psnr >= 0 else f"{d_psnr:.2f} dB",
                     f"-{d_lpips:.3f}" if d_lpips >= 0 else f"+{-d_lpips:.3f}", deg_cell, "PASS" if ok else "FAIL"])
    return rows, ok_all


def main(argv: list[str] | None = None) -> int:
    from mmrface.evaluation.runner import DEFAULT_METRICS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="mmrface-small", help="the model (registry name or file)")
    ap.add_argument("--ablation", default="mmrface-small-resblock",
                    help="its ResBlock ablation (registry name or file); '' to leave it out")
    ap.add_argument("--sets", type=Path, default=ROOT / "testsets", help="benchmark sets folder")
    ap.add_argument("--faces", type=Path, default=None, help="aligned faces of unseen people to build missing "
                                                            "sets from (default: assets/faces)")
    ap.add_argument("--size", type=int, default=512, help="face size of sets built here (default 512)")
    ap.add_argument("--metrics", default=",".join(DEFAULT_METRICS), help="comma-separated metric names")
    ap.add_argument("--fid-weights", default=None, help="pt_inception weights: adds FID")
    ap.add_argument("-w", "--fidelity", type=float, default=0.5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--limit", type=int, default=None, help="first N faces of each set")
    ap.add_argument("--gate", action="store_true", help="check the gate against bicubic; exit 1 if it fails")
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "runs" / "quality", help="report folders")
    args = ap.parse_args(argv)

    from mmrface.errors import UserError
    from mmrface.evaluation import BicubicBaseline, ModelMethod, evaluate, write_report
    from mmrface.evaluation.methods import default_name
    from mmrface.evaluation.report import fmt, machine_info, machine_line, markdown_rows

    models = [w for w in (args.weights, args.ablation) if w]
    problem = check_weights(models)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    command = "python benchmarks/quality.py " + " ".join(sys.argv[1:] if argv is None else argv)
    groups = face_groups(args.faces)
    rows, header, reports, pose_rows, colour_rows = [], None, {}, [], []
    short = [m for m in ("psnr", "lpips", "id_dlib") if m in metrics]
    try:
        for set_dir in ensure_sets(args.sets, args.faces, args.size):
            methods = [BicubicBaseline()] + [ModelMethod(default_name(w), weights=w, fidelity=args.fidelity,
                                                         device=args.device) for w in models]
            print(f"evaluating {set_dir} ...", file=sys.stderr)
            result = evaluate(set_dir, methods, metrics, fid_weights=args.fid_weights, limit=args.limit)
            write_report(result, args.output / set_dir.name, command)
            rep = result.report
            reports[set_dir.name] = rep
            if header is None:
                header = ["set", "method"] + [f"{m['label']} {'↑' if m['higher_is_better'] else '↓'}"
                                              for m in rep["metrics"]]
            for meth in rep["methods"]:
                cells = [f"{set_dir.name} ({rep['testset']['pairs']})", meth["name"]]
                for m in rep["metrics"]:
                    s = meth["summary"][m["name"]]
                    cells.append(fmt(s["mean"], m["name"], s.get("std")))
                rows.append(cells)
            if groups:
                index = json.loads((set_dir / "params.json").read_text())["items"]
                sources = {it["name"]: it.get("source", "") for it in index}
                pose_rows += grouped_rows(rep, sources, groups, "pose", set_dir.name, short)
                colour_rows += grouped_rows(rep, sources, groups, "colour", set_dir.name, short)
    except UserError as exc:
        print(f"quality.py: error: {exc}", file=sys.stderr)
        return 2
    print(f"# quality.py, {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"# machine: {machine_line(machine_info())}")
    print(f"# command: {command.strip()}")
    print(f"# fidelity {args.fidelity}; mean ± std over each set's faces; reports in {args.output}/<set>/")
    print(markdown_rows(header, rows))
    labels = {"psnr": "PSNR ↑", "lpips": "LPIPS ↓", "id_dlib": "Deg ↓"}
    for title, grouped in (("head pose (|yaw|)", pose_rows), ("colour", colour_rows)):
        if grouped:
            print(f"\n## by {title}\n")
            print(markdown_rows(["set", title.split()[0], "faces", "method"] + [labels[m] for m in short], grouped))
    ok = True
    if args.gate:
        gate, ok = gate_rows(reports, default_name(args.weights))
        print(f"\n## gate: {default_name(args.weights)} vs bicubic (PSNR >= +{GATE['psnr']} dB, "
              f"LPIPS <= -{GATE['lpips']}, Deg no worse)\n")
        print(markdown_rows(["set", "PSNR", "LPIPS", "Deg (model vs bicubic)", "gate"], gate))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
