"""Quality of the bundled weights and their ablation on the seeded benchmark sets.

    python benchmarks/quality.py [--weights mmrface-small --ablation mmrface-small-resblock]
                                 [--sets testsets] [--metrics psnr,ssim,lpips,niqe,id_dlib,lmd_dlib]

1. Builds the benchmark sets that are missing under `--sets` (gfpgan, heavy, sr8, with the fixed
   seeds of `mmrface.data.testset.BENCHMARK_SEEDS`, from the bundled aligned faces in
   assets/faces/), exactly as `mmrface make-testset --benchmark -o SETS` does.
2. Runs `mmrface evaluate` on each set for the bicubic floor, `--weights` and `--ablation`
   (reports in `-o`/<set>/report.{json,md,png}).
3. Prints one table: set x method x metric (mean ± std over the set's faces).

Exits 1 with a clear message when the weights are not in the registry (or not a file).
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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


def main(argv: list[str] | None = None) -> int:
    from mmrface.evaluation.runner import DEFAULT_METRICS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="mmrface-small", help="the model (registry name or file)")
    ap.add_argument("--ablation", default="mmrface-small-resblock",
                    help="its ResBlock ablation (registry name or file); '' to leave it out")
    ap.add_argument("--sets", type=Path, default=ROOT / "testsets", help="benchmark sets folder")
    ap.add_argument("--faces", type=Path, default=None, help="aligned faces to build missing sets from "
                                                            "(default: assets/faces)")
    ap.add_argument("--size", type=int, default=512, help="face size of sets built here (default 512)")
    ap.add_argument("--metrics", default=",".join(DEFAULT_METRICS), help="comma-separated metric names")
    ap.add_argument("--fid-weights", default=None, help="pt_inception weights: adds FID")
    ap.add_argument("-w", "--fidelity", type=float, default=0.5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--limit", type=int, default=None, help="first N faces of each set")
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
    rows, header = [], None
    try:
        for set_dir in ensure_sets(args.sets, args.faces, args.size):
            methods = [BicubicBaseline()] + [ModelMethod(default_name(w), weights=w, fidelity=args.fidelity,
                                                         device=args.device) for w in models]
            print(f"evaluating {set_dir} ...", file=sys.stderr)
            result = evaluate(set_dir, methods, metrics, fid_weights=args.fid_weights, limit=args.limit)
            write_report(result, args.output / set_dir.name, command)
            rep = result.report
            if header is None:
                header = ["set", "method"] + [f"{m['label']} {'↑' if m['higher_is_better'] else '↓'}"
                                              for m in rep["metrics"]]
            for meth in rep["methods"]:
                cells = [f"{set_dir.name} ({rep['testset']['pairs']})", meth["name"]]
                for m in rep["metrics"]:
                    s = meth["summary"][m["name"]]
                    cells.append(fmt(s["mean"], m["name"], s.get("std")))
                rows.append(cells)
    except UserError as exc:
        print(f"quality.py: error: {exc}", file=sys.stderr)
        return 2
    print(f"# quality.py, {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"# machine: {machine_line(machine_info())}")
    print(f"# command: {command.strip()}")
    print(f"# fidelity {args.fidelity}; mean ± std over each set's faces; reports in {args.output}/<set>/")
    print(markdown_rows(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
