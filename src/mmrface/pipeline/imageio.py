"""Every image file mmrface reads or writes goes through this module: CLI, web server, video
stills, evaluation, test sets and the training data sets.

    img = read_image("photo.tif")          # or decode(upload_bytes, "photo.tif"): no file needed
    img.pixels                             # HxWx3 at the file's depth: uint8, or uint16 for 16-bit files
    img.rgb                                # the same photo as uint8 (the 8-bit view detection works on)
    write_image("out.tif", restored)       # uint16 in -> 16-bit PNG/TIFF out; atomic

Extensions (`IMAGE_EXTENSIONS`): jpg, jpeg, png, webp, bmp, tif, tiff — the same set for listing,
reading and writing everywhere.

16-bit policy: a 16-bit PNG or TIFF is decoded at full precision (`pixels` is uint16, `bit_depth`
16); `rgb` is its 8-bit view, each value rounded (v / 257, not truncated). Whatever a 16-bit photo
becomes (restored photo, web response, test-set output) is written as uint16, and `write_image`
stores uint16 data as 16-bit PNG/TIFF (JPEG, WebP and BMP hold 8 bits: the values are rounded to
them). `to_float` maps either depth to float32 in [0, 1] at full precision (training data).

EXIF orientation is applied, so a portrait shot sideways by a phone comes out upright. Grey-scale
becomes RGB; an alpha channel is returned separately, at the file's depth. Every problem a user
can fix (missing file, dangling symbolic link, not an image, truncated file) raises
`ImageReadError` (a `UserError`) with one line naming the file. `probe` reads the header alone
(size, format), so a server can refuse an oversized photo before decompressing it.

`write_image` picks the format from the extension and writes atomically (a temporary file in the
same folder, then `os.replace`), so an interrupted run never leaves half a photo behind.
`list_images` lists a folder's images (hidden files skipped) and keeps dangling symbolic links in
the list, so that reading them names them instead of skipping them silently.
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
from PIL import Image, UnidentifiedImageError

from mmrface.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
DEEP_EXTENSIONS = (".png", ".tif", ".tiff")  # formats that hold 16 bits per channel
_ORIENTATION_TAG = 0x0112
_TIFF_BITS_PER_SAMPLE = 258
_STRIP_ROWS = 512  # PIL -> numpy copy in strips: no whole-image bytes copy in between


class ImageReadError(UserError):
    """A file or upload that is not a readable image (the message names it, on one line)."""


class TooManyPixels(ImageReadError):
    """An image whose header declares more pixels than the decoder accepts."""


@dataclass
class ImageHeader:
    """What `probe` reads from an image's header without decoding it."""

    width: int
    height: int
    format: str


