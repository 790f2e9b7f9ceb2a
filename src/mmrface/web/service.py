"""`RestoreService`: what the HTTP API and the Gradio UI share — one `Restorer`, the limits, and
a single restore slot per worker process.

A shared CPU server must not run two restores at once (each already uses every core), so all
heavy work (decoding, detection, restoration, encoding the result) runs under one lock, on one
worker thread: torch's OpenMP runtime gives every thread that calls it a team of helper threads
with their own buffers, and with the web server's pool of request threads that added up to
hundreds of MB that an idle server kept. Requests
wait for it in a bounded queue: once `limits.max_queue` are waiting, a new request is refused with
`Busy` (503) at once, with a Retry-After estimate. An upload is checked before it queues (bytes,
header, output size, a photo too small to hold a face: `web/limits.py`) and decoded only once
it holds the slot, so refused and waiting requests cost no decoded pixels.

Face search on the server: the restorer's `DetectionOptions` with the fallback (MMOD) bounded to a
`SERVER_FALLBACK_MAX_SIDE` (640 px) copy, or off (`fallback_max_side=0`): MMOD cannot be
interrupted, and every other request waits while it runs (see `pipeline/detection.py`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from mmrface import __version__
from mmrface.pipeline.detect import Face
from mmrface.pipeline.detection import SERVER_FALLBACK_MAX_SIDE, DetectionOptions, find_faces
from mmrface.pipeline.imageio import ImageHeader, LoadedImage
from mmrface.pipeline.restorer import MIN_SIDE, Restorer, RestoreResult
from mmrface.web.limits import (
    DETECTOR_CHOICES, UPSCALE_RANGE, Busy, Limits, check_min_side, check_output_pixels, decode_upload, parse_bool,
    parse_detector, parse_float, probe_upload,
)

T = TypeVar("T")


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
        detection: the face search of detector=auto requests (default: the restorer's), with its
            fallback bounded to `fallback_max_side` pixels (0: no fallback on the server).
    """

    def __init__(self, restorer: Restorer, limits: Limits | None = None, model_name: str | None = None,
                 detection: DetectionOptions | None = None, fallback_max_side: int = SERVER_FALLBACK_MAX_SIDE):
        self.restorer = restorer
        self.limits = limits or Limits()
        self.model_name = model_name or _model_name(restorer)
        self.detection = (detection or restorer.detection).bounded_for_server(fallback_max_side)
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._pending = 0  # requests holding or waiting for the slot
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="mmrface-restore")  # the slot's one thread
        self._seconds = 1.0  # running mean of how long a request holds the slot (for Retry-After)

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
                raise Busy(f"server busy: {self._pending - 1} request(s) already waiting; try again shortly",
                           retry_after=math.ceil(self._pending * self._seconds))
            self._pending += 1
        try:
            with self._lock:
                t0 = time.perf_counter()
                try:
                    yield
                finally:
                    release_memory()
                    self._seconds = 0.8 * self._seconds + 0.2 * (time.perf_counter() - t0)
        finally:
            with self._count_lock:
                self._pending -= 1

    @property
    def pending(self) -> int:
        return self._pending

    # -- work ------------------------------------------------------------------------------------
    def detection_for(self, opts: RestoreOptions) -> DetectionOptions:
        """The face search of one request: the server's for detector=auto, else that backend alone."""
        base = self.detection if opts.detector == "auto" else self.detection.replace(
            backend=opts.detector, fallback=None, backend_options=())
        return base.replace(only_center=opts.only_center_face, largest=opts.largest_face)

    def check(self, header: ImageHeader, name: str, opts: RestoreOptions, restoring: bool) -> None:
        """The checks that need no decoding: output size (restores) and a photo too small for a face."""
        if restoring:
            check_output_pixels(header.width, header.height, opts.upscale, name, self.limits)
        if restoring and opts.aligned:
            check_min_side(header, MIN_SIDE, name, "(aligned input)")
        else:
            detection = self.detection_for(opts)
            check_min_side(header, detection.min_image_side, name, f"the {detection.primary} detector can find")

    def restore_upload(self, data: bytes, name: str, opts: RestoreOptions,
                       finish: Callable[[LoadedImage, RestoreResult], T]) -> T:
        """Check, queue, decode, restore, then `finish(image, result)` (e.g. encode), all but the
        checks inside the slot: refused or waiting requests hold no decoded image."""
        header = probe_upload(data, name, self.limits)
        self.check(header, name, opts, restoring=True)
        return self._in_slot(data, name, lambda image: finish(image, self._restore(image, opts)))

    def faces_upload(self, data: bytes, name: str, opts: RestoreOptions) -> tuple[list[Face], tuple[int, int]]:
        """Check, queue, decode, search: (faces, (height, width)) of an uploaded photo."""
        header = probe_upload(data, name, self.limits)
        self.check(header, name, opts, restoring=False)
        return self._in_slot(data, name, lambda image: (find_faces(image.rgb, self.detection_for(opts)),
                                                        image.rgb.shape[:2]))

    def _in_slot(self, data: bytes, name: str, job: Callable[[LoadedImage], T]) -> T:
        """Decode `data` and run `job(image)` holding the slot; the decoded image and everything made
        from it are freed before the slot is released (and the freed memory handed back)."""
        return self._run(_decoded, data, name, job)

    def _run(self, fn: Callable[..., T], *args) -> T:
        """`fn(*args)` on the worker thread, holding the slot (Busy when the queue is full)."""
        with self.slot():
            return self._worker.submit(fn, *args).result()

    def restore(self, image: LoadedImage, opts: RestoreOptions) -> RestoreResult:
        """Restore an already decoded photo (or the one aligned crop) with `opts`, in the slot."""
        h, w = image.rgb.shape[:2]
        name = Path(image.path).name
        self.check(ImageHeader(w, h, ""), name, opts, restoring=True)
        return self._run(self._restore, image, opts)

    def find_faces(self, image: LoadedImage, opts: RestoreOptions) -> list[Face]:
        """Detected faces (boxes, 5 landmarks, scores) of a decoded photo, in input-pixel coordinates."""
        return self._run(find_faces, image.rgb, self.detection_for(opts))

    def _restore(self, image: LoadedImage, opts: RestoreOptions) -> RestoreResult:
        faces = None if opts.aligned else find_faces(image.rgb, self.detection_for(opts))
        return self.restorer.restore(image.pixels, aligned=opts.aligned, fidelity=opts.fidelity, alpha=image.alpha,
                                     faces=faces, upscale=opts.upscale)

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
            "detection": {"backend": self.detection.primary, "fallback": self.detection.resolved_fallback(),
                          "max_side": self.detection.max_side, "fallback_max_side": self.detection.fallback_max_side},
            "detectors": list(DETECTOR_CHOICES),
            "upscale_range": list(UPSCALE_RANGE),
            "limits": self.limits.to_dict(),
            "pending": self._pending,
            "time": time.time(),
        }


def _decoded(data: bytes, name: str, job: Callable[[LoadedImage], T]) -> T:
    """job(decoded upload): a function of its own, so that the image dies with its frame."""
    return job(decode_upload(data, name))


def release_memory() -> None:
    """Hand the heap memory freed by the last request back to the OS.

    glibc keeps freed blocks in per-thread arenas: every worker thread that decoded a large photo
    kept a few hundred MB after it, so an idle server held 1.6-2 GB (0.36 GB at start).
    `malloc_trim(0)` returns them (a few milliseconds); on other C libraries this does nothing.
    """
    if _libc is not None:
        _libc.malloc_trim(0)


def _load_libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_libc = _load_libc()


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
