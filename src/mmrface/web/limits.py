"""Limits that protect a shared CPU server, upload checks and decoding, request-parameter checks.

Everything a web client can get wrong raises a `RequestError` subclass that carries its HTTP
status, so the HTTP API answers with a JSON 4xx and the Gradio UI shows the same one-line message:

    413 `TooLarge`       upload bytes, input pixels or output pixels over the configured limit
    415 `NotAnImage`     the upload is not an image mmrface can decode (or not a multipart upload)
    422 `BadParameter`   a parameter outside its range, unknown or missing
    422 `TooSmall`       an image too small to hold a face the detector could find
    503 `Busy`           too many requests already waiting for the one restore slot (Retry-After)

The checks on an upload are ordered by cost: its size in bytes (`check_upload_size`), then its
header (`probe_upload`: format, width x height; nothing decompressed), then what the request
would produce (`check_output_pixels`, `check_min_side`); only then does a request queue for the
restore slot, and only inside it is the photo decoded (`decode_upload`, from the bytes: no temp
file). Nothing here imports FastAPI or Gradio.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass

from mmrface.errors import UserError
from mmrface.pipeline.detect import DETECTORS
from mmrface.pipeline.imageio import ImageHeader, ImageReadError, LoadedImage, TooManyPixels, decode, probe
from mmrface.pipeline.paste import output_size

UPSCALE_RANGE = (1.0, 4.0)
DETECTOR_CHOICES = ("auto", *DETECTORS)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class RequestError(UserError):
    """A user-fixable problem with one request; `status` is its HTTP status code."""

    status = 400


class TooLarge(RequestError):
    status = 413


class NotAnImage(RequestError):
    status = 415


class BadParameter(RequestError):
    status = 422


class TooSmall(RequestError):
    status = 422


class Busy(RequestError):
    """The queue is full; `retry_after` (seconds) is the server's estimate of when a slot frees."""

    status = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


@dataclass(frozen=True)
class Limits:
    """Per-server limits (all configurable on `mmrface serve`).

    max_upload_bytes: largest accepted upload (one file).
    max_pixels: largest accepted input photo (width x height).
    max_output_pixels: largest result (input pixels x upscale^2) a request may ask for.
    max_queue: requests allowed to wait for the single restore slot before new ones get 503.
    max_files: photos per UI submission.
    """

    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_output_pixels: int = 100_000_000
    max_queue: int = 16
    max_files: int = 8

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value < 1:
                raise UserError(f"limit {name} must be a positive integer, got {value!r}")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def safe_name(name: str | None, default: str = "upload", max_len: int = 80) -> str:
    """A file name fit for messages and result files: basename only, no odd characters, at most
    `max_len` characters; a long name is cut in its stem, so it keeps its extension."""
    base = os.path.basename((name or "").replace("\\", "/")).strip()
    base = re.sub(r"[^A-Za-z0-9._ -]+", "_", base).strip(" .") or default
    if len(base) <= max_len:
        return base
    stem, ext = os.path.splitext(base)
    ext = ext if len(ext) <= 10 else ""
    return stem[:max_len - len(ext)].rstrip(" .") + ext


def _megabytes(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{n / 1024:.0f} KB"


def check_upload_size(size: int, name: str, limits: Limits) -> None:
    if size > limits.max_upload_bytes:
        raise TooLarge(f"{name}: upload is {_megabytes(size)}, the limit is {_megabytes(limits.max_upload_bytes)}")


def check_output_pixels(width: int, height: int, upscale: float, name: str, limits: Limits) -> None:
    out_h, out_w = output_size(height, width, upscale)
    out = out_h * out_w
    if out > limits.max_output_pixels:
        raise TooLarge(f"{name}: the result at x{upscale:g} would be {out / 1e6:.1f} megapixels, "
                       f"the limit is {limits.max_output_pixels / 1e6:.1f}; choose a smaller upscale")


def check_min_side(header: ImageHeader, min_side: int, name: str, what: str) -> None:
    """TooSmall when the image's short side is under `min_side` pixels."""
    if min(header.width, header.height) < min_side:
        raise TooSmall(f"{name}: {header.width}x{header.height} is too small to hold a face {what} "
                       f"(at least {min_side} pixels on each side)")


def probe_upload(data: bytes, name: str, limits: Limits) -> ImageHeader:
    """The cheap checks of an upload: its size in bytes, then its header (format, pixel count).

    Nothing is decompressed. Raises TooLarge (413) or NotAnImage (415).
    """
    check_upload_size(len(data), name, limits)
    if not data:
        raise NotAnImage(f"{name}: empty upload")
    try:
        header = probe(data, name)
    except TooManyPixels as exc:
        raise TooLarge(str(exc)) from None
    except ImageReadError as exc:
        raise NotAnImage(str(exc)) from None
    pixels = header.width * header.height
    if pixels > limits.max_pixels:
        raise TooLarge(f"{name}: {header.width}x{header.height} is {pixels / 1e6:.1f} megapixels, "
                       f"the limit is {limits.max_pixels / 1e6:.1f}")
    return header


def decode_upload(data: bytes, name: str) -> LoadedImage:
    """Decode an upload from its bytes (EXIF orientation, alpha, 16-bit: `imageio.decode`)."""
    try:
        return decode(data, name)
    except TooManyPixels as exc:
        raise TooLarge(str(exc)) from None
    except ImageReadError as exc:
        raise NotAnImage(str(exc)) from None


# -- request parameters ---------------------------------------------------------------------------
def parse_float(value: object, name: str, low: float, high: float, default: float) -> float:
    """A number in [low, high] from a form field (None or "" -> default), else BadParameter."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return float(default)
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise BadParameter(f"{name} must be a number in [{low:g}, {high:g}], got {str(value)[:40]!r}") from None
    if not math.isfinite(x) or not low <= x <= high:
        raise BadParameter(f"{name} must be in [{low:g}, {high:g}], got {x:g}")
    return x


def parse_bool(value: object, name: str, default: bool = False) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise BadParameter(f"{name} must be true or false, got {str(value)[:40]!r}")


def parse_detector(value: object) -> str:
    text = "auto" if value is None or not str(value).strip() else str(value).strip()
    if text not in DETECTOR_CHOICES:
        raise BadParameter(f"detector must be one of {', '.join(DETECTOR_CHOICES)}, got {text[:40]!r}")
    return text
