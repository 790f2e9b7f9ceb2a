"""`mmrface restore`: restore every face in photos, folders or already-aligned crops.

GFPGAN-compatible flags where they exist (-i -o -s -w --only-center-face --aligned --ext --suffix);
the input may also be given without -i (`mmrface restore photos/ -o out/`). `--weights auto` (the
default) uses the best installed model and says which; a published name is fetched on first use.
Never overwrites an input; skips outputs that exist unless --overwrite, so an interrupted batch
resumes where it stopped. A bad file gets one line and the batch goes on; the exit code is 1 when
any file failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmrface.errors import UserError
from mmrface.hub.choose import add_weights_arguments

OUTPUT_EXTS = ("auto", "png", "jpg", "webp", "bmp", "tif", "mp4", "mkv", "mov", "webm")
VIDEO_EXTS = {"mp4", "mkv", "mov", "webm"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input_arg", nargs="?", default=None, metavar="INPUT", help="same as -i")
    p.add_argument("-i", "--input", default=None,
                   help="image or video file, or a folder of them (videos: mp4, mov, mkv, webm, avi, m4v)")
    p.add_argument("-o", "--output", default="results", help="output folder (default: results)")
    p.add_argument("-s", "--upscale", type=float, default=2, help="final upscale of the whole photo (default 2)")
    add_weights_arguments(p)
    p.add_argument("--noise", default="stored", choices=["stored", "random", "zero"],
                   help="StyleGAN2 noise: the maps stored in the weight file (stored: repeatable, default), a "
                        "fresh draw per face like GFPGAN's own code (random), or none (zero)")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"],
                   help="network runtime: torch, or onnx (ONNX Runtime, needs --onnx); auto = onnx when --onnx is given")
    p.add_argument("--onnx", default=None, metavar="FILE", help="graph written by `mmrface export` (then --weights is unused)")
    p.add_argument("--aligned", action="store_true", help="inputs are already aligned face crops")
    p.add_argument("--only-center-face", action="store_true", help="restore only the face nearest the centre")
    p.add_argument("--largest-face", action="store_true", help="restore only the largest face")
    p.add_argument("--min-face-size", type=int, default=0, help="ignore faces smaller than this (pixels)")
    p.add_argument("--detector", default="auto", help="face detector backend (auto, dlib-hog, dlib-cnn, mtcnn)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--batch-size", type=int, default=4, help="faces per network call")
    p.add_argument("--large-faces", default="blend", choices=["blend", "keep", "restore"],
                   help="a face larger than the model's output: blend (default: the restoration's correction "
                        "below the model's resolution, the photo's finer detail kept), keep it as it is, or "
                        "restore it like any face")
    p.add_argument("--force-restore", action="store_true", help="same as --large-faces restore")
    p.add_argument("--paste-mask", default="face", choices=["face", "square"],
                   help="blend only the face region (default) or the whole aligned square")
    p.add_argument("--ext", default="auto", choices=OUTPUT_EXTS, help="output format (auto = same as input)")
    p.add_argument("--suffix", default="", help="suffix added to output file names")
    p.add_argument("--recursive", "-r", action="store_true", help="search the input folder recursively")
    p.add_argument("--save-faces", action="store_true", help="also save the cropped and restored faces")
    p.add_argument("--compare", action="store_true", help="also save a side-by-side before/after image")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    from mmrface.batch import add_arguments as add_batch_arguments

    add_batch_arguments(p)  # --engine ray and its flags


def input_path(args) -> Path:
    """The input of `restore`: -i or the positional INPUT (the same if both are given)."""
    given = [v for v in (args.input, args.input_arg) if v is not None]
    if not given:
        raise UserError("no input: mmrface restore PHOTO_OR_FOLDER (or -i PHOTO_OR_FOLDER)")
    if len(given) == 2 and Path(given[0]) != Path(given[1]):
        raise UserError(f"two inputs: -i {given[0]} and {given[1]}; give one")
    return Path(given[0]).expanduser()


@dataclass
class Summary:
    files: int = 0
    restored: int = 0
    faces: int = 0
    no_face: list[str] = field(default_factory=list)
    skipped: int = 0
    kept: int = 0  # faces kept as they were (larger than the model's output)
    errors: list[str] = field(default_factory=list)

    def report(self, seconds: float) -> str:
        kept = f", {self.kept} kept as they were (--large-faces keep)" if self.kept else ""
        lines = [f"{self.files} file(s): {self.restored} written, {self.skipped} skipped (exist), "
                 f"{len(self.errors)} failed; {self.faces} face(s) restored{kept}; "
                 f"{len(self.no_face)} file(s) with no face; {seconds:.1f} s"]
        if self.no_face:
            lines.append("no face found in: " + ", ".join(self.no_face[:10]) + (" ..." if len(self.no_face) > 10 else ""))
        return "\n".join(lines)


def output_path(src: Path, root: Path | None, out_dir: Path, ext: str, suffix: str) -> Path:
    rel = src.relative_to(root) if root is not None else Path(src.name)
    out_ext = src.suffix.lower().lstrip(".") if ext == "auto" else ext
    out_ext = {"jpeg": "jpg", "tiff": "tif"}.get(out_ext, out_ext)
    return out_dir / rel.parent / f"{rel.stem}{suffix}.{out_ext}"


def compare_image(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    import cv2

    h, w = after.shape[:2]
    before = cv2.resize(before, (w, h), interpolation=cv2.INTER_LANCZOS4) if before.shape[:2] != (h, w) else before
    gap = np.full((h, max(4, w // 100), 3), 255, np.uint8)
    return np.concatenate([before, gap, after], axis=1)


def run(args) -> int:
    if getattr(args, "engine", "local") == "ray":
        from mmrface.batch import run as run_batch

        return run_batch(args)
    from mmrface.pipeline.detection import options_from_detector
    from mmrface.pipeline.imageio import is_same_file, list_images, read_image, to_8bit, write_image
    from mmrface.pipeline.restorer import Restorer

    src = input_path(args)
    if not src.exists():
        raise UserError(f"input not found: {src}")
    from mmrface.video import is_video

    files = list_images(src, recursive=args.recursive) if src.is_dir() else [src]
    if src.is_dir():
        walk = src.rglob("*") if args.recursive else src.iterdir()
        files = sorted(set(files) | {p for p in walk if p.is_file() and is_video(p)})
    if not files:
        raise UserError(f"no images found in {src}" + ("" if args.recursive else " (try --recursive)"))
    out_dir = Path(args.output).expanduser()
    from mmrface.hub.choose import announce, choose

    torch_net = args.onnx is None and args.backend != "onnx"  # an ONNX graph carries its own weights
    choice = choose(args.weights, no_download=args.no_download, progress=not args.quiet) if torch_net else None
    detection = options_from_detector(args.detector).replace(
        only_center=args.only_center_face, largest=args.largest_face, min_size=args.min_face_size)
    restorer = Restorer(choice.weights if choice else None, device=args.device, upscale=args.upscale,
                        detection=detection, fidelity=args.fidelity, batch_size=args.batch_size,
                        backend=args.backend, onnx=args.onnx, noise=args.noise,
                        paste_mask=args.paste_mask, large_faces="restore" if args.force_restore else args.large_faces)
    if choice is not None:
        announce(choice, restorer, args.fidelity is not None)

    summary, t0 = Summary(files=len(files)), time.perf_counter()
    progress = _progress(files, args.quiet)
    for path in progress:
        dst = output_path(path, src if src.is_dir() else None, out_dir, args.ext, args.suffix)
        try:
            if dst.exists() and is_same_file(dst, path):
                raise UserError("output would overwrite the input; choose another -o or --suffix")
            if dst.exists() and not args.overwrite:
                summary.skipped += 1
                continue
            if is_video(path):
                summary.faces += _restore_video(path, dst, restorer, args, progress)
                summary.restored += 1
                continue
            if dst.suffix.lstrip(".") in VIDEO_EXTS:
                raise UserError(f"--ext {dst.suffix.lstrip('.')} is for videos; this is an image")
            img = read_image(path)
            result = restorer.restore(img.pixels, aligned=args.aligned, alpha=img.alpha)  # 16-bit stays 16-bit
            write_image(dst, result.image, alpha=result.alpha)
            summary.restored += 1
            summary.faces += sum(f.restored for f in result.faces)
            summary.kept += sum(not f.restored for f in result.faces)
            for k, face in enumerate(result.faces):
                if face.note:
                    _say(progress, f"{path.name}: face {k + 1} {face.note}")
            if not result.faces:
                summary.no_face.append(path.name)
            stem = dst.relative_to(out_dir).with_suffix("")
            if args.save_faces:
                for k, face in enumerate(result.faces):
                    write_image(out_dir / "faces" / f"{stem}_{k:02d}_lq.png", face.crop_lq)
                    write_image(out_dir / "faces" / f"{stem}_{k:02d}_restored.png", face.crop_restored)
            if args.compare:
                write_image(out_dir / "compare" / f"{stem}.jpg", compare_image(img.rgb, to_8bit(result.image)), quality=92)
        except UserError as exc:
            summary.errors.append(f"{path}: {exc}")
            _say(progress, f"mmrface: error: {path}: {exc}")
        except (OSError, ValueError, RuntimeError) as exc:  # e.g. a disk full, an unexpected codec error
            summary.errors.append(f"{path}: {type(exc).__name__}: {exc}")
            _say(progress, f"mmrface: error: {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    print(summary.report(time.perf_counter() - t0), file=sys.stderr)
    if summary.restored:
        print(f"results in {out_dir}", file=sys.stderr)
    return 1 if summary.errors else 0


def _restore_video(path: Path, dst: Path, restorer, args, progress) -> int:
    """Restore one clip frame by frame (tracked, smoothed faces, audio kept); returns faces restored."""
    from mmrface.video import restore_video

    if dst.suffix.lstrip(".") not in VIDEO_EXTS | {"avi", "m4v"}:
        dst = dst.with_suffix(path.suffix.lower())
    result = restore_video(path, dst, restorer, fidelity=args.fidelity, progress=not args.quiet)
    _say(progress, f"{path.name}: {result.report()}")
    return int(result.faces)


def _progress(files, quiet: bool):
    if quiet or len(files) < 2:
        return files
    from tqdm import tqdm

    return tqdm(files, unit="file", desc="restore", file=sys.stderr)


def _say(progress, message: str) -> None:
    if hasattr(progress, "write"):  # keep the tqdm bar intact
        progress.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr)
