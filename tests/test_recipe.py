"""The training-data recipe: identity splits, filters, real-LQ folder, counts, resumable reruns."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmrface.cli import main
from mmrface.data.pose import FACE_MODEL, POSE_POINTS, camera, head_pose, yaw_bucket
from mmrface.data.recipe import FaceFilter, IdentitySplit, colourfulness
from mmrface.errors import UserError

PHOTOS = Path(__file__).resolve().parents[1] / "assets" / "photos"


def _write_manifest(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    path.write_text("file,icpsr,split\n" + "".join(f"{f},{i},{s}\n" for f, i, s in rows))
    return path


def test_manifest_split_by_identity(tmp_path):
    m = _write_manifest(tmp_path / "m.csv", [("hq/a.jpg", "1", "train"), ("lq/b.jpg", "1", "train"),
                                             ("hq/c.jpg", "2", "val")])
    ids = IdentitySplit.from_manifest(m)
    assert ids.lookup(Path("/x/congress/hq/a.jpg")) == ("1", "train")
    assert ids.lookup(Path("lq/b.jpg")) == ("1", "train")
    assert ids.lookup(Path("elsewhere/c.jpg")) == ("2", "val")  # by file name when the folder differs
    assert ids.lookup(Path("hq/unknown.jpg")) is None
    bad = _write_manifest(tmp_path / "bad.csv", [("a.jpg", "1", "train"), ("b.jpg", "1", "val")])
    with pytest.raises(UserError, match="person 1 is in both splits"):
        IdentitySplit.from_manifest(bad)
    with pytest.raises(UserError, match="split 'test'"):
        IdentitySplit.from_manifest(_write_manifest(tmp_path / "t.csv", [("a.jpg", "1", "test")]))


def test_hash_split_is_stable_and_keeps_a_person_together():
    by_person = IdentitySplit.by_hash(0.5, id_regex=r"^([a-z]+)_")
    for person in ("alice", "bob", "carol", "dave"):
        sides = {by_person.lookup(Path(f"{person}_{j:03d}.jpg")) for j in range(5)}
        assert len(sides) == 1 and next(iter(sides))[0] == person  # all five photos on one side
    names = [Path(f"{k:05d}.png") for k in range(4000)]
    first = [IdentitySplit.by_hash(0.1).lookup(n) for n in names]
    assert first == [IdentitySplit.by_hash(0.1).lookup(n) for n in names]  # stable across runs
    val = sum(split == "val" for _, split in first)
    assert 300 < val < 500  # about 10 %
    with pytest.raises(UserError, match="needs a group"):
        IdentitySplit.by_hash(0.1, id_regex="abc")


def test_face_filter_by_extent_and_colour():
    grey = np.repeat(np.random.default_rng(0).integers(0, 255, (64, 64, 1), np.uint8), 3, axis=2)
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = 200
    assert colourfulness(grey) == 0.0 and colourfulness(red) > 200
    assert FaceFilter(min_crop=128).check(grey, 100.0) == (False, "crop_too_small")
    assert FaceFilter(min_crop=128).check(grey, 130.0) == (True, "")
    assert FaceFilter(colour="colour").check(grey, 500) == (False, "not_colour")
    assert FaceFilter(colour="grey").check(red, 500) == (False, "not_grey")
    assert FaceFilter(colour="grey").check(grey, 500) == (True, "")


def test_head_pose_recovers_known_angles_and_mirror_flips_yaw():
    import cv2

    for yaw, pitch in ((0, 0), (25, -5), (-40, 10)):
        y, p = np.radians(yaw), np.radians(pitch)
        ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
        rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
        rvec, _ = cv2.Rodrigues(ry @ rx)
        proj, _ = cv2.projectPoints(FACE_MODEL, rvec, np.array([0, 0, 2500.0]), camera(256), np.zeros(4))
        pts = np.zeros((68, 2))
        pts[list(POSE_POINTS)] = proj[:, 0]
        got = head_pose(pts, 256)
        assert abs(got[0] - yaw) < 0.5 and abs(got[1] - pitch) < 0.5
        mirrored = pts.copy()
        mirrored[:, 0] = 255 - mirrored[:, 0]
        order = list(range(68))  # mirror swaps the left/right points the pose uses
        order[36], order[45], order[48], order[54] = 45, 36, 54, 48
        assert abs(head_pose(mirrored[order], 256)[0] + yaw) < 0.5
    assert [yaw_bucket(v) for v in (3, -14.9, 15, -29, 30, -70)] == ["<15°", "<15°", "15-30°", "15-30°", ">30°", ">30°"]


@pytest.fixture
def recipe_input(tmp_path):
    hq, lq = tmp_path / "set" / "hq", tmp_path / "set" / "lq"
    hq.mkdir(parents=True)
    lq.mkdir()
    for name in ("astronaut.png", "grace_hopper.jpg", "luispedro.jpg"):
        shutil.copy(PHOTOS / name, hq / name)
    shutil.copy(PHOTOS / "portrait_exif.jpg", lq / "portrait_exif.jpg")
    manifest = _write_manifest(tmp_path / "set" / "manifest.csv", [
        ("hq/astronaut.png", "1", "train"), ("hq/grace_hopper.jpg", "2", "val"),
        ("hq/luispedro.jpg", "3", "train"), ("lq/portrait_exif.jpg", "4", "train")])
    return hq, lq, manifest


def test_prepare_recipe_splits_filters_and_resumes(recipe_input, tmp_path, capsys):
    hq, lq, manifest = recipe_input
    out = tmp_path / "data"
    args = ["prepare", "-i", str(hq), "-o", str(out), "--size", "64", "--manifest", str(manifest),
            "--largest-face", "--fallback", "none", "--lq", str(lq), "--lq-size", "32", "--min-crop", "250"]
    assert main(args) == 0
    summary = json.loads((out / "prepare.json").read_text())
    records = {s: json.loads((out / s / "landmarks.json").read_text()) for s in ("train", "val")}
    # every face lands on its person's side; the astronaut's face (its crop spans ~171 px) is filtered
    assert sorted(records["val"]) == ["grace_hopper_0.png"]
    assert sorted(records["train"]) == ["luispedro_0.png"]
    assert summary["hq"]["by_split"] == {"train": 1, "val": 1}
    assert summary["hq"]["skipped"] == {"crop_too_small": 1}
    assert summary["lq"]["by_split"] == {"train": 1, "val": 0}
    assert (out / "lq" / "train" / "portrait_exif_0.png").is_file()
    rec = records["train"]["luispedro_0.png"]
    assert rec["crop_px"] > 250 and 25 < abs(rec["yaw"]) < 40 and 0 <= rec["colour"] <= 255  # a turned head
    assert "recipe: hq: 2 faces (train 1, val 1); skipped: crop_too_small 1" in capsys.readouterr().out
    # a rerun processes nothing and reports the same folder
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "(0 new this run" in printed and json.loads((out / "prepare.json").read_text())["hq"] == summary["hq"]


def test_prepare_recipe_refuses_recipe_flags_without_a_split(recipe_input, tmp_path):
    hq, lq, _ = recipe_input
    assert main(["prepare", "-i", str(hq), "-o", str(tmp_path / "o"), "--lq", str(lq)]) == 2
    assert not (tmp_path / "o").exists()
