"""Identity and landmark distances with dlib's models ("Deg (dlib)", "LMD (dlib-68)").

These are *not* the ArcFace-based "Deg" of GFPGAN-style papers: we use the freely shipped dlib
ResNet face-recognition model (128-d embeddings, from the ``face-recognition-models`` package),
so numbers are comparable between our runs, not with papers.

Protocol for a restored/ground-truth pair of the same size:

1. One face box for both images, found on the **ground truth**: dlib's HOG frontal detector
   (largest face; one 2x up-sampling pass is added for images under 400 px). When it finds
   nothing, a fixed central box is used, meant for FFHQ-aligned crops: (0.21, 0.31, 0.79, 0.89)
   of the width/height, the mean of the HOG boxes we measured on FFHQ-aligned faces.
2. Identity: in each image, dlib's 5-point shape predictor on that box gives the face chip
   (150x150) for the recognition ResNet; distances between the two 128-d embeddings:
   cosine distance ``1 - cos``, euclidean (dlib's same-person threshold is 0.6), and the angle
   in degrees ("Deg").
3. Landmarks: dlib's 68-point predictor on the same box in each image; LMD is the mean
   euclidean distance between corresponding points, in pixels of the input images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from mmrface.errors import UserError
from mmrface.metrics._image import check_image, check_pair

CENTRAL_BOX = (0.21, 0.31, 0.79, 0.89)  # (left, top, right, bottom) as fractions of (W, H, W, H)
_UPSAMPLE_BELOW = 400


@dataclass(frozen=True)
class FaceBox:
    """Pixel box (right/bottom inclusive, dlib convention) and where it came from."""

    left: int
    top: int
    right: int
    bottom: int
    source: str  # "detector" | "central"


@dataclass(frozen=True)
class IdentityDistance:
    """Distances between the dlib embeddings of two faces."""

    cosine: float  # 1 - cos(angle)
    euclidean: float  # dlib's own metric; < 0.6 means "same person" for dlib
    degrees: float  # the angle between the embeddings


def _model_file(name: str) -> str:
    """A face-recognition-models file, checked against its sha256 (`mmrface.thirdparty`)."""
    from mmrface.thirdparty import verified_file

    return str(verified_file("face_recognition_models", f"models/{name}",
                             missing="identity metrics need face-recognition-models: pip install face-recognition-models"))


@lru_cache(maxsize=1)
def _dlib():
    """(dlib module, detector, 5-point predictor, 68-point predictor, recogniser), loaded once."""
    try:
        import dlib
    except ImportError as exc:
        raise UserError("identity metrics need dlib: pip install dlib-bin") from exc
    files = {k: _model_file(f) for k, f in (("sp5", "shape_predictor_5_face_landmarks.dat"),
                                             ("sp68", "shape_predictor_68_face_landmarks.dat"),
                                             ("rec", "dlib_face_recognition_resnet_model_v1.dat"))}
    return (dlib, dlib.get_frontal_face_detector(), dlib.shape_predictor(files["sp5"]),
            dlib.shape_predictor(files["sp68"]), dlib.face_recognition_model_v1(files["rec"]))


def face_box(img: np.ndarray) -> FaceBox:
    """The largest HOG-detected face of a uint8 RGB image, else the central FFHQ box."""
    check_image(img)
    _, detector, *_ = _dlib()
    img = np.ascontiguousarray(img)
    dets = list(detector(img, 0))
    if not dets and min(img.shape[:2]) < _UPSAMPLE_BELOW:
        dets = list(detector(img, 1))
    if dets:
        r = max(dets, key=lambda d: d.area())
        return FaceBox(r.left(), r.top(), r.right(), r.bottom(), "detector")
    h, w = img.shape[:2]
    fl, ft, fr, fb = CENTRAL_BOX
    return FaceBox(round(fl * w), round(ft * h), round(fr * w) - 1, round(fb * h) - 1, "central")


def _rect(box: FaceBox):
    dlib = _dlib()[0]
    return dlib.rectangle(box.left, box.top, box.right, box.bottom)


def embedding(img: np.ndarray, box: FaceBox) -> np.ndarray:
    """dlib 128-d face descriptor (float64) of the face in ``box``."""
    _, _, sp5, _, rec = _dlib()
    img = np.ascontiguousarray(check_image(img))
    shape = sp5(img, _rect(box))
    return np.asarray(rec.compute_face_descriptor(img, shape), dtype=np.float64)


def landmarks68(img: np.ndarray, box: FaceBox) -> np.ndarray:
    """dlib 68 landmarks (68, 2) in pixel (x, y) for the face in ``box``."""
    _, _, _, sp68, _ = _dlib()
    img = np.ascontiguousarray(check_image(img))
    shape = sp68(img, _rect(box))
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


def embedding_distance(a: np.ndarray, b: np.ndarray) -> IdentityDistance:
    """Cosine / euclidean / angular distance of two embedding vectors."""
    cos = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
    cos = max(-1.0, min(1.0, cos))
    return IdentityDistance(1.0 - cos, float(np.linalg.norm(a - b)), math.degrees(math.acos(cos)))


def identity_distance(restored: np.ndarray, gt: np.ndarray,
                      box: FaceBox | None = None) -> IdentityDistance:
    """Identity distance of a restored face to its ground truth (box from the gt if not given)."""
    check_pair(restored, gt)
    box = box or face_box(gt)
    return embedding_distance(embedding(restored, box), embedding(gt, box))


def landmark_distance(restored: np.ndarray, gt: np.ndarray, box: FaceBox | None = None) -> float:
    """Mean euclidean distance (pixels) between the 68 dlib landmarks of restored and gt."""
    check_pair(restored, gt)
    box = box or face_box(gt)
    return float(np.mean(np.linalg.norm(landmarks68(restored, box) - landmarks68(gt, box), axis=1)))
