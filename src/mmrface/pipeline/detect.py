"""Face detection: boxes, five landmarks and scores, from interchangeable backends.

    detector = get_detector("mtcnn")            # cached: models load once, lazily
    faces = detect_faces(rgb, detector)         # list[Face], full-resolution coordinates

Backends (`DETECTORS`): `mtcnn` (our P/R/O-nets on facenet-pytorch's shipped weights, 5 landmarks
from the net), `dlib-hog` (dlib's HOG frontal detector) and `dlib-cnn` (dlib's MMOD CNN); the dlib
backends take their 5 points from dlib's 68-point shape predictor (eye centres = mean of the six
eye-contour points, nose tip = point 30, mouth corners = points 48 and 54) and also keep all 68.

Landmark order is FFHQ's: 0 = the eye on the image's left when the face is upright (the person's
right eye), 1 = the other eye, 2 = nose tip, 3 = mouth corner on the image's left, 4 = the other.

Default backend, measured with `python benchmarks/detectors.py` on this machine (2 CPU cores
shared with other jobs). The 4 bundled photos, each rotated by 0, ±15, ±30, ±45 degrees, plain
and mirrored (56 images); "found" = a detection whose two eye points lie within 0.25 eye
distances of the true eyes; "extra" = every other detection (a non-face, or the face with its
eyes misplaced, which would misalign it):

    | backend                   | 0° /8 | ±15° /16 | ±30° /16 | ±45° /16 | found /56 | extra |
    |---------------------------|-------|----------|----------|----------|-----------|-------|
    | mtcnn                     | 8     | 16       | 14       | 11       | 49        | 1     |
    | dlib-hog                  | 8     | 14       | 12       | 3        | 37        | 9     |
    | dlib-cnn                  | 8     | 15       | 12       | 5        | 40        | 16    |
    | mtcnn + dlib-cnn fallback | 8     | 16       | 14       | 13       | 51        |       |

Seconds per photo at 1000 px (`benchmarks/detectors.py --no-recall --threads 1`, median over the
photos of the best of 3): mtcnn 0.123, dlib-hog 0.063, dlib-cnn 4.98. (With torch on 2 threads
the same machine gave mtcnn 0.86-1.4 s wall: its many small ops wait on OpenMP threads that
other processes keep off the cores; with fewer other jobs running it took 0.07-0.15 s.)

`mtcnn` finds the most faces on tilted and turned heads within the 0.2 s budget, so it is the
default; MMOD (`dlib-cnn`) is 40x slower on CPU and serves as the `fallback` when nothing is found.

This module holds the backends and the search mechanics (`detect_faces` with explicit arguments);
which backend and fallback run for a photo, and which faces are kept, is decided in one place:
`DetectionOptions` and `find_faces` in `mmrface.pipeline.detection`.

Every backend has a `min_image_side`: on a smaller image (or down-scaled copy) it returns no face
without running. MTCNN cannot find a face in fewer than `min_face` (20) pixels; dlib's detectors
find faces from about 80 px (40 px with upsample=1), and dlib's MMOD raises on images under 10 px
("Error detected at line 2957") and corrupts the heap on some (a 200x8 image aborts the process).
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import cv2
import numpy as np

from mmrface.errors import UserError

DETECTORS = ("mtcnn", "dlib-hog", "dlib-cnn")
DEFAULT_DETECTOR = "mtcnn"
FALLBACK_DETECTOR = "dlib-cnn"


@dataclass(eq=False)  # faces compare by identity (array fields)
class Face:
    """One detected face, in pixel coordinates of the image it was found in.

    box: (4,) x0, y0, x1, y1.  landmarks: (5, 2) x, y in FFHQ order (see module docstring).
    score: detector confidence (not comparable across backends).
    landmarks68: (68, 2) dlib/iBUG points when the backend computed them, else None.
    """

    box: np.ndarray
    landmarks: np.ndarray
    score: float
    landmarks68: np.ndarray | None = field(default=None, repr=False)

    def transformed(self, matrix: np.ndarray) -> Face:
        """This face mapped through a 2x3 affine matrix of pixel-centre coordinates.

        The box's edges lie half a pixel before its first pixel's centre, so they are moved by
        -0.5 before and +0.5 after the mapping; the box is the bounds of the mapped corners.
        """
        m = np.asarray(matrix, np.float64)
        x0, y0, x1, y1 = np.asarray(self.box, np.float64) - 0.5
        corners = _apply(m, np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]])) + 0.5
        box = np.concatenate([corners.min(0), corners.max(0)])
        lm68 = None if self.landmarks68 is None else _apply(m, self.landmarks68)
        return Face(box, _apply(m, self.landmarks), self.score, lm68)

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0) * max(self.box[3] - self.box[1], 0))


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to points N x 2 -> N x 2 (float64)."""
    p = np.asarray(points, np.float64)
    return p @ matrix[:, :2].T + matrix[:, 2]


