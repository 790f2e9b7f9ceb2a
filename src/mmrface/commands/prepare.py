"""`mmrface prepare`: turn ordinary photos into FFHQ-style aligned face crops.

    mmrface prepare -i photos/ -o faces/ --size 512

Writes `OUT/<stem>_<k>.png` (k = 0 for the largest face) and `OUT/landmarks.json`:
{"<crop file>": {"5": 5x2, "68": 68x2 (when dlib is installed), "size": S, "source": photo file
name, "box": face box in the photo, "score": detector score, "affine": 2x3 photo -> crop}}, all
points in crop pixels. Entries already in landmarks.json for other files are kept. A photo without
a face (or one that cannot be read) is reported in one line and the run goes on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mmrface.errors import UserError
from mmrface.pipeline.align import align_faces, transform_points
from mmrface.pipeline.detect import DETECTORS, landmarks_68_in_crop
from mmrface.pipeline.detection import DetectionOptions, find_faces
from mmrface.pipeline.imageio import atomic_write_bytes, is_same_file, list_images, read_image, to_8bit, write_image

LANDMARKS_FILE = "landmarks.json"


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
    parser.add_argument("--min-face", type=float, default=0, help="skip faces smaller than this (pixels)")
    parser.add_argument("--border", default="soft", choices=("soft", "reflect", "constant"),
                        help="fill for crop parts past the photo's edge (default soft)")
    parser.add_argument("--recursive", action="store_true", help="also read photos in sub-folders")


def run(args: argparse.Namespace) -> int:
    if not 16 <= args.size <= 4096:
        raise UserError(f"--size must be between 16 and 4096, got {args.size}")
    photos = list_images(args.input, recursive=args.recursive)
    if not photos:
        raise UserError(f"{args.input}: no images (jpg, png, webp, bmp, tif) found")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    detection = DetectionOptions(backend=args.detector, fallback=args.fallback, min_size=args.min_face,
                                 only_center=args.only_center_face, largest=args.largest_face)
    detection.resolved_fallback()  # a fallback named but not installed: say so before the first photo
    root = Path(args.input) if Path(args.input).is_dir() else Path(args.input).parent
    records = _load_records(out / LANDMARKS_FILE)
    with_68 = _dlib_available()
    n_faces = n_ok = 0
    failed: list[str] = []
    used: set[str] = set()
    for photo in photos:
        try:
            image = read_image(photo)
        except UserError as exc:
            print(f"skipped: {exc}")
            failed.append(str(photo))
            continue
        faces = find_faces(image.rgb, detection)
        if not faces:
            print(f"{photo}: no face found")
            failed.append(str(photo))
            continue
        crops, affines = align_faces(image.pixels, faces, args.size, border=args.border)  # 16-bit stays 16-bit
        stem = _unique_stem(photo, root, used)
        for k, (face, crop, affine) in enumerate(zip(faces, crops, affines)):
            name = f"{stem}_{k}.png"
            if is_same_file(out / name, photo):
                raise UserError(f"{out / name}: would overwrite the input photo; choose another -o")
            write_image(out / name, crop)
            record = {
                "5": np.round(transform_points(face.landmarks, affine), 2).tolist(),
                "size": args.size,
                "source": str(photo.relative_to(root)) if photo.is_relative_to(root) else photo.name,
                "box": np.round(face.box.astype(np.float64), 1).tolist(),
                "score": round(float(face.score), 4),
                "affine": np.round(affine, 6).tolist(),
            }
            if with_68:
                record["68"] = np.round(landmarks_68_in_crop(to_8bit(crop)), 1).tolist()
            records[name] = record
        n_faces += len(faces)
        n_ok += 1
        print(f"{photo}: {len(faces)} face{'s' if len(faces) != 1 else ''}")
    if n_faces:
        # one line per crop: readable, and diffs stay small
        lines = [f"{json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in sorted(records.items())]
        text = "{\n" + ",\n".join(lines) + "\n}\n"
        atomic_write_bytes(out / LANDMARKS_FILE, text.encode("utf-8"))
    print(
        f"prepared {n_faces} face{'s' if n_faces != 1 else ''} from {n_ok} of {len(photos)} "
        f"photo{'s' if len(photos) != 1 else ''} into {out}"
        + (f"; {len(failed)} without a usable face: {', '.join(failed)}" if failed else "")
    )
    return 0 if n_faces else 1


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
