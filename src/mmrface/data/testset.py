"""Seeded, reproducible LQ/HQ test sets (`mmrface make-testset`).

Layout written into OUT:
    lq/00000.png ...   degraded faces, same size as the HQ
    hq/00000.png ...   the source faces, centre-cropped to a square and resized to `size`
    params.json        {"format", "version", "preset", "seed", "size", "config", "items": [
                         {"name", "source", "preset", "seed", "index", "params"}, ...]}
Item i uses source i mod N (sources sorted by name) and the generator
`np.random.default_rng([seed, i])`; `params` is the full degradation record, so
`Degradation.apply(hq, params)` reproduces the LQ image. PNGs use a fixed compression level and
carry no time stamps, and the JSON is written with sorted keys: the same inputs and seed give
byte-identical files.

Benchmark sets (`make_benchmark`) are built from the repo's bundled aligned faces
(`assets/faces/`) with the seeds fixed in `BENCHMARK_SEEDS`: gfpgan 1001, heavy 1002, sr8 1003.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from mmrface.data.degrade import Degradation
from mmrface.data.crops import center_square, resize_square
from mmrface.errors import UserError
from mmrface.pipeline.imageio import ImageReadError, read_image, readable_images, write_image

FORMAT = "mmrface-testset"
VERSION = 1
#: preset -> seed of the three benchmark sets (never change: results are compared across runs).
BENCHMARK_SEEDS = {"gfpgan": 1001, "heavy": 1002, "sr8": 1003}
BENCHMARK_SIZE = 512
PNG_COMPRESSION = 6  # fixed: the same pixels give the same bytes as in every earlier set


def bundled_faces_dir() -> Path:
    """The four aligned sample faces shipped in the package (`mmrface/assets/faces/`)."""
    from mmrface.resources import SAMPLE_FACES

    return SAMPLE_FACES


def _prepare_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"output folder {out} is not empty (use --overwrite to replace "
                            "its test set)")
        # remove only what a previous make-testset wrote
        for sub in ("lq", "hq"):
            for p in (out / sub).glob("*.png") if (out / sub).is_dir() else ():
                p.unlink()
        (out / "params.json").unlink(missing_ok=True)
    for sub in ("lq", "hq"):
        (out / sub).mkdir(parents=True, exist_ok=True)


def make_testset(src: str | Path, out: str | Path, preset: str | Mapping[str, Any] = "gfpgan",
                 seed: int = 0, size: int = 512, count: int | None = None,
                 overwrite: bool = False,
                 progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Write a seeded test set from the HQ faces in `src` into `out`; returns the index written
    to params.json. `preset` is a preset name or a degradation dict (see `degrade.py`)."""
    src, out = Path(src), Path(out)
    degradation = Degradation.from_config(preset)  # validate before touching the output
    if size < 8:
        raise UserError(f"--size must be at least 8, got {size}")
    if not src.is_dir():
        raise UserError(f"input folder not found: {src}")
    sources = readable_images(src)
    if not sources:
        raise UserError(f"no readable images (png/jpg/webp/bmp/tif) in {src}")
    count = len(sources) if count is None else int(count)
    if count < 1:
        raise UserError(f"--count must be positive, got {count}")
    _prepare_output(out, overwrite)

    def load_hq(k: int) -> np.ndarray | None:
        try:
            return resize_square(center_square(read_image(sources[k]).rgb), size)  # 8-bit sets
        except ImageReadError as exc:
            warnings.warn(f"skipping unreadable image {exc}", stacklevel=3)
            return None

    items = []
    cache: dict[int, np.ndarray | None] = {}
    keep = count > len(sources) and len(sources) <= 64  # cycling through a small folder
    for i in range(count):
        k = i % len(sources)
        hq = cache[k] if k in cache else load_hq(k)
        if keep:
            cache[k] = hq
        if hq is not None:
            lq, params = degradation(hq, np.random.default_rng([seed, i]))
            name = f"{i:05d}.png"
            write_image(out / "hq" / name, hq, png_compression=PNG_COMPRESSION)
            write_image(out / "lq" / name, lq, png_compression=PNG_COMPRESSION)
            items.append({"name": name, "source": sources[k].name,
                          "preset": degradation.config.preset, "seed": seed, "index": i,
                          "params": params})
        if progress:
            progress(i + 1, count)
    if not items:
        raise UserError(f"none of the images in {src} could be decoded")
    index = {"format": FORMAT, "version": VERSION, "preset": degradation.config.preset,
             "seed": seed, "size": size, "config": dataclasses.asdict(degradation.config),
             "items": items}
    (out / "params.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    return index


def make_benchmark(out: str | Path = "testsets", size: int = BENCHMARK_SIZE,
                   count: int | None = None, overwrite: bool = False,
                   faces: str | Path | None = None) -> list[Path]:
    """Build the benchmark sets `out/gfpgan`, `out/heavy`, `out/sr8` (seeds `BENCHMARK_SEEDS`)
    from the bundled aligned faces (or from `faces`)."""
    faces_dir = Path(faces) if faces is not None else bundled_faces_dir()
    if not faces_dir.is_dir() or not readable_images(faces_dir):
        raise UserError(f"no bundled aligned faces in {faces_dir}: the benchmark sets are built "
                        "from assets/faces/*.png (512x512 aligned crops), which are missing")
    written = []
    for name, seed in BENCHMARK_SEEDS.items():
        target = Path(out) / name
        make_testset(faces_dir, target, preset=name, seed=seed, size=size, count=count,
                     overwrite=overwrite)
        written.append(target)
    return written
