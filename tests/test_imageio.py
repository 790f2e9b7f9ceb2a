"""pipeline/imageio.py: decoding every photo kind the pipeline accepts, atomic writing."""

import os

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from mmrface.errors import UserError
from mmrface.pipeline.imageio import (
    _orient,
    is_same_file,
    list_images,
    read_image,
    write_image,
)


def _stripes(h=20, w=40):
    """Top rows red, left columns green: any flip or turn moves them somewhere testable."""
    a = np.full((h, w, 3), 90, np.uint8)
    a[:4, :, 0] = 250
    a[:, :6, 1] = 250
    return a


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display = stored turned 90 degrees clockwise
    Image.fromarray(_stripes()).save(tmp_path / "sideways.jpg", exif=exif, quality=98)
    img = read_image(tmp_path / "sideways.jpg")
    assert img.rgb.shape == (40, 20, 3)  # width and height swapped
    # turned clockwise: the red top rows are now the right-hand columns, green left cols the top
    assert img.rgb[:, -3:, 0].mean() > 200 and img.rgb[:, :10, 0].mean() < 140
    assert img.rgb[:4, :, 1].mean() > 200 and img.rgb[-10:, :, 1].mean() < 140
    assert img.bit_depth == 8 and img.alpha is None


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_for_16bit_path_matches_pillow(orientation):
    a = np.random.default_rng(orientation).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(im))
    np.testing.assert_array_equal(_orient(a, orientation), expected)


def test_rgba_alpha_kept_and_written_back(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 255, (16, 24, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(img.rgb, rgba[:, :, :3])
    np.testing.assert_array_equal(img.alpha, rgba[:, :, 3])
    write_image(tmp_path / "b.png", img.rgb, img.alpha)
    back = read_image(tmp_path / "b.png")
    np.testing.assert_array_equal(back.rgb, rgba[:, :, :3])
    np.testing.assert_array_equal(back.alpha, rgba[:, :, 3])
    write_image(tmp_path / "c.jpg", img.rgb, img.alpha)  # JPEG cannot hold alpha: dropped
    assert read_image(tmp_path / "c.jpg").alpha is None


def test_16bit_png_read_as_8bit_and_written_as_16bit(tmp_path):
    rgb16 = np.random.default_rng(1).integers(0, 65535, (12, 10, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), rgb16[:, :, ::-1])
    img = read_image(tmp_path / "deep.png")
    assert img.bit_depth == 16 and img.rgb.dtype == np.uint8
    np.testing.assert_array_equal(img.rgb, np.round(rgb16 / 257.0).astype(np.uint8))
    write_image(tmp_path / "out.png", img.rgb, bit_depth=img.bit_depth)
    raw = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw[:, :, ::-1], img.rgb.astype(np.uint16) * 257)


def test_16bit_grey_png(tmp_path):
    grey16 = np.arange(0, 65535, 65535 // 99, dtype=np.uint16)[:100].reshape(10, 10)
    cv2.imwrite(str(tmp_path / "g16.png"), grey16)
    img = read_image(tmp_path / "g16.png")
    assert img.bit_depth == 16 and img.rgb.shape == (10, 10, 3)
    np.testing.assert_array_equal(img.rgb[:, :, 0], np.round(grey16 / 257.0).astype(np.uint8))
    assert (img.rgb[:, :, 0] == img.rgb[:, :, 2]).all()


@pytest.mark.parametrize("ext", ["png", "jpg", "bmp", "tif", "webp"])
def test_grey_becomes_rgb(tmp_path, ext):
    grey = np.tile(np.arange(0, 240, 15, dtype=np.uint8), (8, 1))
    Image.fromarray(grey, "L").save(tmp_path / f"grey.{ext}", **({"quality": 100} if ext in ("jpg", "webp") else {}))
    img = read_image(tmp_path / f"grey.{ext}")
    assert img.rgb.shape == (8, 16, 3) and img.alpha is None
    assert np.abs(img.rgb[:, :, 1].astype(int) - grey).max() <= 3
    assert (img.rgb[:, :, 0] == img.rgb[:, :, 1]).all() and (img.rgb[:, :, 1] == img.rgb[:, :, 2]).all()


def test_unicode_path_round_trip(tmp_path):
    rgb = _stripes()
    path = tmp_path / "фото 照片" / "лицо_é.png"
    write_image(path, rgb)  # creates the parent folder
    np.testing.assert_array_equal(read_image(path).rgb, rgb)
    assert list_images(path.parent) == [path]


@pytest.mark.parametrize(
    "name, content",
    [("broken.jpg", None), ("notes.png", b"just some text, not a picture\n"), ("empty.webp", b"")],
)
def test_bad_files_raise_one_line_user_error(tmp_path, name, content):
    path = tmp_path / name
    if content is None:  # a real JPEG cut in half
        Image.fromarray(_stripes(64, 64)).save(tmp_path / "full.jpg")
        content = (tmp_path / "full.jpg").read_bytes()[:300]
    path.write_bytes(content)
    with pytest.raises(UserError) as exc:
        read_image(path)
    message = str(exc.value)
    assert name in message and "\n" not in message


def test_missing_path_and_folder_raise_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(UserError, match="folder"):
        read_image(tmp_path)
    with pytest.raises(UserError, match="no such file or folder"):
        list_images(tmp_path / "nowhere")


def test_write_is_atomic_and_checks_extension(tmp_path):
    rgb = _stripes()
    for ext in ("png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff"):
        write_image(tmp_path / f"x.{ext}", rgb)
        assert read_image(tmp_path / f"x.{ext}").rgb.shape == rgb.shape
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp files left
    with pytest.raises(UserError, match="extension"):
        write_image(tmp_path / "x.gif", rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "x.png").rgb, rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "x.bmp").rgb, rgb)


