"""`RestoreService`: what the HTTP API and the Gradio UI share — one `Restorer`, the limits, and
a single restore slot per worker process.

A shared CPU server must not run two restores at once (each already uses every core), so all
heavy work (detection, restoration) runs under one lock. Requests wait for it in a bounded queue:
once `limits.max_queue` are waiting, a new request is refused with `Busy` (503) at once.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from mmrface import __version__
from mmrface.pipeline.detect import Face, detect_faces, get_detector
from mmrface.pipeline.imageio import LoadedImage
from mmrface.pipeline.restorer import Restorer, RestoreResult
from mmrface.web.limits import (
    DETECTOR_CHOICES, UPSCALE_RANGE, Busy, Limits, check_output_pixels, parse_bool, parse_detector, parse_float,
)


@dataclass(frozen=True)
class RestoreOptions:
    """Per-request options, already validated (see `RestoreService.options`)."""

    fidelity: float
    upscale: float
    aligned: bool = False
    detector: str = "auto"  # "auto" = the server's detector (with its fallback)
    only_center_face: bool = False
    largest_face: bool = False


class RestoreService:
    """Restore and detect through one `Restorer`, one request at a time.

    Args:
        restorer: a built `Restorer` (its upscale/fidelity are the defaults of every request).
        limits: upload, pixel and queue limits.
        model_name: shown by /v1/health and the UI; defaults to the weights' config name.
    """

    def __init__(self, restorer: Restorer, limits: Limits | None = None, model_name: str | None = None):
        self.restorer = restorer
        self.limits = limits or Limits()
        self.model_name = model_name or _model_name(restorer)
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._pending = 0  # requests holding or waiting for the slot

    # -- parameters ------------------------------------------------------------------------------
    def options(self, fidelity: object = None, upscale: object = None, aligned: object = None,
                detector: object = None, only_center_face: object = None, largest_face: object = None) -> RestoreOptions:
        """Validate raw request values (strings from a form, or numbers); None -> server default."""
        return RestoreOptions(
            fidelity=parse_float(fidelity, "fidelity", 0.0, 1.0, self.restorer.fidelity),
            upscale=parse_float(upscale, "upscale", *UPSCALE_RANGE, default=min(self.restorer.upscale, UPSCALE_RANGE[1])),
            aligned=parse_bool(aligned, "aligned"),
            detector=parse_detector(detector),
            only_center_face=parse_bool(only_center_face, "only_center_face"),
            largest_face=parse_bool(largest_face, "largest_face"),
        )

    # -- the single slot -------------------------------------------------------------------------
    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold the restore slot; raise Busy when `max_queue` requests are already waiting."""
        with self._count_lock:
            if self._pending > self.limits.max_queue:
                raise Busy(f"server busy: {self._pending - 1} request(s) already waiting; try again shortly")
            self._pending += 1
        try:
            with self._lock:
                yield
        finally:
            with self._count_lock:
                self._pending -= 1

    @property
    def pending(self) -> int:
        return self._pending

    # -- work ------------------------------------------------------------------------------------
    def restore(self, image: LoadedImage, opts: RestoreOptions) -> RestoreResult:
        """Restore every face of an uploaded photo (or the one aligned crop) with `opts`."""
        h, w = image.rgb.shape[:2]
        check_output_pixels(w, h, opts.upscale, Path(image.path).name, self.limits)
        with self.slot():
            faces = None
            if not opts.aligned and opts.detector != "auto":
                faces = self._detect(image.rgb, opts)
            return self.restorer.restore(image.rgb, aligned=opts.aligned, only_center_face=opts.only_center_face,
                                         largest_face=opts.largest_face, fidelity=opts.fidelity, alpha=image.alpha,
                                         faces=faces, upscale=opts.upscale)

    def find_faces(self, image: LoadedImage, opts: RestoreOptions) -> list[Face]:
        """Detected faces (boxes, 5 landmarks, scores) in input-pixel coordinates."""
        with self.slot():
            if opts.detector == "auto":
                return self.restorer.find_faces(image.rgb, opts.only_center_face, opts.largest_face)
            return self._detect(image.rgb, opts)

    def _detect(self, rgb, opts: RestoreOptions) -> list[Face]:
        return detect_faces(rgb, get_detector(opts.detector), only_center_face=opts.only_center_face,
                            largest_only=opts.largest_face)

    # -- status ----------------------------------------------------------------------------------
    def health(self) -> dict:
        r = self.restorer
        meta = r.meta or {}
        return {
            "status": "ok",
            "model": self.model_name,
            "size": int(r.size),
            "device": str(r.device),
            "version": __version__,
            "weights_sha256": meta.get("sha256"),
            "defaults": {"fidelity": r.fidelity, "upscale": min(r.upscale, UPSCALE_RANGE[1]),
                         "detector": r.detector_name},
            "detectors": list(DETECTOR_CHOICES),
            "upscale_range": list(UPSCALE_RANGE),
            "limits": self.limits.to_dict(),
            "pending": self._pending,
            "time": time.time(),
        }


def faces_to_json(faces: list[Face]) -> list[dict]:
    return [{"box": [round(float(v), 2) for v in f.box],
             "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in f.landmarks],
             "score": round(float(f.score), 4)} for f in faces]


def _model_name(restorer: Restorer) -> str:
    meta = restorer.meta or {}
    config = meta.get("config") or {}
    name = config.get("name") if isinstance(config, dict) else None
    if not name and meta.get("path"):
        name = Path(str(meta["path"])).stem
    return str(name or type(getattr(restorer, "model", restorer)).__name__)