@dataclass
class LoadedImage:
    """A decoded photo.

    rgb: uint8 HxWx3, the 8-bit view. pixels: HxWx3 at the file's depth (uint8, or uint16 when
    `bit_depth` is 16; the same array as `rgb` for 8-bit files). alpha: HxW at the file's depth,
    or None. path: the file name, or the name an upload was given.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    bit_depth: int
    path: str
    pixels: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.pixels is None:
            self.pixels = self.rgb


# -- reading ---------------------------------------------------------------------------------------
def read_image(path: str | os.PathLike) -> LoadedImage:
    """Decode a JPEG/PNG/WebP/BMP/TIFF file, upright; see the module docstring for depth and alpha."""
    return decode(_read_bytes(path), os.fspath(path))


def read_pixels(path: str | os.PathLike) -> np.ndarray:
    """The photo at its own depth (uint8 or uint16 HxWx3), alpha dropped (training data, test sets)."""
    return read_image(path).pixels


def _read_bytes(path: str | os.PathLike) -> bytes:
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        if os.path.islink(path):
            raise ImageReadError(f"{path}: broken symbolic link (to {os.readlink(path)}, which does not exist)") from None
        raise ImageReadError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageReadError(f"{path}: is a folder, not an image file") from None
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _open(source: bytes | str, name: str) -> Image.Image:
    """PIL's lazy image of bytes or a file (header parsed, pixels not decoded); one-line errors
    naming `name`."""
    if isinstance(source, bytes) and not source:
        raise ImageReadError(f"{name}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except UnidentifiedImageError:
        raise ImageReadError(f"{name}: not an image, or a format mmrface cannot read") from None
    except Image.DecompressionBombError:
        raise TooManyPixels(f"{name}: image has too many pixels to process") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageReadError(f"{name}: corrupt or truncated image ({exc})") from None


def probe(data: bytes, name: str = "upload") -> ImageHeader:
    """Width, height and format from the header alone: nothing is decompressed."""
    im = _open(data, name)
    return ImageHeader(int(im.size[0]), int(im.size[1]), str(im.format))


def decode(data: bytes, name: str = "upload") -> LoadedImage:
    """Decode image bytes (an upload, a file's contents) exactly as `read_image` decodes a file."""
    im = _open(data, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()
        orientation = int(im.getexif().get(_ORIENTATION_TAG, 1) or 1)
        if _is_16bit(im, data):
            pixels, alpha = _decode_16bit(data, name)
        else:
            pixels, alpha = _pil_to_rgb_alpha(im)
    except Image.DecompressionBombError:
        raise TooManyPixels(f"{name}: image has too many pixels to process") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageReadError(f"{name}: corrupt or truncated image ({exc})") from None
    finally:
        im.close()
    pixels = _orient(pixels, orientation)
    alpha = None if alpha is None else _orient(alpha, orientation)
    rgb = pixels if pixels.dtype == np.uint8 else to_8bit(pixels)
    return LoadedImage(rgb=rgb, alpha=alpha, bit_depth=8 * pixels.itemsize, path=name, pixels=pixels)


def _is_16bit(im: Image.Image, data: bytes) -> bool:
    if im.format == "PNG":
        return len(data) > 24 and data[24] == 16  # IHDR bit depth byte
    if im.format == "TIFF":
        bits = im.tag_v2.get(_TIFF_BITS_PER_SAMPLE, 8)
        bits = bits if isinstance(bits, tuple) else (bits,)
        return any(b == 16 for b in bits)
    return False


def _decode_16bit(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """16-bit PNG/TIFF via OpenCV (Pillow keeps only 8 bits of 16-bit colour) -> uint16 RGB, alpha."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16:
        raise ImageReadError(f"{name}: cannot decode this 16-bit image")
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2), None
    if arr.shape[2] == 2:  # grey + alpha
        return np.repeat(arr[:, :, :1], 3, axis=2), np.ascontiguousarray(arr[:, :, 1])
    alpha = np.ascontiguousarray(arr[:, :, 3]) if arr.shape[2] == 4 else None
    return cv2.cvtColor(arr[:, :, :3], cv2.COLOR_BGR2RGB), alpha


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


def _to_array(im: Image.Image, channels: int) -> np.ndarray:
    """A writable uint8 copy of an 8-bit PIL image, made strip by strip (peak: image + one strip)."""
    w, h = im.size
    out = np.empty((h, w, channels) if channels > 1 else (h, w), np.uint8)
    for y in range(0, h, _STRIP_ROWS):
        strip = im.crop((0, y, w, min(y + _STRIP_ROWS, h)))
        out[y:y + strip.size[1]] = np.asarray(strip).reshape(out[y:y + strip.size[1]].shape)
    return out


def _pil_to_rgb_alpha(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode in ("P", "L", "RGB") and "transparency" in im.info
    )
    if has_alpha:
        rgba = _to_array(im.convert("RGBA"), 4)
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
    return _to_array(im if im.mode == "RGB" else im.convert("RGB"), 3), None


# -- depth -----------------------------------------------------------------------------------------
def to_8bit(img: np.ndarray) -> np.ndarray:
    """uint8 as it is; uint16 rounded to 8 bits (round(v / 257), no large temporaries)."""
    if img.dtype == np.uint8:
        return img
    if img.dtype != np.uint16:
        raise ValueError(f"expected uint8 or uint16, got {img.dtype}")
    return cv2.convertScaleAbs(img, alpha=1.0 / 257.0)


def to_16bit(img: np.ndarray) -> np.ndarray:
    """uint16 as it is; uint8 spread over the 16-bit range (v * 257: 255 -> 65535)."""
    if img.dtype == np.uint16:
        return img
    return img.astype(np.uint16) * np.uint16(257)


def to_float(img: np.ndarray) -> np.ndarray:
    """uint8 or uint16 -> float32 in [0, 1] at full precision; float images are returned as float32."""
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0
    return img.astype(np.float32)


# -- writing ---------------------------------------------------------------------------------------
def encode_image(ext: str, image: np.ndarray, alpha: np.ndarray | None = None, bit_depth: int | None = None,
                 quality: int = 95, png_compression: int = 3) -> bytes:
    """Encode RGB (uint8 or uint16 HxWx3) as `ext` (".png", ".jpg", ...); see `write_image`."""
    ext = ext.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise UserError(f"unknown image extension {ext!r} (use png, jpg, webp, bmp or tif)")
    if image.dtype not in (np.uint8, np.uint16) or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected uint8 or uint16 HxWx3 RGB, got {image.dtype} {image.shape}")
    depth = bit_depth or 8 * image.itemsize
    convert = to_16bit if depth == 16 and ext in DEEP_EXTENSIONS else to_8bit
    channels = [convert(image)[:, :, ::-1]]
    if alpha is not None and ext in (".png", ".webp", ".tif", ".tiff"):
        if alpha.shape != image.shape[:2]:
            raise ValueError(f"alpha shape {alpha.shape} does not match image {image.shape[:2]}")
        channels.append(convert(alpha)[:, :, None])
    bgr = np.ascontiguousarray(np.concatenate(channels, axis=2) if len(channels) > 1 else channels[0])
    params: list[int] = []
    if ext in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif ext == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, int(quality)]
    elif ext == ".png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, int(png_compression)]
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:
        raise UserError(f"could not encode the image as {ext}")
    return buf.tobytes()


def write_image(path: str | os.PathLike, rgb: np.ndarray, alpha: np.ndarray | None = None,
                bit_depth: int | None = None, quality: int = 95, png_compression: int = 3) -> None:
    """Write RGB (uint8 or uint16 HxWx3) by extension: .png .jpg/.jpeg .webp .bmp .tif/.tiff.

    The file's depth is `bit_depth` when given, else the data's (uint16 -> 16 bits); 16 bits are
    written only to PNG and TIFF, other formats get the values rounded to 8 bits. `alpha` (HxW,
    either depth) is stored where the format can hold it (PNG, WebP, TIFF) and dropped for
    JPEG/BMP. Parent folders are created; the file appears atomically (temporary file +
    `os.replace`). The same pixels always give the same bytes.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in IMAGE_EXTENSIONS:
        raise UserError(f"{path}: unknown image extension {ext!r} (use png, jpg, webp, bmp or tif)")
    try:
        data = encode_image(ext, rgb, alpha, bit_depth, quality, png_compression)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    atomic_write_bytes(path, data)


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


# -- listing ---------------------------------------------------------------------------------------
def list_images(path: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files of a folder (sorted, hidden files skipped), or `[path]` for a single file.

    Dangling symbolic links with an image extension are listed too: reading one raises an
    `ImageReadError` that names it, so it is reported instead of silently skipped.
    """
    p = Path(path)
    if p.is_file() or (p.is_symlink() and not p.exists()):
        return [p]
    if not p.is_dir():
        raise UserError(f"{p}: no such file or folder")
    pattern = "**/*" if recursive else "*"
    files = [
        f
        for f in p.glob(pattern)
        if (f.is_file() or (f.is_symlink() and not f.exists()))
        and f.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in f.relative_to(p).parts)
    ]
    return sorted(files)


def readable_images(folder: str | os.PathLike) -> list[Path]:
    """The images of a folder whose header reads (data sets): every other one is skipped with a
    warning that names it (a dangling link, a file that is not an image)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"not a folder: {folder}")
    good = []
    for path in list_images(folder):
        try:
            if path.is_symlink() and not path.exists():
                raise ImageReadError(f"{path}: broken symbolic link (to {os.readlink(path)}, which does not exist)")
            if path.stat().st_size == 0:
                raise ImageReadError(f"{path}: empty file")
            _open(str(path), str(path)).close()
        except (ImageReadError, OSError) as exc:
            warnings.warn(f"skipping {exc if isinstance(exc, ImageReadError) else f'{path}: {exc}'}", stacklevel=2)
            continue
        good.append(path)
    return good
