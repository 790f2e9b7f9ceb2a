"""pipeline/detect.py and pipeline/mtcnn.py on the bundled photos (assets/photos)."""

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from mmrface.errors import UserError
from mmrface.pipeline.detect import Face, detect_faces, get_detector
from mmrface.pipeline.imageio import read_image
from mmrface.pipeline.mtcnn import nms

PHOTOS = Path(__file__).resolve().parents[1] / "assets" / "photos"


@pytest.fixture(scope="module")
def astronaut():
    return read_image(PHOTOS / "astronaut.png").rgb


@pytest.fixture(scope="module")
def grace():
    return read_image(PHOTOS / "grace_hopper.jpg").rgb


def _check_face(face: Face, image: np.ndarray) -> None:
    """Plausible geometry: eyes above nose above mouth, left before right, all in the box."""
    lm = face.landmarks
    x0, y0, x1, y1 = face.box
    assert lm.shape == (5, 2) and face.box.shape == (4,)
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # image-left point first
    assert max(lm[0, 1], lm[1, 1]) < lm[2, 1] < min(lm[3, 1], lm[4, 1])
    assert (lm[:, 0] > x0).all() and (lm[:, 0] < x1).all() and (lm[:, 1] > y0).all() and (lm[:, 1] < y1).all()
    iod = np.linalg.norm(lm[1] - lm[0])
    assert 0.2 * (x1 - x0) < iod < 0.7 * (x1 - x0)
    assert 0 <= x0 < x1 <= image.shape[1] + 5 and 0 <= y0 < y1 <= image.shape[0] + 5


@pytest.mark.parametrize("backend", ["mtcnn", "dlib-hog"])
def test_fast_backends_find_the_face(backend, astronaut, grace):
    eyes = {}
    for name, image in (("astronaut", astronaut), ("grace", grace)):
        faces = detect_faces(image, backend)
        assert len(faces) == 1, f"{backend} on {name}: {len(faces)} faces"
        _check_face(faces[0], image)
        eyes[name] = faces[0].landmarks[:2]
    # the eye centres (read off the photos): within 12 % of the eye distance
    for name, truth in (("astronaut", [[204, 101], [247, 103]]), ("grace", [[218, 191], [309, 185]])):
        iod = np.linalg.norm(np.subtract(truth[1], truth[0]))
        np.testing.assert_allclose(eyes[name], truth, atol=0.12 * iod)


@pytest.mark.slow
def test_dlib_cnn_finds_the_face(astronaut, grace):
    for image in (astronaut, grace):
        faces = detect_faces(image, "dlib-cnn")
        assert len(faces) == 1
        _check_face(faces[0], image)
        assert faces[0].landmarks68.shape == (68, 2)


def test_dlib_backends_give_68_points_and_mtcnn_does_not(astronaut):
    hog = detect_faces(astronaut, "dlib-hog")[0]
    assert hog.landmarks68.shape == (68, 2)
    np.testing.assert_allclose(hog.landmarks[0], hog.landmarks68[36:42].mean(0), atol=1e-4)
    np.testing.assert_allclose(hog.landmarks[3], hog.landmarks68[48], atol=1e-4)
    assert detect_faces(astronaut, "mtcnn")[0].landmarks68 is None


def test_large_image_is_searched_downscaled_and_mapped_back(astronaut):
    class Spy:
        name = "spy"
        seen = None

        def detect(self, rgb):
            Spy.seen = rgb.shape
            return [Face(np.array([10, 20, 50, 60], np.float32), np.full((5, 2), 30, np.float32), 1.0)]

    face = detect_faces(np.zeros((900, 1500, 3), np.uint8), Spy(), max_side=500)[0]
    assert Spy.seen == (300, 500, 3)
    np.testing.assert_allclose(face.box, [30, 60, 150, 180])  # box edges scale by 3
    np.testing.assert_allclose(face.landmarks, np.full((5, 2), 91))  # centres: 3 (x + 0.5) - 0.5
    # the real detector on an enlarged photo: the same eyes, 3x further out
    big = cv2.resize(astronaut, (1536, 1536), interpolation=cv2.INTER_CUBIC)
    full = detect_faces(astronaut, "mtcnn")[0]
    found = detect_faces(big, "mtcnn", max_side=512)[0]
    iod = np.linalg.norm(full.landmarks[1] - full.landmarks[0]) * 3
    np.testing.assert_allclose(found.landmarks, full.landmarks * 3 + 1, atol=0.1 * iod)


def _two_faces(astronaut, grace):
    """1024 x 512 canvas: astronaut at left, a third-size Grace Hopper right of centre."""
    canvas = np.full((512, 1024, 3), 128, np.uint8)
    canvas[:, :512] = astronaut
    canvas[:200, 620:790] = cv2.resize(grace, (170, 200), interpolation=cv2.INTER_AREA)
    return canvas


