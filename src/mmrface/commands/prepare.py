"""`mmrface prepare`: turn ordinary photos into FFHQ-style aligned face crops (a training set).

    mmrface prepare -i photos/ -o faces/ --size 512                       # one folder of crops
    mmrface prepare -i hq/ -o data/ --size 256 --manifest manifest.csv \\
        --min-crop 128 --lq lq/ --lq-size 128                             # the training-data recipe

Writes `OUT/<stem>_<k>.png` (k = 0 for the largest face) and `OUT/landmarks.json`:
{"<crop file>": {"5": 5x2, "68": 68x2 (when dlib is installed), "size": S, "source": photo file
name, "box": face box in the photo, "score": detector score, "affine": 2x3 photo -> crop,
"crop_px": side of the crop in photo pixels, "colour": mean saturation 0-255, "yaw"/"pitch"/"roll":
estimated head pose in degrees (with the 68 points)}}, all points in crop pixels. Entries already
in landmarks.json are kept and their photos are not processed again (a rerun only adds what is
new). A photo without a face (or one that cannot be read) is reported in one line; the run goes on.

With `--manifest CSV` or `--val-fraction F` the crops are split **by identity** into `OUT/train/`
and `OUT/val/` (see `mmrface.data.recipe`), `--min-crop` and `--colour` filter them, `--lq DIR`
aligns a folder of real degraded photos (no ground truth) into `OUT/lq/train/` and `OUT/lq/val/`
for the self-supervised terms, and `OUT/prepare.json` records the settings and every count.
"""

from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmrface.errors import UserError
from mmrface.pipeline.align import align_faces, transform_points
from mmrface.pipeline.detect import DETECTORS, landmarks_68_in_crop
from mmrface.pipeline.detection import DetectionOptions, find_faces
from mmrface.pipeline.imageio import atomic_write_bytes, is_same_file, list_images, read_image, to_8bit, write_image

LANDMARKS_FILE = "landmarks.json"
SUMMARY_FILE = "prepare.json"
SKIPPED_FILE = "skipped.json"  # photos that gave no training face, with the reason


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--input", required=True, help="a photo or a folder of photos")
    parser.add_argument("-o", "--output", required=True, help="folder for the crops and landmarks.json")
    parser.add_argument("--size", type=int, default=512, help="crop size in pixels (default 512)")
    parser.add_argument("--detector", default="auto", choices=("auto", *DETECTORS),
                        help="face detector (default auto: mtcnn)")
    parser.add_argument("--fallback", default="auto", choices=("auto", *DETECTORS, "none"),
                        help="detector to try when the first finds no face (default auto: dlib-cnn when "
                             "dlib is installed, else none)")
    parser.add_argument("--largest-face", action="store_true", help="keep only the largest face of each photo")
    parser.add_argument("--only-center-face", action="store_true", help="keep only the face nearest the centre")
    parser.add_argument("--min-face", type=float, default=0, help="skip faces whose detector box is smaller (pixels)")
    parser.add_argument("--border", default="soft", choices=("soft", "reflect", "constant"),
                        help="fill for crop parts past the photo's edge (default soft)")
    parser.add_argument("--recursive", action="store_true", help="also read photos in sub-folders")
    parser.add_argument("--workers", type=int, default=1, help="processes that detect and align in parallel")
    recipe = parser.add_argument_group("training-data recipe (split by identity, filters, real LQ)")
    recipe.add_argument("--manifest", default=None,
                        help="CSV with columns file, split (train/val) and optionally id: split by it")
    recipe.add_argument("--val-fraction", type=float, default=None,
                        help="no manifest: put this share of identities into val (stable hash)")
    recipe.add_argument("--id-regex", default=None,
                        help="with --val-fraction: regex whose first group is the person in a file name "
                             "(default: the file stem, one person per photo)")
    recipe.add_argument("--min-crop", type=float, default=0,
                        help="keep faces whose aligned square spans at least this many photo pixels")
    recipe.add_argument("--colour", default="any", choices=("any", "colour", "grey"),
                        help="keep colour crops, grey ones, or both (mean saturation >= 40 is colour)")
    recipe.add_argument("--lq", default=None, help="folder of real degraded photos to align into OUT/lq/<split>/")
    recipe.add_argument("--lq-size", type=int, default=None, help="crop size of the --lq faces (default --size)")


@dataclass(frozen=True)
class Job:
    """One photo to process and the crop stem its faces get."""

    photo: Path
    stem: str
    out: Path
    source: str


@dataclass(frozen=True)
class Settings:
    size: int
    detection: DetectionOptions
    border: str


