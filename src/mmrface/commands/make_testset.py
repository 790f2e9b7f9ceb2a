"""`mmrface make-testset`: write a seeded degraded LQ/HQ test set from a folder of HQ faces.

    mmrface make-testset -i HQ_FOLDER -o OUT --preset gfpgan --seed 0 [--size 512] [--count N]
    mmrface make-testset --benchmark [-o testsets] [--size 512]

The same inputs and seed give byte-identical files. `--preset` takes a preset name (gfpgan,
heavy, sr4, sr8) or a YAML file of degradation options (optionally under a `degradation:` key).
`--benchmark` builds the sets gfpgan, heavy and sr8 with their fixed seeds (see
`mmrface.data.testset.BENCHMARK_SEEDS`) from the bundled faces in assets/faces/ (or from -i).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mmrface.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--input", type=Path,
                        help="folder of aligned HQ faces (with --benchmark: replaces assets/faces)")
    parser.add_argument("-o", "--output", type=Path,
                        help="output folder (default with --benchmark: testsets)")
    parser.add_argument("--preset", default=None,
                        help="degradation preset (gfpgan, heavy, sr4, sr8) or a YAML file "
                             "(default: gfpgan)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: 0)")
    parser.add_argument("--size", type=int, default=512, help="side of the square faces")
    parser.add_argument("--count", type=int, default=None,
                        help="number of pairs (default: one per input image; cycles if larger)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the test set in a non-empty output folder")
    parser.add_argument("--benchmark", action="store_true",
                        help="build the benchmark sets gfpgan, heavy, sr8 with fixed seeds")


def _load_preset(value: str | None) -> str | dict[str, Any]:
    if value is None:
        return "gfpgan"
    if value.lower().endswith((".yaml", ".yml")):
        import yaml

        path = Path(value)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise UserError(f"cannot read degradation config {path}: {exc}") from exc
        if isinstance(data, dict) and isinstance(data.get("degradation"), dict):
            data = data["degradation"]
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected a mapping of degradation options")
        return data
    return value


def run(args: argparse.Namespace) -> int:
    from mmrface.data import testset

    if args.benchmark:
        if args.preset is not None or args.seed is not None:
            raise UserError("--benchmark uses fixed presets and seeds: drop --preset/--seed")
        out = args.output or Path("testsets")
        written = testset.make_benchmark(out, size=args.size, count=args.count,
                                         overwrite=args.overwrite, faces=args.input)
        for path in written:
            print(f"wrote {path}")
        return 0
    if args.input is None or args.output is None:
        raise UserError("make-testset needs -i HQ_FOLDER and -o OUT (or --benchmark)")
    seed = 0 if args.seed is None else args.seed
    index = testset.make_testset(args.input, args.output, preset=_load_preset(args.preset),
                                 seed=seed, size=args.size, count=args.count,
                                 overwrite=args.overwrite)
    print(f"wrote {len(index['items'])} LQ/HQ pairs to {args.output} "
          f"(preset {index['preset']}, seed {seed}, {args.size}x{args.size})")
    return 0
