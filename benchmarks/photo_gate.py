"""Whole-photo gate: val photos as they are, degraded as whole photos, restored by `mmrface restore -s 1`.

The faces are those of a prepared val folder (`mmrface prepare` output: `landmarks.json` gives each
face's source photo, its aligned square in photo pixels `crop_px`, the photo -> crop affine, yaw and
colour) whose aligned square spans `--min-px` … `--max-px` photo pixels. Each source photo is read
as it is (never upsampled), degraded at three seeded levels (down-scale, blur, noise, JPEG, back to
the photo's size), restored with the Restorer's defaults at upscale 1 (detection, alignment, paste),
and scored on the face region: the aligned square of the original, the degraded and the restored
photo, resampled to 256 px with the stored affine. Rows: degraded photo vs each `--weights`.

    python benchmarks/photo_gate.py --faces data/congress/val --photos ../congress/hq --weights mmrface-small

`--skip-first N` leaves out the first N faces (sorted by name): with the default 96 these are the
identities of `data/congress/valset`, which chose the recipes, so the gate is reported on the rest.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

LEVELS = {  # scale, blur sigma (at the small size), noise std, JPEG quality
    "mild": (2, 0.6, 2.0, 80),
    "medium": (3, 1.0, 5.0, 55),
    "strong": (4, 1.5, 9.0, 35),
}
CROP = 256


def degrade_photo(rgb: np.ndarray, level: str, seed: int) -> np.ndarray:
    scale, sigma, noise, quality = LEVELS[level]
    h, w = rgb.shape[:2]
    rng = np.random.default_rng(seed)
    small = cv2.resize(rgb, (max(8, w // scale), max(8, h // scale)), interpolation=cv2.INTER_AREA).astype(np.float32)
    small = cv2.GaussianBlur(small, (0, 0), sigma)
    small = np.clip(small + rng.normal(0, noise, small.shape), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(small[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    small = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return np.ascontiguousarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC))


def face_region(rgb: np.ndarray, affine: np.ndarray, size: int) -> np.ndarray:
    return cv2.warpAffine(rgb, affine, (CROP, CROP), flags=cv2.INTER_AREA if size > CROP else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)


def pose_group(yaw: float) -> str:
    a = abs(yaw)
    return "|yaw| < 15" if a < 15 else ("15-30" if a <= 30 else "> 30")


def select_faces(folder: Path, lo: float, hi: float, skip_first: int, limit: int | None) -> list[tuple[str, dict]]:
    meta = json.loads((folder / "landmarks.json").read_text())
    names = sorted(meta)[skip_first:]
    picked = [(n, meta[n]) for n in names if lo <= float(meta[n]["crop_px"]) <= hi]
    return picked[:limit] if limit else picked


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--faces", type=Path, required=True, help="prepared val folder with landmarks.json")
    p.add_argument("--photos", type=Path, required=True, help="folder of the source photos")
    p.add_argument("--weights", default="mmrface-small", help="comma-separated weight names or files")
    p.add_argument("--min-px", type=float, default=200)
    p.add_argument("--max-px", type=float, default=400)
    p.add_argument("--skip-first", type=int, default=96)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--levels", default="mild,medium,strong")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    from mmrface.data.recipe import COLOUR_THRESHOLD
    from mmrface.metrics import get_metric
    from mmrface.pipeline.imageio import read_image
    from mmrface.pipeline.restorer import Restorer

    faces = select_faces(args.faces, args.min_px, args.max_px, args.skip_first, args.limit)
    if not faces:
        print("error: no face in that size range", file=sys.stderr)
        return 2
    psnr, lpips = get_metric("psnr"), get_metric("lpips")
    restorers = {w: Restorer(w, upscale=1) for w in args.weights.split(",")}
    rows = []  # one per (face, level, method)
    t0 = time.time()
    for k, (name, m) in enumerate(faces):
        src = args.photos / m["source"]
        if not src.is_file():
            print(f"error: source photo not found: {src}", file=sys.stderr)
            return 2
        rgb = read_image(src).rgb
        affine = np.asarray(m["affine"], np.float64)
        ref = face_region(rgb, affine, int(m["crop_px"]))
        info = {"face": name, "pose": pose_group(float(m["yaw"])),
                "colour": "colour" if float(m["colour"]) >= COLOUR_THRESHOLD else "grey"}
        for level in args.levels.split(","):
            lq = degrade_photo(rgb, level, seed=1000 * k + list(LEVELS).index(level))
            outs = {"degraded photo": lq}
            for wname, r in restorers.items():
                outs[wname] = r.restore(lq).image
            for method, img in outs.items():
                crop = face_region(img, affine, int(m["crop_px"]))
                rows.append({**info, "level": level, "method": method, "psnr": psnr(crop, ref), "lpips": lpips(crop, ref)})
        if k % 20 == 0:
            print(f"{k + 1}/{len(faces)} faces, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows))
    print(report(rows, len(faces), " ".join(argv if argv is not None else sys.argv[1:])))
    return 0


def report(rows: list[dict], n: int, command: str) -> str:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    levels = list(dict.fromkeys(r["level"] for r in rows))
    out = [f"{time.strftime('%Y-%m-%d')}, `python benchmarks/photo_gate.py {command}` ({n} faces)", "",
           "| faces | level | " + " | ".join(f"{m} PSNR / LPIPS" for m in methods) + " | best model minus degraded |",
           "|---" * (len(methods) + 3) + "|"]
    groups = [("all", lambda r: True)] + [(g, (lambda g: lambda r: r["colour"] == g)(g)) for g in ("colour", "grey")] + \
             [(g, (lambda g: lambda r: r["pose"] == g)(g)) for g in ("|yaw| < 15", "15-30", "> 30")]
    for gname, keep in groups:
        for level in levels:
            cells, means = [], {}
            for m in methods:
                sel = [r for r in rows if r["method"] == m and r["level"] == level and keep(r)]
                if not sel:
                    cells.append("-")
                    continue
                means[m] = (float(np.mean([r["psnr"] for r in sel])), float(np.mean([r["lpips"] for r in sel])), len(sel))
                cells.append(f"{means[m][0]:.2f} / {means[m][1]:.4f}")
            if "degraded photo" not in means:
                continue
            base = means["degraded photo"]
            models = [m for m in means if m != "degraded photo"]
            best = max(models, key=lambda m: means[m][0]) if models else None
            delta = f"{means[best][0] - base[0]:+.2f} dB / {means[best][1] - base[1]:+.4f}" if best else "-"
            out.append(f"| {gname} ({base[2]}) | {level} | " + " | ".join(cells) + f" | {delta} |")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
