"""Identity ("Deg (dlib)") and landmark ("LMD (dlib-68)") distances on real aligned faces."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from mmrface.errors import UserError
from mmrface.metrics.identity import (
    CENTRAL_BOX,
    embedding_distance,
    face_box,
    identity_distance,
    landmark_distance,
    landmarks68,
)

DATA = Path(__file__).parent / "data"


def _read(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(DATA / name)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def faces():
    return _read("metrics_astronaut_face_128.png"), _read("metrics_grace_hopper_face_128.png")


def test_face_box_detector_and_central_fallback(faces):
    box = face_box(faces[0])
    assert box.source == "detector"
    # on an FFHQ-aligned crop the detection agrees with the documented central box
    fl, ft, fr, fb = (v * 128 for v in CENTRAL_BOX)
    got = np.array([box.left, box.top, box.right, box.bottom])
    assert np.abs(got - np.array([fl, ft, fr, fb])).max() < 12
    flat = face_box(np.full((128, 128, 3), 90, np.uint8))
    assert flat.source == "central" and (flat.left, flat.top) == (27, 40)


def test_identity_same_face_small_other_face_large(faces):
    astro, grace = faces
    same = identity_distance(cv2.GaussianBlur(astro, (0, 0), 1.0), astro)
    other = identity_distance(grace, astro)
    assert same.euclidean < 0.4 and same.degrees < 15  # dlib: < 0.6 means same person
    assert other.euclidean > 0.6 and other.degrees > 20
    assert other.cosine > 4 * same.cosine


def test_landmark_distance_tracks_a_shift(faces):
    astro, grace = faces
    pts = landmarks68(astro, face_box(astro))
    assert pts.shape == (68, 2)
    shift = np.float32([[1, 0, 4], [0, 1, 0]])  # 4 px to the right
    shifted = cv2.warpAffine(astro, shift, (128, 128), borderMode=cv2.BORDER_REFLECT)
    assert landmark_distance(shifted, astro) == pytest.approx(4.0, abs=0.6)
    assert landmark_distance(cv2.GaussianBlur(astro, (0, 0), 1.0), astro) < 1.5
    assert landmark_distance(astro, astro) == 0.0


def test_embedding_distance_math():
    a, b = np.array([1.0, 0.0]), np.array([0.0, 2.0])
    d = embedding_distance(a, b)
    assert d.cosine == pytest.approx(1.0) and d.degrees == pytest.approx(90.0)
    assert d.euclidean == pytest.approx(np.sqrt(5))


def test_bad_input(faces):
    with pytest.raises(UserError, match="differ in shape"):
        identity_distance(faces[0][:100], faces[0])
    with pytest.raises(UserError, match="ground-truth"):
        landmark_distance(faces[0], None)
