"""Data sets: shapes and ranges, determinism, bad files, landmarks and flipping."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mmrface.data.datasets import FaceFolderDataset, PairedTestSet, UnpairedLQDataset
from mmrface.data.degrade import Degradation
from mmrface.errors import UserError

DATA = Path(__file__).parent / "data"


@pytest.fixture
def faces(tmp_path) -> Path:
    """The bundled face as png, jpg and webp, with its landmarks.json."""
    root = tmp_path / "faces"
    root.mkdir()
    img = Image.open(DATA / "face128.png")
    img.save(root / "a.png")
    img.save(root / "b.jpg", quality=95)
    img.resize((96, 96)).save(root / "c.webp")
    lm = json.loads((DATA / "face128_landmarks.json").read_text())["face128.png"]
    (root / "landmarks.json").write_text(json.dumps({"a.png": lm, "b.jpg": lm, "c.webp": lm}))
    return root


def test_items_shapes_ranges_and_collate(faces):
    ds = FaceFolderDataset(faces, 64, "gfpgan", seed=1)
    assert len(ds) == 3
    item = ds[0]
    for key in ("hq", "lq"):
        assert item[key].shape == (3, 64, 64) and item[key].dtype == torch.float32
        assert item[key].min() >= -1 and item[key].max() <= 1 and item[key].std() > 0.1
    assert item["boxes"].shape == (3, 4) and item["landmarks5"].shape == (5, 2)
    params = json.loads(item["params"])
    assert params["preset"] == "gfpgan"
    # the LQ is exactly the replay of the record on the HQ (then rounded to 8 bits)
    hq = ((item["hq"].permute(1, 2, 0).numpy() + 1) / 2).astype(np.float32)
    lq = np.round(Degradation.apply(hq, params) * 255) / 255
    assert np.abs(lq * 2 - 1 - item["lq"].permute(1, 2, 0).numpy()).max() < 1e-5
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["lq"].shape == (3, 3, 64, 64) and batch["boxes"].shape == (3, 3, 4)
    assert len(batch["params"]) == 3 and isinstance(batch["params"][0], str)


def test_deterministic_per_seed_epoch_index(faces):
    a = FaceFolderDataset(faces, 32, "heavy", seed=3)
    b = FaceFolderDataset(faces, 32, "heavy", seed=3)
    for i in range(3):
        assert torch.equal(a[i]["lq"], b[i]["lq"]) and a[i]["params"] == b[i]["params"]
    first = [a[i]["params"] for i in range(3)]
    a.set_epoch(1)
    assert [a[i]["params"] for i in range(3)] != first
    c = FaceFolderDataset(faces, 32, "heavy", seed=4)
    assert [c[i]["params"] for i in range(3)] != first


def test_bad_files_are_skipped_with_a_warning(faces):
    (faces / "junk.png").write_bytes(b"not an image at all")
    good = (faces / "a.png").read_bytes()
    (faces / "broken.png").write_bytes(good[: len(good) // 3])  # header fine, data truncated
    lm = json.loads((faces / "landmarks.json").read_text())
    lm["broken.png"] = lm["a.png"]
    (faces / "landmarks.json").write_text(json.dumps(lm))
    with pytest.warns(UserWarning, match="junk.png"):
        ds = FaceFolderDataset(faces, 32, "gfpgan")
    names = [p.name for p in ds.files]
    assert "junk.png" not in names and "broken.png" in names
    i = names.index("broken.png")
    with pytest.warns(UserWarning, match="broken.png"):
        item = ds[i]
    assert Path(item["path"]).name == names[(i + 1) % len(names)]
    again = ds[i]  # the same fallback, deterministically
    assert again["path"] == item["path"] and torch.equal(again["lq"], item["lq"])


def test_empty_folder_raises_user_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(UserError, match=str(tmp_path)):
        FaceFolderDataset(tmp_path, 32, "gfpgan")
    with pytest.raises(UserError, match="missing"):
        UnpairedLQDataset(tmp_path / "missing", 32)


def _marker_face(root: Path) -> np.ndarray:
    """64x64 grey image with coloured squares at 5 asymmetric landmarks."""
    pts = np.array([[20, 24], [44, 26], [33, 36], [22, 48], [42, 47]], float)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    img = np.full((64, 64, 3), 128, np.uint8)
    for (x, y), c in zip(pts.astype(int), colours):
        img[y - 2:y + 3, x - 2:x + 3] = c
    Image.fromarray(img).save(root / "m.png")
    (root / "landmarks.json").write_text(json.dumps({"m.png": {"5": pts.tolist(), "size": 64}}))
    return pts


def _colour_at(item, xy) -> np.ndarray:
    x, y = np.round(xy.numpy()).astype(int)
    return ((item["hq"][:, y, x] + 1) * 127.5).numpy()


def test_flip_moves_landmarks_and_swaps_left_right(tmp_path):
    pts = _marker_face(tmp_path)
    ds = FaceFolderDataset(tmp_path, 32, None, augment=True, seed=0)
    items = {}
    for epoch in range(20):
        ds.set_epoch(epoch)
        item = ds[0]
        items.setdefault(item["flipped"].item() if torch.is_tensor(item["flipped"])
                         else item["flipped"], item)
    plain, flipped = items[False], items[True]
    # unflipped: points scaled 64 -> 32 with the half-pixel convention
    np.testing.assert_allclose(plain["landmarks5"].numpy(), (pts + 0.5) / 2 - 0.5, atol=1e-5)
    assert _colour_at(plain, plain["landmarks5"][0]).argmax() == 0  # red: the image-left eye
    # flipped: index 0 is again the eye on the image's left, which is the former right (green)
    lm = flipped["landmarks5"]
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]
    assert _colour_at(flipped, lm[0]).argmax() == 1
    np.testing.assert_allclose(lm[0, 0], 31 - plain["landmarks5"][1, 0], atol=1e-5)
    blue = _colour_at(flipped, lm[2])
    assert blue[2] > 200 and blue[:2].max() < 60
    # boxes are centred on the eyes and the mouth corners' midpoint
    for item in (plain, flipped):
        b, p = item["boxes"].numpy(), item["landmarks5"].numpy()
        np.testing.assert_allclose((b[:2, :2] + b[:2, 2:]) / 2, p[:2], atol=1e-4)
        np.testing.assert_allclose((b[2, :2] + b[2, 2:]) / 2, (p[3] + p[4]) / 2, atol=1e-4)


def test_boxes_from_68_points_mirror_under_flip(tmp_path):
    shutil.copy(DATA / "face128.png", tmp_path / "face128.png")
    shutil.copy(DATA / "face128_landmarks.json", tmp_path / "landmarks.json")
    ds = FaceFolderDataset(tmp_path, 64, None, augment=True, seed=0)
    seen = {}
    for epoch in range(20):
        ds.set_epoch(epoch)
        item = ds[0]
        seen.setdefault(bool(item["flipped"]), item["boxes"].numpy())
    plain, flipped = seen[False], seen[True]
    p68 = np.array(json.loads((DATA / "face128_landmarks.json").read_text())
                   ["face128.png"]["68"]) / 2 - 0.25  # 128 -> 64, half-pixel convention
    for box, group in ((plain[0], p68[36:42]), (plain[1], p68[42:48]), (plain[2], p68[48:68])):
        assert (group >= box[:2]).all() and (group <= box[2:]).all()  # each part inside its box
    assert plain[0, 0] < plain[1, 0]
    mirror = lambda b: np.array([63 - b[2], b[1], 63 - b[0], b[3]])  # noqa: E731
    np.testing.assert_allclose(flipped[0], mirror(plain[1]), atol=1e-4)
    np.testing.assert_allclose(flipped[1], mirror(plain[0]), atol=1e-4)
    np.testing.assert_allclose(flipped[2], mirror(plain[2]), atol=1e-4)


def test_unpaired_lq_dataset(tmp_path):
    for i, s in enumerate((48, 80)):
        rgb = np.random.default_rng(i).integers(0, 256, (s, s + 10, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(tmp_path / f"{i}.jpg")
    ds = UnpairedLQDataset(tmp_path, 32)
    assert len(ds) == 2
    item = ds[1]
    assert item["lq"].shape == (3, 32, 32) and -1 <= item["lq"].min() < item["lq"].max() <= 1
    assert set(item) >= {"lq", "path"}


def test_paired_test_set_without_params(tmp_path):
    for sub in ("lq", "hq"):
        (tmp_path / sub).mkdir()
    img = np.zeros((16, 16, 3), np.uint8)
    for name in ("x.png", "y.png"):
        Image.fromarray(img).save(tmp_path / "lq" / name)
    Image.fromarray(img + 255).save(tmp_path / "hq" / "x.png")
    ds = PairedTestSet(tmp_path)
    assert len(ds) == 1
    item = ds[0]
    assert item["name"] == "x.png" and item["params"] == "null"
    assert item["lq"].min() == -1 and item["hq"].max() == 1
    with pytest.raises(UserError, match="missing folder"):
        PairedTestSet(tmp_path / "lq")


def test_16bit_tif_faces_are_read_at_full_precision(tmp_path):
    import cv2

    root = tmp_path / "deep"
    root.mkdir()
    y, x = np.mgrid[0:64, 0:64]
    deep = np.stack([x * 1000 + 7, y * 1000 + 9, (x + y) * 500 + 3], axis=-1).astype(np.uint16)
    assert cv2.imwrite(str(root / "face.tif"), deep[..., ::-1])
    ds = FaceFolderDataset(root, 64, None, augment=False, landmarks=None)
    hq = (ds[0]["hq"].permute(1, 2, 0).numpy() + 1) / 2
    np.testing.assert_allclose(hq, deep / 65535.0, atol=2e-6)  # not rounded to 8 bits (error up to 0.002)
    lq = UnpairedLQDataset(root, 64)[0]["lq"]
    np.testing.assert_allclose((lq.permute(1, 2, 0).numpy() + 1) / 2, deep / 65535.0, atol=2e-6)
