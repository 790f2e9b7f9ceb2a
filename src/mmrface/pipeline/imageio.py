"""Read and write photos for the pipeline.

`read_image` turns any ordinary photo file into what the pipeline works on: an 8-bit RGB array
(`uint8`, HxWx3), plus the alpha channel (`uint8`, HxW) when the file has one, and the bit depth
of the file so that `write_image` can give 16-bit inputs 16-bit outputs. EXIF orientation is
applied, so a portrait shot sideways by a phone comes out upright. Every problem a user can fix
(missing file, not an image, truncated file) raises `UserError` with one line naming the file.

`write_image` picks the format from the extension and writes atomically (a temporary file in the
same folder, then `os.replace`), so an interrupted run never leaves half a photo behind.
"""

from __future__ import annotations

import io
import os
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mmrface.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
_ORIENTATION_TAG = 0x0112
_TIFF_BITS_PER_SAMPLE = 258


@dataclass
class LoadedImage:
    """A decoded photo: `rgb` uint8 HxWx3, `alpha` uint8 HxW or None, `bit_depth` 8 or 16."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    bit_depth: int
    path: str


def read_image(path: str | os.PathLike) -> LoadedImage:
    """Decode a JPEG/PNG/WebP/BMP/TIFF file, upright (EXIF orientation applied), as 8-bit RGB.

    Grey-scale becomes RGB; an alpha channel is returned separately; 16-bit files are rounded to
    8 bits for processing and reported as `bit_depth=16`.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not an image file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    im = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            im.load()
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image, or a format mmrface cannot read") from None
    except Image.DecompressionBombError:
        raise UserError(f"{path}: image too large to process ({_pixels(im)} pixels)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UserError(f"{path}: corrupt or truncated image ({exc})") from None
    orientation = int(im.getexif().get(_ORIENTATION_TAG, 1) or 1)
    if _is_16bit(im, data):
        rgb, alpha = _decode_16bit(data, path)
        rgb = _orient(rgb, orientation)
        alpha = None if alpha is None else _orient(alpha, orientation)
        return LoadedImage(rgb=rgb, alpha=alpha, bit_depth=16, path=path)
    im = ImageOps.exif_transpose(im)
    rgb, alpha = _pil_to_rgb_alpha(im)
    return LoadedImage(rgb=rgb, alpha=alpha, bit_depth=8, path=path)


def _pixels(im: object) -> str:
    size = getattr(im, "size", None)
    return f"{size[0]}x{size[1]}" if size else "too many"


def _is_16bit(im: Image.Image, data: bytes) -> bool:
    if im.format == "PNG":
        return len(data) > 24 and data[24] == 16  # IHDR bit depth byte
    if im.format == "TIFF":
        bits = im.tag_v2.get(_TIFF_BITS_PER_SAMPLE, 8)
        bits = bits if isinstance(bits, tuple) else (bits,)
        return any(b == 16 for b in bits)
    return False


def _decode_16bit(data: bytes, path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """16-bit PNG/TIFF via OpenCV (Pillow keeps only 8 bits of 16-bit colour)."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16:
        raise UserError(f"{path}: cannot decode this 16-bit image")
    arr8 = ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)  # round(v * 255 / 65535)
    if arr8.ndim == 2:
        return np.repeat(arr8[:, :, None], 3, axis=2), None
    if arr8.shape[2] == 2:  # grey + alpha
        return np.repeat(arr8[:, :, :1], 3, axis=2), np.ascontiguousarray(arr8[:, :, 1])
    if arr8.shape[2] == 4:
        return np.ascontiguousarray(arr8[:, :, 2::-1]), np.ascontiguousarray(arr8[:, :, 3])
    return np.ascontiguousarray(arr8[:, :, 2::-1]), None


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an HxW[xC] array, as `ImageOps.exif_transpose` does."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(orientation)
    return arr if op is None else np.ascontiguousarray(op(arr))


def _pil_to_rgb_alpha(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode in ("P", "L", "RGB") and "transparency" in im.info
    )
    if has_alpha:
        rgba = np.asarray(im.convert("RGBA"))
        return np.ascontiguousarray(rgba[:, :, :3]), np.ascontiguousarray(rgba[:, :, 3])
    if im.mode in ("I", "F", "I;16", "I;16B", "I;16L"):  # integer / float grey without 8-bit range
        grey = np.asarray(im, dtype=np.float64)
        peak = grey.max() if grey.size else 0.0
        if peak > 255:  # assume a 16-bit range
            grey = grey * (255.0 / 65535.0)
        elif im.mode == "F" and peak <= 1.0:  # float in [0, 1]
            grey = grey * 255.0
        grey = np.round(np.clip(grey, 0, 255)).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2), None
    return np.asarray(im.convert("RGB")).copy(), None


def write_image(
    path: str | os.PathLike,
    rgb: np.ndarray,
    alpha: np.ndarray | None = None,
    bit_depth: int = 8,
    quality: int = 95,
) -> None:
    """Write an RGB uint8 image (HxWx3) by extension: .png .jpg/.jpeg .webp .bmp .tif/.tiff.

    `alpha` (uint8 HxW) is stored where the format can hold it (PNG, WebP, TIFF) and dropped for
    JPEG/BMP. `bit_depth=16` writes 16-bit PNG/TIFF (8-bit values scaled by 257). Parent folders
    are created; the file appears atomically (temporary file + `os.replace`).
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in IMAGE_EXTENSIONS:
        raise UserError(f"{path}: unknown image extension {ext!r} (use png, jpg, webp, bmp or tif)")
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"write_image expects uint8 HxWx3 RGB, got {rgb.dtype} {rgb.shape}")
    bgr = rgb[:, :, ::-1]
    if alpha is not None and ext in (".png", ".webp", ".tif", ".tiff"):
        if alpha.shape != rgb.shape[:2]:
            raise ValueError(f"alpha shape {alpha.shape} does not match image {rgb.shape[:2]}")
        bgr = np.dstack([bgr, alpha.astype(np.uint8)])
    bgr = np.ascontiguousarray(bgr)
    params: list[int] = []
    if ext in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif ext == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, int(quality)]
    elif ext == ".png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, 3]
    if bit_depth == 16 and ext in (".png", ".tif", ".tiff"):
        bgr = bgr.astype(np.uint16) * 257
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:
        raise UserError(f"{path}: could not encode the image as {ext}")
    atomic_write_bytes(path, buf.tobytes())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder and `os.replace`."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        os.makedirs(folder, exist_ok=True)
        with open(tmp, "xb") as f:  # normal permissions (umask), unlike mkstemp's 0600
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise UserError(f"{path}: cannot write ({exc.strerror or exc})") from None


def is_same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when `a` and `b` name the same file (following links); False if either is missing."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def list_images(path: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files of a folder (sorted, hidden files skipped), or `[path]` for a single file."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise UserError(f"{p}: no such file or folder")
    pattern = "**/*" if recursive else "*"
    files = [
        f
        for f in p.glob(pattern)
        if f.is_file()
        and f.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in f.relative_to(p).parts)
    ]
    return sorted(files)