class Detector(Protocol):
    """What every backend provides."""

    name: str
    min_image_side: int  # on an image whose short side is smaller, detect returns [] at once

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """rgb: uint8 HxWx3 -> faces in that image's pixel coordinates."""
        ...


class MtcnnDetector:
    """MTCNN cascade (pipeline/mtcnn.py): boxes, scores and 5 landmarks from the network."""

    name = "mtcnn"

    def __init__(self, min_face: float = 20.0, threshold: float = 0.95) -> None:
        self.min_image_side = max(1, int(min_face))
        # threshold: O-Net score to keep a face. MTCNN's usual 0.7 let through three non-faces
        # (scores 0.85-0.94) in benchmarks/detectors.py while every true face scored >= 0.96.
        from mmrface.pipeline.mtcnn import MTCNN

        self._mtcnn = MTCNN(min_face=min_face, thresholds=(0.6, 0.7, threshold))

    def detect(self, rgb: np.ndarray) -> list[Face]:
        if min(_check_rgb(rgb).shape[:2]) < self.min_image_side:
            return []
        boxes, scores, landmarks = self._mtcnn.detect(_check_rgb(rgb))
        return [
            Face(b.astype(np.float32), lm.astype(np.float32), float(s))
            for b, s, lm in zip(boxes, scores, landmarks)
        ]


def dlib_model_path(name: str) -> str:
    """Path of a model file shipped by face-recognition-models (e.g. the 68-point predictor),
    checked against its size and sha256 (`mmrface.thirdparty`)."""
    from mmrface.thirdparty import verified_file

    return str(verified_file("face_recognition_models", f"models/{name}", missing=(
        "the dlib detectors need dlib and face-recognition-models: pip install 'mmrface[detect]'")))


def _import_dlib():
    try:
        import dlib
    except ImportError:
        raise UserError("the dlib detectors need dlib: pip install 'mmrface[detect]'") from None
    return dlib


@functools.lru_cache(maxsize=1)
def _shape_predictor_68():
    """dlib's 68-point shape predictor (100 MB), loaded once per process."""
    return _import_dlib().shape_predictor(dlib_model_path("shape_predictor_68_face_landmarks.dat"))


def five_from_68(points68: np.ndarray) -> np.ndarray:
    """68 iBUG points (68 x 2) -> 5 FFHQ-order points: eye centres, nose tip, mouth corners."""
    p = np.asarray(points68, np.float64)
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])


def landmarks_68(rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Run dlib's 68-point predictor inside a box (x0, y0, x1, y1) -> 68 x 2 float64."""
    dlib = _import_dlib()
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    shape = _shape_predictor_68()(_check_rgb(rgb), dlib.rectangle(x0, y0, x1, y1))
    return np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], np.float64)


def landmarks_68_in_crop(crop: np.ndarray) -> np.ndarray:
    """68 dlib points (68 x 2) of an FFHQ-aligned square crop (any size).

    The face's place in an aligned crop is fixed, so the predictor gets a fixed box: at 512 px
    (105, 155)-(403, 453), the mean of the boxes dlib's HOG detector reports on aligned crops of
    the bundled photos and their mirror images (8 crops), scaled to the crop size. Aligned crops
    are upright, so this also serves faces that were tilted in the photo, where the predictor run
    on the photo itself does worse.
    """
    box = np.array([105.0, 155.0, 403.0, 453.0]) * (crop.shape[0] / 512.0)
    return landmarks_68(crop, box)


class _DlibDetector:
    """Shared part of the two dlib backends: lazy model, 68 points -> 5 landmarks."""

    name = "dlib"
    min_image_side = 40  # dlib finds faces from ~80 px (40 with upsample=1); MMOD breaks under 10 px

    def __init__(self, upsample: int = 0) -> None:
        self.upsample = int(upsample)
        self._model = None
        self._lock = threading.Lock()

    def _load_model(self):
        raise NotImplementedError

    def _rects(self, model, rgb: np.ndarray) -> list[tuple[object, float]]:
        raise NotImplementedError

    def detect(self, rgb: np.ndarray) -> list[Face]:
        rgb = _check_rgb(rgb)
        if min(rgb.shape[:2]) < self.min_image_side:
            return []
        with self._lock:
            if self._model is None:
                self._model = self._load_model()
        faces = []
        for rect, score in self._rects(self._model, rgb):
            box = np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], np.float64)
            lm68 = landmarks_68(rgb, box)
            faces.append(
                Face(box.astype(np.float32), five_from_68(lm68).astype(np.float32), score,
                     lm68.astype(np.float32))
            )
        return faces


class DlibHogDetector(_DlibDetector):
    """dlib's HOG + linear SVM frontal detector (faces from about 80 px, 40 px with upsample=1)."""

    name = "dlib-hog"

    def _load_model(self):
        return _import_dlib().get_frontal_face_detector()

    def _rects(self, model, rgb):
        rects, scores, _ = model.run(rgb, self.upsample, 0.0)
        return [(r, float(s)) for r, s in zip(rects, scores)]