def _is_recipe(args: argparse.Namespace) -> bool:
    return args.manifest is not None or args.val_fraction is not None


def run(args: argparse.Namespace) -> int:
    from mmrface.data.recipe import FaceFilter, IdentitySplit

    for flag, value in (("--size", args.size), ("--lq-size", args.lq_size)):
        if value is not None and not 16 <= value <= 4096:
            raise UserError(f"{flag} must be between 16 and 4096, got {value}")
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    if args.manifest is not None and args.val_fraction is not None:
        raise UserError("give --manifest or --val-fraction, not both")
    recipe = _is_recipe(args)
    if not recipe and (args.lq or args.min_crop or args.colour != "any"):
        raise UserError("--lq, --min-crop and --colour belong to the recipe: add --manifest or --val-fraction")
    photos = list_images(args.input, recursive=args.recursive)
    if not photos:
        raise UserError(f"{args.input}: no images (jpg, png, webp, bmp, tif) found")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    split = None
    if recipe:
        split = (IdentitySplit.from_manifest(args.manifest) if args.manifest
                 else IdentitySplit.by_hash(args.val_fraction, args.id_regex))
    detection = DetectionOptions(backend=args.detector, fallback=args.fallback, min_size=args.min_face,
                                 only_center=args.only_center_face, largest=args.largest_face)
    detection.resolved_fallback()  # a fallback named but not installed: one clear error before any work
    settings = Settings(args.size, detection, args.border)
    face_filter = FaceFilter(args.min_crop, args.colour)
    summary: dict = {"settings": {k: v for k, v in vars(args).items()
                                  if isinstance(v, (str, int, float, bool, type(None)))}}
    summary["hq"] = _prepare_set(photos, args.input, out, settings, split, face_filter, args.workers)
    if args.lq:
        lq_photos = list_images(args.lq, recursive=args.recursive)
        if not lq_photos:
            raise UserError(f"--lq {args.lq}: no images found")
        lq_settings = Settings(args.lq_size or args.size, detection.replace(largest=True, only_center=False,
                                                                             min_size=0), args.border)
        summary["lq"] = _prepare_set(lq_photos, args.lq, out / "lq", lq_settings, split, FaceFilter(), args.workers)
    if recipe:
        atomic_write_bytes(out / SUMMARY_FILE, (json.dumps(summary, indent=1, sort_keys=True) + "\n").encode())
        print(_summary_line(summary))
    return 0 if summary["hq"]["faces"] else 1


def _prepare_set(photos: list[Path], input_arg: str, out: Path, settings: Settings, split, face_filter,
                 workers: int) -> dict:
    """Detect, align, filter and write the faces of `photos`; returns the counts of the folder.

    Photos already in a landmarks.json, or listed in `OUT/skipped.json` (no face, unreadable,
    filtered out), are not processed again, so the counts always describe the whole folder.
    """
    root = Path(input_arg) if Path(input_arg).is_dir() else Path(input_arg).parent
    folders = [out / s for s in ("train", "val")] if split is not None else [out]
    records = {f: _load_records(f / LANDMARKS_FILE) for f in folders}
    skipped: dict[str, str] = _load_records(out / SKIPPED_FILE)
    done = {rec.get("source") for recs in records.values() for rec in recs.values()} | set(skipped)
    unlisted, new_faces, new_skips = 0, 0, 0
    used: set[str] = set()
    jobs: list[Job] = []
    for photo in photos:
        source = str(photo.relative_to(root)) if photo.is_relative_to(root) else photo.name
        stem = _unique_stem(photo, root, used)
        if source in done:
            continue
        target = out
        if split is not None:
            hit = split.lookup(photo)
            if hit is None:
                unlisted += 1
                continue
            target = out / hit[1]
        jobs.append(Job(photo, stem, target, source))
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    for job, (status, faces) in zip(jobs, _run_jobs(jobs, settings, workers)):
        if status != "ok":
            print(f"skipped: {faces[0]}" if status == "unreadable" else f"{job.photo}: no face found")
            skipped[job.source] = status
            new_skips += 1
            continue
        kept, reasons = 0, []
        for name, crop, record in faces:
            keep, reason = face_filter.check(to_8bit(crop), record["crop_px"])
            if not keep:
                reasons.append(reason)
                continue
            if is_same_file(job.out / name, job.photo):
                raise UserError(f"{job.out / name}: would overwrite the input photo; choose another -o")
            write_image(job.out / name, crop)
            records[job.out][name] = record
            kept += 1
        if not kept:
            skipped[job.source] = reasons[0]
            new_skips += 1
        new_faces += kept
        print(f"{job.photo}: {kept} face{'s' if kept != 1 else ''}"
              + (f" ({', '.join(reasons)}: filtered)" if reasons else ""))
    for folder, recs in records.items():
        if recs:
            _write_records(folder / LANDMARKS_FILE, recs)
    if skipped:
        _write_records(out / SKIPPED_FILE, skipped)
    by_reason: dict[str, int] = {}
    for reason in skipped.values():
        by_reason[reason] = by_reason.get(reason, 0) + 1
    counts = {"photos": len(photos), "not_in_manifest": unlisted, "skipped": by_reason,
              "faces": sum(len(r) for r in records.values()),
              "by_split": {(f.name if split is not None else "all"): len(r) for f, r in records.items()}}
    print(f"{out}: {counts['faces']} faces from {len(photos)} photos ({new_faces} new this run"
          + (f"; skipped: {', '.join(f'{k} {v}' for k, v in sorted(by_reason.items()))}" if by_reason else "")
          + (f"; {new_skips} newly skipped, listed in {out / SKIPPED_FILE}" if new_skips else "") + ")")
    return counts


