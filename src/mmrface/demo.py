"""`make demo` / `python -m mmrface.demo`: restore degraded copies of the bundled photos.

1. Each licensed photo in the package's `assets/photos/` is degraded the same way every time (seeded): down-
   scaled ×4, blurred, noised and JPEG-compressed, then scaled back — an "old small photo".
2. The bundled default weights restore every face and paste it back on the ×2 photo.
3. `results/demo/` gets the degraded inputs, the restored photos and side-by-side comparisons.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from mmrface.resources import SAMPLE_PHOTOS as PHOTOS

DEFAULT_WEIGHTS = "mmrface-small"


def old_photo(rgb: np.ndarray, seed: int, scale: int = 4, sigma: float = 1.2, noise: float = 6.0,
              quality: int = 35) -> np.ndarray:
    """A repeatable heavy degradation of a whole photo (uint8 RGB in and out, same size)."""
    h, w = rgb.shape[:2]
    rng = np.random.default_rng(seed)
    small = cv2.resize(rgb, (max(8, w // scale), max(8, h // scale)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small.astype(np.float32), (0, 0), sigma)
    small = np.clip(small + rng.normal(0, noise, small.shape), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", small[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    small = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return np.ascontiguousarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC))


def main(argv: list[str] | None = None) -> int:
    from mmrface.commands.restore import compare_image
    from mmrface.errors import UserError
    from mmrface.pipeline.imageio import list_images, read_image, write_image
    from mmrface.pipeline.restorer import Restorer
    from mmrface.weights import registry

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default="results/demo")
    ap.add_argument("--weights", default=DEFAULT_WEIGHTS)
    ap.add_argument("-w", "--fidelity", type=float, default=0.7)
    ap.add_argument("-s", "--upscale", type=float, default=2)
    args = ap.parse_args(argv)

    if args.weights == DEFAULT_WEIGHTS and DEFAULT_WEIGHTS not in registry():
        print(f"the default weights {DEFAULT_WEIGHTS!r} are not bundled in this checkout; "
              "showing the model summary instead", file=sys.stderr)
        from mmrface.cli import main as cli

        return cli(["info", "--config", "small"])
    out = Path(args.output)
    try:
        restorer = Restorer(args.weights, upscale=args.upscale, fidelity=args.fidelity)
        t0, n_faces = time.perf_counter(), 0
        for k, path in enumerate(list_images(PHOTOS)):
            rgb = read_image(path).rgb
            lq = old_photo(rgb, seed=k)
            write_image(out / "inputs" / f"{path.stem}.jpg", lq, quality=95)
            result = restorer.restore(lq)
            n_faces += len(result.faces)
            write_image(out / f"{path.stem}.png", result.image)
            write_image(out / "compare" / f"{path.stem}.jpg", compare_image(lq, result.image), quality=92)
            print(f"{path.name}: {len(result.faces)} face(s) -> {out / (path.stem + '.png')}")
    except UserError as exc:
        print(f"mmrface demo: error: {exc}", file=sys.stderr)
        return 2
    print(f"{n_faces} face(s) restored in {time.perf_counter() - t0:.1f} s; "
          f"before/after pictures in {out / 'compare'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