def test_list_images_sorted_filtered_recursive(tmp_path):
    rgb = _stripes()
    for rel in ("b.png", "a.JPG", "sub/c.webp", ".hidden.png"):
        write_image(tmp_path / rel, rgb)
    (tmp_path / "readme.txt").write_text("not an image")
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png"]
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path, recursive=True)] == [
        "a.JPG", "b.png", "sub/c.webp"
    ]


def test_is_same_file(tmp_path):
    write_image(tmp_path / "a.png", _stripes())
    assert is_same_file(tmp_path / "a.png", tmp_path / "sub" / ".." / "a.png")
    assert not is_same_file(tmp_path / "a.png", tmp_path / "b.png")
    os.symlink(tmp_path / "a.png", tmp_path / "link.png")
    assert is_same_file(tmp_path / "link.png", tmp_path / "a.png")


# -- one module for every reader and writer (issue 14) ------------------------------------------------
def _deep_gradient(h=24, w=32) -> np.ndarray:
    """16-bit RGB whose values need all 16 bits (no value is a multiple of 257)."""
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 1000 + 3, y * 2000 + 5, (x + y) * 700 + 11], axis=-1) % 65535
    rgb[rgb % 257 == 0] += 1
    return rgb.astype(np.uint16)


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_16bit_files_keep_full_precision_through_read_and_write(tmp_path, ext):
    from mmrface.pipeline.imageio import to_float

    deep = _deep_gradient()
    cv2.imwrite(str(tmp_path / f"deep.{ext}"), deep[:, :, ::-1])
    img = read_image(tmp_path / f"deep.{ext}")
    assert img.bit_depth == 16 and img.pixels.dtype == np.uint16
    np.testing.assert_array_equal(img.pixels, deep)  # the file's own values
    np.testing.assert_array_equal(img.rgb, np.round(deep / 257.0).astype(np.uint8))  # 8-bit view, rounded
    np.testing.assert_allclose(to_float(img.pixels), deep / 65535.0, atol=1e-6)
    for out_ext in ("png", "tif", "tiff"):
        write_image(tmp_path / f"out.{out_ext}", img.pixels)
        back = cv2.imread(str(tmp_path / f"out.{out_ext}"), cv2.IMREAD_UNCHANGED)
        assert back.dtype == np.uint16
        np.testing.assert_array_equal(back[:, :, ::-1], deep)
    write_image(tmp_path / "out.jpg", img.pixels, quality=100)  # JPEG holds 8 bits: rounded down to them
    jpeg = read_image(tmp_path / "out.jpg")
    assert jpeg.bit_depth == 8 and np.abs(jpeg.rgb.astype(int) - img.rgb).mean() < 2


def test_decode_bytes_is_read_image_without_a_file(tmp_path):
    from mmrface.pipeline.imageio import decode, probe

    deep = _deep_gradient()
    ok, buf = cv2.imencode(".png", deep[:, :, ::-1])
    data = buf.tobytes()
    (tmp_path / "d.png").write_bytes(data)
    from_bytes, from_file = decode(data, "d.png"), read_image(tmp_path / "d.png")
    np.testing.assert_array_equal(from_bytes.pixels, from_file.pixels)
    assert from_bytes.bit_depth == 16 and from_bytes.path == "d.png"
    header = probe(data, "d.png")
    assert (header.width, header.height) == (32, 24)
    # the header alone: a file cut after its header still gives its size, and decoding it fails
    big = np.zeros((3000, 4000, 3), np.uint8)
    big[::7, ::5] = 255
    ok, buf = cv2.imencode(".png", big)
    cut = buf.tobytes()[:2000]
    assert (probe(cut, "cut.png").width, probe(cut, "cut.png").height) == (4000, 3000)
    with pytest.raises(UserError, match="cut.png"):
        decode(cut, "cut.png")


def test_dangling_symlink_is_listed_and_named(tmp_path):
    from mmrface.pipeline.imageio import readable_images

    write_image(tmp_path / "a.png", _stripes())
    os.symlink(tmp_path / "gone.png", tmp_path / "link.png")
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "link.png"]
    with pytest.raises(UserError, match=r"link\.png.*broken"):
        read_image(tmp_path / "link.png")
    with pytest.warns(UserWarning, match=r"link\.png"):
        assert [p.name for p in readable_images(tmp_path)] == ["a.png"]


def test_one_extension_set_for_every_reader(tmp_path):
    from mmrface.pipeline.imageio import readable_images

    for ext in ("png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff"):
        write_image(tmp_path / f"x_{ext}.{ext}", _stripes())
    assert len(list_images(tmp_path)) == len(readable_images(tmp_path)) == 7