class _Fixed:
    """A detector that returns given faces (in reverse order, to test the sorting)."""

    name = "fixed"

    def __init__(self, faces):
        self.faces = faces

    def detect(self, rgb):
        return list(reversed(self.faces))


def test_selection_options(astronaut, grace):
    canvas = _two_faces(astronaut, grace)
    faces = detect_faces(canvas, "mtcnn")
    assert len(faces) == 2 and faces[0].area > faces[1].area  # largest first
    assert faces[0].box[0] < 512 and faces[1].box[0] > 600  # astronaut, then Grace
    fixed = _Fixed(faces)
    largest = detect_faces(canvas, fixed, largest_only=True)
    assert len(largest) == 1 and largest[0] is faces[0]
    centre = detect_faces(canvas, fixed, only_center_face=True)
    assert len(centre) == 1 and centre[0] is faces[1]  # Grace is nearer the centre
    side = min(faces[1].box[2] - faces[1].box[0], faces[1].box[3] - faces[1].box[1])
    assert detect_faces(canvas, fixed, min_size=side + 1) == [faces[0]]


def test_turned_photo_found_with_try_rotated(astronaut):
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    turned = np.ascontiguousarray(np.rot90(small, 1))  # lying on its side
    upright = detect_faces(small, "mtcnn")[0]
    assert detect_faces(turned, "mtcnn") == []
    faces = detect_faces(turned, "mtcnn", try_rotated=True)
    assert len(faces) == 1
    # the landmarks keep their meaning: point 0 is still the same eye, in turned coordinates
    w = small.shape[1]
    expected = np.stack([upright.landmarks[:, 1], w - 1 - upright.landmarks[:, 0]], axis=1)
    np.testing.assert_allclose(faces[0].landmarks, expected, atol=2.0)


def test_fallback_runs_when_primary_finds_nothing(astronaut):
    class Nothing:
        name = "nothing"

        def detect(self, rgb):
            return []

    class Always:
        name = "always"
        calls = 0

        def detect(self, rgb):
            Always.calls += 1
            return [Face(np.array([1, 2, 30, 40], np.float32), np.tile([[10.0, 20.0]], (5, 1)), 0.9)]

    assert detect_faces(astronaut, Nothing()) == []
    faces = detect_faces(astronaut, Nothing(), fallback=Always())
    assert len(faces) == 1 and Always.calls == 1
    detect_faces(astronaut, Always(), fallback=Always())
    assert Always.calls == 2  # primary found a face: the fallback did not run


def test_no_face_in_flat_image():
    flat = np.full((200, 300, 3), 120, np.uint8)
    for backend in ("mtcnn", "dlib-hog"):
        assert detect_faces(flat, backend) == []


def test_detector_cache_and_errors():
    assert get_detector("mtcnn") is get_detector("mtcnn")
    assert get_detector("dlib-hog", upsample=1) is not get_detector("dlib-hog")
    with pytest.raises(UserError, match="unknown face detector"):
        get_detector("haar")
    with pytest.raises(UserError, match="bad option"):
        get_detector("mtcnn", nonsense=3)


def test_nms():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 4, 4]], float)
    scores = np.array([0.9, 0.95, 0.5, 0.8])
    assert nms(boxes, scores, 0.5).tolist() == [1, 3, 2]  # box 0 overlaps box 1 (IoU 0.68)
    assert nms(boxes, scores, 0.5, mode="min").tolist() == [1, 2]  # box 3 lies inside box 1
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_face_transformed():
    face = Face(np.array([10, 20, 30, 60], np.float32), np.arange(10, dtype=np.float32).reshape(5, 2), 1.0)
    moved = face.transformed(np.array([[2.0, 0, 5], [0, 2.0, -1]]))
    np.testing.assert_allclose(moved.landmarks, face.landmarks * 2 + [5, -1])  # centres
    np.testing.assert_allclose(moved.box, np.array([10, 20, 30, 60]) * 2 + [4.5, -1.5] * 2)  # edges
    w = 100  # turning a W-wide image by 90 degrees: box [10, 30) in x becomes [W-30, W-10) in y
    turned = face.transformed(np.array([[0, 1.0, 0], [-1.0, 0, w - 1]]))
    np.testing.assert_allclose(turned.box, [20, w - 30, 60, w - 10])


def test_mtcnn_uses_weight_files_only():
    """Our MTCNN must not import facenet-pytorch's Python modules (they pull in torchvision)."""
    code = (
        "import sys, numpy as np\n"
        "from mmrface.pipeline.detect import detect_faces\n"
        "detect_faces(np.full((64, 64, 3), 100, np.uint8), 'mtcnn')\n"
        "bad = [m for m in sys.modules if m.startswith(('facenet_pytorch', 'torchvision'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
