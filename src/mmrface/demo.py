"""`make demo` / `python -m mmrface.demo`: restore degraded copies of the bundled photos.

1. Each licensed photo in the package's `assets/photos/` is degraded the same way every time (seeded): down-
   scaled ×4, blurred, noised and JPEG-compressed, then scaled back — an "old small photo".
2. The bundled default weights restore every face and paste it back on the ×2 photo.
3. A group picture: the face of each photo, shrunk so that it spans about `GROUP_FACE_PX` pixels,
   side by side on one canvas and degraded harder (the size range where a 128/256-px model helps
   most: small faces in an old group photo); its compare image shows each face before and after,
   enlarged so that both can be seen.
4. `results/demo/` gets the degraded inputs, the restored photos and side-by-side comparisons.
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
GROUP_FACE_PX = 64  # face box side in the group picture (before -s): a 128-px model at -s 2
GROUP_TILE = 160  # each person's square on the group canvas


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


def group_picture(photos: list[np.ndarray]) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """One canvas with the main face of each photo shrunk to about GROUP_FACE_PX; the tiles' boxes."""
    from mmrface.pipeline.detection import find_faces

    tiles, boxes = [], []
    for rgb in photos:
        faces = find_faces(rgb)
        if not faces:
            continue
        x0, y0, x1, y1 = faces[0].box
        side, cx, cy = max(x1 - x0, y1 - y0), (x0 + x1) / 2, (y0 + y1) / 2
        half = side * GROUP_TILE / GROUP_FACE_PX / 2  # the tile around the face, in photo pixels
        m = np.float32([[GROUP_TILE / (2 * half), 0, GROUP_TILE / 2 - cx * GROUP_TILE / (2 * half)],
                        [0, GROUP_TILE / (2 * half), GROUP_TILE / 2 - cy * GROUP_TILE / (2 * half)]])
        tiles.append(cv2.warpAffine(rgb, m, (GROUP_TILE, GROUP_TILE), flags=cv2.INTER_AREA,
                                    borderMode=cv2.BORDER_REPLICATE))
    gap = GROUP_TILE // 8
    canvas = np.full((GROUP_TILE + 2 * gap, len(tiles) * (GROUP_TILE + gap) + gap, 3), 128, np.uint8)
    for i, tile in enumerate(tiles):
        x = gap + i * (GROUP_TILE + gap)
        canvas[gap:gap + GROUP_TILE, x:x + GROUP_TILE] = tile
        boxes.append((x, gap, x + GROUP_TILE, gap + GROUP_TILE))
    return canvas, boxes


def face_compare(before: np.ndarray, after: np.ndarray, boxes: list[tuple[int, int, int, int]],
                 side: int = 256) -> np.ndarray:
    """Each tile before (top row) and after (bottom row), enlarged to `side` pixels."""
    sy, sx = after.shape[0] / before.shape[0], after.shape[1] / before.shape[1]
    rows = []
    for img, scale_x, scale_y in ((before, 1.0, 1.0), (after, sx, sy)):
        cells = []
        for x0, y0, x1, y1 in boxes:
            crop = img[round(y0 * scale_y):round(y1 * scale_y), round(x0 * scale_x):round(x1 * scale_x)]
            cells.append(cv2.resize(crop, (side, side), interpolation=cv2.INTER_CUBIC))
            cells.append(np.full((side, 6, 3), 255, np.uint8))
        rows.append(np.concatenate(cells[:-1], axis=1))
        rows.append(np.full((6, rows[-1].shape[1], 3), 255, np.uint8))
    return np.concatenate(rows[:-1], axis=0)


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
        t0, n_faces, originals = time.perf_counter(), 0, []
        for k, path in enumerate(list_images(PHOTOS)):
            rgb = read_image(path).rgb
            originals.append(rgb)
            lq = old_photo(rgb, seed=k)
            write_image(out / "inputs" / f"{path.stem}.jpg", lq, quality=95)
            result = restorer.restore(lq)
            n_faces += len(result.faces)
            write_image(out / f"{path.stem}.png", result.image)
            write_image(out / "compare" / f"{path.stem}.jpg", compare_image(lq, result.image), quality=92)
            print(f"{path.name}: {len(result.faces)} face(s) -> {out / (path.stem + '.png')}")
        group, boxes = group_picture(originals)
        lq = old_photo(group, seed=len(originals), scale=2, sigma=1.0, noise=5.0, quality=40)
        write_image(out / "inputs" / "group.jpg", lq, quality=95)
        result = restorer.restore(lq)
        n_faces += len(result.faces)
        write_image(out / "group.png", result.image)
        write_image(out / "compare" / "group.jpg", face_compare(lq, result.image, boxes), quality=92)
        print(f"group picture ({len(boxes)} faces of about {GROUP_FACE_PX} px): {len(result.faces)} restored "
              f"-> {out / 'group.png'}; each face before / after in {out / 'compare' / 'group.jpg'}")
    except UserError as exc:
        print(f"mmrface demo: error: {exc}", file=sys.stderr)
        return 2
    print(f"{n_faces} face(s) restored in {time.perf_counter() - t0:.1f} s; "
          f"before/after pictures in {out / 'compare'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
