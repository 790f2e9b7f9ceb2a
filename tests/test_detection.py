"""pipeline/detection.py: the one detection policy (`DetectionOptions`) every caller goes through."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmrface.errors import UserError
from mmrface.pipeline import detect
from mmrface.pipeline.detect import Face

PHOTOS = Path(__file__).resolve().parents[1] / "assets" / "photos"


class Spy:
    """A detector that records the image sizes it was given and finds nothing (or `faces`)."""

    min_image_side = 1

    def __init__(self, name, faces=()):
        self.name, self.faces, self.seen = name, list(faces), []

    def detect(self, rgb):
        self.seen.append(rgb.shape[:2])
        return list(self.faces)


@pytest.fixture
def spies(monkeypatch):
    """get_detector answers with spies: 'mtcnn' finds nothing, 'dlib-cnn' one face."""
    face = Face(np.array([10, 10, 90, 90], np.float32), np.tile([[50.0, 50.0]], (5, 1)).astype(np.float32), 0.9)
    made = {"mtcnn": Spy("mtcnn"), "dlib-cnn": Spy("dlib-cnn", [face]), "dlib-hog": Spy("dlib-hog")}
    monkeypatch.setattr(detect, "get_detector", lambda name, **opts: made[name])
    from mmrface.pipeline import detection

    monkeypatch.setattr(detection, "get_detector", lambda name, **opts: made[name])
    return made


def test_options_validate_and_resolve():
    from mmrface.pipeline.detection import DetectionOptions

    opts = DetectionOptions()
    assert opts.primary == "mtcnn"
    with pytest.raises(UserError, match="unknown face detector"):
        DetectionOptions(backend="haar")
    with pytest.raises(UserError, match="fallback"):
        DetectionOptions(fallback="opencv")
    with pytest.raises(UserError, match="min_size"):
        DetectionOptions(min_size=-1)
    with pytest.raises(UserError, match="fallback_max_side"):
        DetectionOptions(fallback_max_side=-5)
    assert DetectionOptions(fallback="none").fallback is None
    assert DetectionOptions(backend="dlib-cnn").resolved_fallback() is None  # never itself
    assert opts.replace(largest=True).largest and not opts.largest  # frozen values


def test_auto_fallback_only_to_an_installed_backend(monkeypatch, spies):
    from mmrface.pipeline.detection import DetectionOptions, find_faces

    flat = np.full((200, 300, 3), 120, np.uint8)
    assert len(find_faces(flat, DetectionOptions())) == 1  # dlib "installed": MMOD found the face
    monkeypatch.setitem(sys.modules, "dlib", None)  # as if the [detect] extra were not installed
    opts = DetectionOptions()
    assert opts.resolved_fallback() is None
    spies["dlib-cnn"].seen.clear()
    assert find_faces(flat, opts) == []
    assert spies["dlib-cnn"].seen == []
    with pytest.raises(UserError, match="dlib"):  # asked for by name: a clear error
        DetectionOptions(fallback="dlib-cnn").resolved_fallback()


def test_no_face_photo_without_dlib_restores_cleanly(monkeypatch):
    """Before: `auto` fell back to dlib-cnn without dlib -> "the dlib detectors need dlib"."""
    from mmrface.config import load_config
    from mmrface.models import build_model
    from mmrface.pipeline.restorer import Restorer

    monkeypatch.setitem(sys.modules, "dlib", None)
    detect._cached_detector.cache_clear()  # no MMOD model loaded earlier in this process
    try:
        restorer = Restorer(model=build_model(load_config("tiny").model), device="cpu", upscale=1)
        result = restorer.restore(np.full((120, 160, 3), 90, np.uint8))
    finally:
        detect._cached_detector.cache_clear()
    assert result.faces == [] and result.image.shape == (120, 160, 3)


def test_fallback_is_bounded_in_size(spies):
    from mmrface.pipeline.detection import DetectionOptions, find_faces

    photo = np.zeros((1500, 2000, 3), np.uint8)
    faces = find_faces(photo, DetectionOptions(fallback_max_side=640))
    assert spies["mtcnn"].seen == [(1200, 1600)]  # the primary on its 1600-px copy
    assert spies["dlib-cnn"].seen == [(480, 640)]  # the fallback on a 640-px copy
    np.testing.assert_allclose(faces[0].box, np.array([10, 10, 90, 90]) * 2000 / 640, rtol=1e-5)  # mapped back
    spies["dlib-cnn"].seen.clear()
    assert find_faces(photo, DetectionOptions(fallback=None)) == []
    assert spies["dlib-cnn"].seen == []


def test_selection_and_min_size_are_one_policy(spies):
    from mmrface.pipeline.detection import DetectionOptions, find_faces, select_faces

    big = Face(np.array([0, 0, 100, 100], np.float32), np.zeros((5, 2), np.float32), 0.9)
    small = Face(np.array([140, 140, 170, 170], np.float32), np.zeros((5, 2), np.float32), 0.9)
    spies["mtcnn"].faces = [small, big]
    img = np.zeros((300, 300, 3), np.uint8)
    assert find_faces(img, DetectionOptions()) == [big, small]  # largest first
    assert find_faces(img, DetectionOptions(largest=True)) == [big]
    assert find_faces(img, DetectionOptions(only_center=True)) == [small]
    assert find_faces(img, DetectionOptions(min_size=50)) == [big]
    assert select_faces([small, big], img.shape, DetectionOptions(only_center=True)) == [small]  # (video)


@pytest.mark.parametrize("shape", [(1, 1), (4, 4), (8, 8), (9, 9), (200, 8), (6, 1000)])
def test_images_too_small_for_a_backend_find_nothing_instead_of_crashing(shape):
    """dlib's MMOD raises ("Error detected at line 2957") on images under 10 px, and on a 200x8 image it
    corrupts the heap and aborts the process: run in a subprocess so that a crash is a failure."""
    pytest.importorskip("dlib")
    code = ("import numpy as np\n"
            "from mmrface.pipeline.detection import DetectionOptions, find_faces\n"
            f"img = np.full({shape + (3,)}, 128, np.uint8)\n"
            "for backend in ('mtcnn', 'dlib-hog', 'dlib-cnn'):\n"
            "    assert find_faces(img, DetectionOptions(backend=backend, fallback='dlib-cnn')) == []\n"
            "print('ok')\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-800:]