class DlibCnnDetector(_DlibDetector):
    """dlib's MMOD CNN detector: pose-tolerant, seconds per photo on CPU."""

    name = "dlib-cnn"

    def _load_model(self):
        return _import_dlib().cnn_face_detection_model_v1(dlib_model_path("mmod_human_face_detector.dat"))

    def _rects(self, model, rgb):
        return [(d.rect, float(d.confidence)) for d in model(rgb, self.upsample)]


_BACKENDS = {"mtcnn": MtcnnDetector, "dlib-hog": DlibHogDetector, "dlib-cnn": DlibCnnDetector}


def get_detector(name: str = DEFAULT_DETECTOR, **opts) -> Detector:
    """The detector backend `name` with options `opts`; the same object for the same arguments."""
    if name not in _BACKENDS:
        raise UserError(f"unknown face detector {name!r}; choose one of: {', '.join(DETECTORS)}")
    return _cached_detector(name, tuple(sorted(opts.items())))


@functools.lru_cache(maxsize=16)
def _cached_detector(name: str, opts: tuple) -> Detector:
    try:
        return _BACKENDS[name](**dict(opts))
    except TypeError as exc:
        raise UserError(f"bad option for detector {name!r}: {exc}") from None


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3):
        raise ValueError("expected an RGB uint8 HxWx3 array")
    return np.ascontiguousarray(rgb)


def detect_scaled(rgb: np.ndarray, detector: Detector, max_side: int | None) -> list[Face]:
    """Detect on a copy whose long side is at most max_side; map results back."""
    h, w = rgb.shape[:2]
    scale = 1.0 if not max_side or max(h, w) <= max_side else max_side / max(h, w)
    if scale == 1.0:
        return detector.detect(rgb)
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    sx, sy = w / small.shape[1], h / small.shape[0]
    # pixel centres: x_full = (x_small + 0.5) * sx - 0.5
    back = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]])
    return [f.transformed(back) for f in detector.detect(small)]


def _detect_rotated(rgb: np.ndarray, detector: Detector, max_side: int | None) -> list[Face]:
    """Try the image turned by 90 degrees either way; landmarks keep their semantic order."""
    h, w = rgb.shape[:2]
    for k in (1, -1):  # np.rot90: k=1 counter-clockwise
        turned = np.ascontiguousarray(np.rot90(rgb, k))
        faces = detect_scaled(turned, detector, max_side)
        if faces:
            # k=1: (x', y') = (y, w-1-x)  ->  x = w-1-y', y = x';  k=-1: x = y', y = h-1-x'
            m = np.array([[0, -1, w - 1], [1, 0, 0]]) if k == 1 else np.array([[0, 1, 0], [-1, 0, h - 1]])
            return [f.transformed(m) for f in faces]
    return []


def detect_faces(
    rgb: np.ndarray,
    detector: str | Detector = DEFAULT_DETECTOR,
    only_center_face: bool = False,
    largest_only: bool = False,
    min_size: float = 0,
    max_side: int | None = 1600,
    fallback: str | Detector | None = None,
    try_rotated: bool = False,
) -> list[Face]:
    """Find faces in an RGB uint8 image; results are in its full-resolution coordinates.

    Images whose long side exceeds `max_side` are searched on a down-scaled copy (bounded memory
    and time). `fallback` (e.g. "dlib-cnn") runs when the primary finds nothing; `try_rotated`
    then also tries the photo turned by ±90 degrees. Faces smaller than `min_size` pixels (short
    side of the box) are dropped. Faces are returned largest first; `only_center_face` keeps the
    one nearest the image centre, `largest_only` the largest (only_center_face wins if both).
    """
    rgb = _check_rgb(rgb)
    det = get_detector(detector) if isinstance(detector, str) else detector
    faces = detect_scaled(rgb, det, max_side)
    if not faces and fallback is not None:
        fb = get_detector(fallback) if isinstance(fallback, str) else fallback
        if fb is not det:
            faces = detect_scaled(rgb, fb, max_side)
    if not faces and try_rotated:
        faces = _detect_rotated(rgb, det, max_side)
    return select(faces, rgb.shape, min_size, only_center_face, largest_only)


def select(faces: Sequence[Face], shape: tuple[int, ...], min_size: float = 0, only_center: bool = False,
           largest: bool = False) -> list[Face]:
    """Drop faces under `min_size` (short side of the box), sort largest first, then keep only the
    one nearest the centre of an image of `shape` (`only_center`) or the largest (`largest`)."""
    kept = [f for f in faces if min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= min_size]
    kept.sort(key=lambda f: -f.area)
    if kept and only_center:
        centre = np.array([shape[1] / 2, shape[0] / 2])
        return [min(kept, key=lambda f: float(np.hypot(*((f.box[:2] + f.box[2:]) / 2 - centre))))]
    if kept and largest:
        return kept[:1]
    return kept