def _write_records(path: Path, records: dict) -> None:
    """One line per entry: readable, and diffs stay small."""
    lines = [f"{json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in sorted(records.items())]
    atomic_write_bytes(path, ("{\n" + ",\n".join(lines) + "\n}\n").encode("utf-8"))


def _run_jobs(jobs: list[Job], settings: Settings, workers: int):
    """Results in job order, each as soon as it is ready (so progress is printed as it goes)."""
    if workers == 1 or len(jobs) < 2:
        yield from (_process(job, settings) for job in jobs)
        return
    with ProcessPoolExecutor(workers, initializer=_worker_init) as pool:
        yield from pool.map(_process, jobs, [settings] * len(jobs), chunksize=8)


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"


def _process(job: Job, s: Settings) -> tuple[str, list]:
    """('ok', [(crop name, crop, record)]), ('unreadable', [message]) or ('no_face', [])."""
    from mmrface.data.pose import head_pose
    from mmrface.data.recipe import colourfulness
    from mmrface.pipeline.align import crop_extent

    try:
        image = read_image(job.photo)
    except UserError as exc:
        return "unreadable", [str(exc)]
    faces = find_faces(image.rgb, s.detection)
    if not faces:
        return "no_face", []
    crops, affines = align_faces(image.pixels, faces, s.size, border=s.border)  # 16-bit stays 16-bit
    with_68 = _dlib_available()
    out = []
    for k, (face, crop, affine) in enumerate(zip(faces, crops, affines)):
        record = {
            "5": np.round(transform_points(face.landmarks, affine), 2).tolist(),
            "size": s.size,
            "source": job.source,
            "box": np.round(face.box.astype(np.float64), 1).tolist(),
            "score": round(float(face.score), 4),
            "affine": np.round(affine, 6).tolist(),
            "crop_px": round(crop_extent(affine, s.size), 1),
            "colour": round(colourfulness(to_8bit(crop)), 1),
        }
        if with_68:
            pts = landmarks_68_in_crop(to_8bit(crop))
            record["68"] = np.round(pts, 1).tolist()
            try:
                record["yaw"], record["pitch"], record["roll"] = (round(a, 1) for a in head_pose(pts, s.size))
            except ValueError:
                pass
        out.append((f"{job.stem}_{k}.png", crop, record))
    return "ok", out


def _summary_line(summary: dict) -> str:
    def part(name: str, c: dict) -> str:
        splits = ", ".join(f"{k} {v}" for k, v in sorted(c["by_split"].items()))
        skips = ", ".join(f"{k} {v}" for k, v in sorted(c["skipped"].items())) or "none"
        return f"{name}: {c['faces']} faces ({splits}); skipped: {skips}; not in the manifest {c['not_in_manifest']}"

    return "recipe: " + "; ".join(part(k, summary[k]) for k in ("hq", "lq") if k in summary)


def _unique_stem(photo: Path, root: Path, used: set[str]) -> str:
    """Crop name stem: the photo's stem, with its sub-folder and extension added when needed."""
    rel = photo.relative_to(root) if photo.is_relative_to(root) else Path(photo.name)
    stem = "__".join((*rel.parent.parts, rel.stem))
    if stem in used:
        stem = f"{stem}_{photo.suffix.lstrip('.').lower()}"
    used.add(stem)
    return stem


def _load_records(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read the existing landmarks file ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a landmarks file (expected a JSON object)")
    return data


def _dlib_available() -> bool:
    try:
        from mmrface.pipeline.detect import _shape_predictor_68

        _shape_predictor_68()
        return True
    except UserError:
        return False
