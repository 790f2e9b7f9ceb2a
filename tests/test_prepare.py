"""`mmrface prepare`: photos -> aligned crops + landmarks.json; bad photos reported, run goes on."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmrface.cli import main
from mmrface.pipeline.align import ffhq_template
from mmrface.pipeline.imageio import read_image, write_image

PHOTOS = Path(__file__).resolve().parents[1] / "assets" / "photos"


@pytest.fixture
def photo_folder(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(PHOTOS / "astronaut.png", folder / "astronaut.png")
    write_image(folder / "wall.png", np.full((80, 120, 3), 140, np.uint8))  # no face
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def test_prepare_folder(photo_folder, tmp_path, capsys):
    out = tmp_path / "faces"
    code = main(["prepare", "-i", str(photo_folder), "-o", str(out), "--size", "128"])  # MMOD fallback
    printed = capsys.readouterr().out
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["astronaut_0.png", "landmarks.json", "skipped.json"]
    assert "wall.png: no face found" in printed
    assert "broken.jpg" in printed and "skipped" in printed
    assert "1 faces from 3 photos (1 new this run; skipped: no_face 1, unreadable 1" in printed.splitlines()[-1]
    assert json.loads((out / "skipped.json").read_text()) == {"broken.jpg": "unreadable", "wall.png": "no_face"}

    crop = read_image(out / "astronaut_0.png").rgb
    assert crop.shape == (128, 128, 3)
    record = json.loads((out / "landmarks.json").read_text())["astronaut_0.png"]
    assert record["size"] == 128 and record["source"] == "astronaut.png"
    five = np.array(record["5"])
    assert five.shape == (5, 2)
    np.testing.assert_allclose(five[:2], ffhq_template(128)[:2], atol=0.04 * 128)  # eyes on template
    sixty_eight = np.array(record["68"])
    assert sixty_eight.shape == (68, 2)
    np.testing.assert_allclose(sixty_eight[36:42].mean(0), five[0], atol=0.05 * 128)  # same eye
    x0, y0, x1, y1 = record["box"]
    assert 150 < x0 < x1 < 300 and 40 < y0 < y1 < 200  # the astronaut's face in the photo
    assert np.array(record["affine"]).shape == (2, 3)


def test_prepare_single_file_keeps_other_records(tmp_path, capsys):
    out = tmp_path / "faces"
    out.mkdir()
    (out / "landmarks.json").write_text(json.dumps({"older_0.png": {"size": 128}}))
    code = main(["prepare", "-i", str(PHOTOS / "astronaut.png"), "-o", str(out), "--size", "64",
                 "--largest-face"])
    assert code == 0
    records = json.loads((out / "landmarks.json").read_text())
    assert sorted(records) == ["astronaut_0.png", "older_0.png"]
    assert read_image(out / "astronaut_0.png").rgb.shape == (64, 64, 3)


def test_prepare_without_faces_or_images(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["prepare", "-i", str(empty), "-o", str(tmp_path / "o")]) == 2
    assert "no images" in capsys.readouterr().err
    write_image(empty / "wall.png", np.full((80, 120, 3), 140, np.uint8))
    assert main(["prepare", "-i", str(empty), "-o", str(tmp_path / "o"), "--fallback", "none"]) == 1
    assert "0 faces from 1 photos" in capsys.readouterr().out
    assert main(["prepare", "-i", str(tmp_path / "missing"), "-o", str(tmp_path / "o")]) == 2
