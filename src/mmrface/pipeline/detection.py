"""The detection policy: one `DetectionOptions` value, one `find_faces`, used by every caller.

    opts = DetectionOptions()                          # mtcnn, MMOD fallback when dlib is installed
    faces = find_faces(rgb, opts)                      # list[Face], largest first
    faces = find_faces(rgb, opts.replace(largest=True))

The Restorer, the video loop, the web service and `mmrface prepare` all hold a `DetectionOptions`
and call `find_faces` (or `select_faces` on tracked faces): none of them decides on its own which
backend runs, when the fallback runs, or which faces are kept.

Policy:
* `backend`: "auto" is `DEFAULT_DETECTOR` (mtcnn); or a name from `detect.DETECTORS`.
* `fallback`: runs only when the primary finds nothing. "auto" is the MMOD detector (dlib-cnn)
  *when dlib and its model files are installed* and the primary is not MMOD itself; without the
  `detect` extra "auto" means no fallback, so a photo without a face is simply a photo without a
  face. A fallback named explicitly must be installed (else a one-line `UserError`). None: off.
* Size bounds: the primary searches a copy whose long side is at most `max_side` (1600 px), the
  fallback one of at most `fallback_max_side` (default: the same). Coordinates are mapped back.
* Backends skip images smaller than they can search (`min_image_side`: 20 px for mtcnn, 40 px
  for dlib, whose MMOD raises on images under 10 px and corrupts memory on a 200x8 one).
* Selection: faces smaller than `min_size` (short side of the box, input pixels) are dropped;
  the rest are sorted largest first; `only_center` keeps the one nearest the image centre,
  `largest` the largest (only_center wins when both are set).

On the web server (`SERVER_FALLBACK_MAX_SIDE`): MMOD cannot be interrupted once it runs and
every other request waits for the one restore slot meanwhile, so its time is bounded through its
input size: the server's fallback searches a copy of at most 640 px (about 2.3 s on one core of
this project's CPU, against 12-40 s at 1600 px, and a few hundred MB instead of 1.5 GB). A face
must then be about 80 px wide *in that copy* for MMOD to find it (MTCNN, the primary, still
searches at 1600 px). `mmrface serve --fallback-max-side 0` turns the server's fallback off.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from mmrface.errors import UserError
from mmrface.pipeline.detect import (DEFAULT_DETECTOR, DETECTORS, FALLBACK_DETECTOR, Face, detect_scaled,
                                     get_detector, select)

PRIMARY_MAX_SIDE = 1600
SERVER_FALLBACK_MAX_SIDE = 640
_NEEDS = {"dlib-hog": ("dlib", "face_recognition_models"), "dlib-cnn": ("dlib", "face_recognition_models"),
          "mtcnn": ("facenet_pytorch",)}


def backend_installed(name: str) -> bool:
    """True when the packages that backend `name` loads its code or weights from are installed."""
    return all(_has_module(m) for m in _NEEDS.get(name, ()))


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules, a broken package
        return False


def _check_backend(name: str, what: str) -> str:
    if name not in DETECTORS:
        raise UserError(f"unknown face detector {name!r} for {what}; choose one of: auto, {', '.join(DETECTORS)}")
    return name


@dataclass(frozen=True)
class DetectionOptions:
    """Which faces of a photo are restored, and how they are searched for (see the module docstring).

    backend: "auto" or a backend name. fallback: "auto", a backend name, or None ("none") for off.
    min_size: smallest face kept (pixels, short side of the box). only_center, largest: keep one
    face. max_side / fallback_max_side: long side of the copy the primary / fallback searches
    (None = the full image; fallback_max_side None = max_side, 0 = no fallback).
    backend_options: constructor options of the primary backend, e.g. (("upsample", 1),).
    """

    backend: str = "auto"
    fallback: str | None = "auto"
    min_size: float = 0
    only_center: bool = False
    largest: bool = False
    max_side: int | None = PRIMARY_MAX_SIDE
    fallback_max_side: int | None = None
    backend_options: tuple = field(default=())

    def __post_init__(self) -> None:
        if self.backend != "auto":
            _check_backend(self.backend, "backend")
        if self.fallback in ("none", "", None):
            object.__setattr__(self, "fallback", None)
        elif self.fallback != "auto":
            _check_backend(self.fallback, "the fallback")
        for name in ("min_size", "max_side", "fallback_max_side"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or value < 0):
                raise UserError(f"detection option {name} must be a number >= 0, got {value!r}")
        if isinstance(self.backend_options, dict):
            object.__setattr__(self, "backend_options", tuple(sorted(self.backend_options.items())))

    @property
    def primary(self) -> str:
        """The backend that searches first."""
        return DEFAULT_DETECTOR if self.backend == "auto" else self.backend

    def resolved_fallback(self) -> str | None:
        """The backend searched when the primary finds nothing, or None (see the module docstring)."""
        if self.fallback is None or self.fallback_max_side == 0:
            return None
        if self.fallback == "auto":
            ok = FALLBACK_DETECTOR != self.primary and backend_installed(FALLBACK_DETECTOR)
            return FALLBACK_DETECTOR if ok else None
        if self.fallback == self.primary:
            return None
        if not backend_installed(self.fallback):
            raise UserError(f"the fallback detector {self.fallback} needs dlib and face-recognition-models: "
                            "pip install 'mmrface[detect]', or use fallback none")
        return self.fallback

    def replace(self, **changes) -> DetectionOptions:
        """A copy with `changes` (the options are frozen)."""
        return replace(self, **changes)

    def bounded_for_server(self, fallback_max_side: int = SERVER_FALLBACK_MAX_SIDE) -> DetectionOptions:
        """These options with the fallback's search bounded to `fallback_max_side` (0: off)."""
        current = self.fallback_max_side if self.fallback_max_side is not None else self.max_side
        bound = fallback_max_side if not current else min(current, fallback_max_side)
        return self.replace(fallback_max_side=int(bound), fallback=self.fallback if bound else None)

    @property
    def min_image_side(self) -> int:
        """The short side under which the primary backend cannot find any face."""
        return int(getattr(get_detector(self.primary, **dict(self.backend_options)), "min_image_side", 1))


def find_faces(rgb: np.ndarray, options: DetectionOptions | None = None) -> list[Face]:
    """The faces of an RGB uint8 image under `options`, in its full-resolution coordinates."""
    opts = options or DetectionOptions()
    primary = get_detector(opts.primary, **dict(opts.backend_options))
    faces = detect_scaled(rgb, primary, opts.max_side)
    fallback = opts.resolved_fallback() if not faces else None
    if fallback is not None:
        bound = opts.fallback_max_side if opts.fallback_max_side is not None else opts.max_side
        faces = detect_scaled(rgb, get_detector(fallback), bound)
    return select_faces(faces, rgb.shape, opts)


def select_faces(faces: Sequence[Face], shape: tuple[int, ...], options: DetectionOptions) -> list[Face]:
    """Apply `min_size`, largest-first order and `only_center` / `largest` to found or tracked faces."""
    return select(faces, shape, options.min_size, options.only_center, options.largest)


def options_from_detector(detector: str = "auto", detector_options: dict | None = None) -> DetectionOptions:
    """The `DetectionOptions` meant by the older `detector=` argument: "auto" = the default backend
    with the fallback; a backend name = that backend alone."""
    return DetectionOptions(backend=detector, fallback="auto" if detector == "auto" else None,
                            backend_options=tuple(sorted((detector_options or {}).items())))
