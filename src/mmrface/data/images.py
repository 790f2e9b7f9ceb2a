"""Image files for the data sets: listing, robust reading, square resizing, deterministic PNGs.

Images are numpy uint8 HxWx3 RGB. Readers raise `ImageReadError` (never a bare PIL/OpenCV
exception) so that data sets can skip a bad file with a warning naming it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from mmrface.errors import UserError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
PNG_COMPRESSION = 6  # fixed, so the same pixels always give the same bytes


class ImageReadError(Exception):
    """A file that is not a readable image."""


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside `folder` (by extension), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"not a folder: {folder}")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def probe_image(path: Path) -> str | None:
    """Cheap header check: None when the file looks like an image, else the reason."""
    try:
        with Image.open(path) as im:
            w, h = im.size
        if w < 1 or h < 1:
            return "empty image"
    except Exception as exc:  # PIL raises many types for bad files
        return f"{type(exc).__name__}: {exc}"
    return None


def readable_images(folder: str | Path) -> list[Path]:
    """`list_images` minus the files whose header is unreadable (each skipped with a warning)."""
    good = []
    for path in list_images(folder):
        reason = probe_image(path)
        if reason is None:
            good.append(path)
        else:
            warnings.warn(f"skipping {path}: not a readable image ({reason})", stacklevel=2)
    return good


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode a whole image file to uint8 HxWx3 RGB (EXIF orientation applied)."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            im.load()  # decodes everything: truncated or corrupt data raise here
            if im.mode.startswith("I;16") or im.mode == "I":
                a = (np.asarray(im, dtype=np.float64) / 257.0).round().clip(0, 255)
                arr = np.repeat(a.astype(np.uint8)[..., None], 3, axis=2)
            else:
                arr = np.asarray(im.convert("RGB"))
    except Exception as exc:
        raise ImageReadError(f"{path}: {type(exc).__name__}: {exc}") from exc
    return np.ascontiguousarray(arr, dtype=np.uint8)


def center_square(img: np.ndarray) -> np.ndarray:
    """Central square crop (aligned faces are square already; others lose the margins)."""
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return img[top:top + s, left:left + s]


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """Resize a square image to size x size: area filter when shrinking, bicubic when growing."""
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_CUBIC
    return cv2.resize(img, (size, size), interpolation=interp).reshape(size, size, -1)


def write_png(path: str | Path, img: np.ndarray) -> None:
    """Write uint8 HxWx3 RGB as PNG with fixed settings (byte-identical for equal pixels)."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img[..., ::-1]),
                           [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise OSError(f"PNG encoding failed for {path}")
    Path(path).write_bytes(buf.tobytes())
