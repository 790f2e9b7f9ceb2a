"""End-to-end `mmrface restore` on real photos with a random-weight tiny model."""

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from mmrface.cli import main
from mmrface.config import load_config
from mmrface.errors import UserError
from mmrface.models import build_model
from mmrface.pipeline.imageio import read_image
from mmrface.pipeline.restorer import Restorer
from mmrface.weights import save_weights

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "assets" / "photos" / "astronaut.png"


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    cfg = load_config("tiny")
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_weights(path, build_model(cfg.model).state_dict(), cfg.to_dict())
    return path


def degraded_astronaut(scale: int = 4, quality: int = 40) -> np.ndarray:
    rgb = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (w // scale, h // scale), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    small = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return np.ascontiguousarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC))


def test_restorer_finds_the_face_and_upscales(tiny_weights):
    restorer = Restorer(tiny_weights, device="cpu", upscale=2)
    lq = degraded_astronaut()
    result = restorer.restore(lq)
    assert len(result.faces) == 1
    assert result.image.shape == (lq.shape[0] * 2, lq.shape[1] * 2, 3)
    face = result.faces[0]
    assert face.crop_lq.shape == face.crop_restored.shape == (64, 64, 3)
    # far from the face the output is the Lanczos-upscaled input, untouched by the paste
    corner_in = cv2.resize(lq, None, fx=2, fy=2, interpolation=cv2.INTER_LANCZOS4)[-100:, -100:]
    assert np.array_equal(result.image[-100:, -100:], corner_in)
    # the face region did change
    x0, y0, x1, y1 = (face.box * 2).astype(int)
    assert np.abs(result.image[y0:y1, x0:x1].astype(int) - cv2.resize(lq, None, fx=2, fy=2)[y0:y1, x0:x1]).mean() > 2


def test_fidelity_changes_the_output(tiny_weights):
    lq = degraded_astronaut()
    restorer = Restorer(tiny_weights, device="cpu", upscale=1)
    a = restorer.restore(lq, fidelity=0.0).faces[0].crop_restored
    b = restorer.restore(lq, fidelity=1.0).faces[0].crop_restored
    assert np.abs(a.astype(int) - b.astype(int)).max() > 0


def test_cli_batch_with_bad_inputs(tmp_path, tiny_weights, capsys):
    src = tmp_path / "in ü"  # unicode path
    src.mkdir()
    Image.fromarray(degraded_astronaut()).save(src / "astro.jpg", quality=90)
    Image.fromarray(np.full((80, 120, 3), 200, np.uint8)).save(src / "blank.png")  # no face
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (src / "notes.txt").write_text("not an image")
    shutil.copy(src / "notes.txt", src / "fake.jpg")
    out = tmp_path / "out"
    code = main(["restore", "-i", str(src), "-o", str(out), "-s", "2", "--weights", str(tiny_weights),
                 "--compare", "--save-faces", "-q", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1  # some inputs failed
    assert "broken.png" in err and "fake.jpg" in err and "Traceback" not in err
    assert (out / "astro.jpg").is_file() and (out / "blank.png").is_file()  # the no-face photo is still written
    assert "no face found in: blank.png" in err
    assert read_image(out / "astro.jpg").rgb.shape == (1024, 1024, 3)
    assert (out / "compare" / "astro.jpg").is_file()
    assert sorted(p.name for p in (out / "faces").iterdir()) == ["astro_00_lq.png", "astro_00_restored.png"]
    # a second run resumes: everything written is skipped, nothing overwritten
    before = (out / "astro.jpg").stat().st_mtime_ns
    main(["restore", "-i", str(src), "-o", str(out), "--weights", str(tiny_weights), "-q", "--device", "cpu"])
    assert "2 skipped" in capsys.readouterr().err
    assert (out / "astro.jpg").stat().st_mtime_ns == before


def test_cli_never_overwrites_the_input(tmp_path, tiny_weights, capsys):
    photo = tmp_path / "astro.png"
    Image.fromarray(degraded_astronaut()).save(photo)
    data = photo.read_bytes()
    code = main(["restore", "-i", str(photo), "-o", str(tmp_path), "--weights", str(tiny_weights), "--overwrite",
                 "--device", "cpu"])
    assert code == 1
    assert "overwrite the input" in capsys.readouterr().err
    assert photo.read_bytes() == data


def test_cli_aligned_input_and_errors(tmp_path, tiny_weights, capsys):
    face = tmp_path / "face.png"
    shutil.copy(ROOT / "tests" / "data" / "face128.png", face)
    out = tmp_path / "out"
    assert main(["restore", "-i", str(face), "-o", str(out), "--aligned", "-s", "1", "--weights", str(tiny_weights),
                 "--ext", "webp", "--suffix", "_r", "--device", "cpu"]) == 0
    assert read_image(out / "face_r.webp").rgb.shape == (128, 128, 3)
    capsys.readouterr()
    assert main(["restore", "-i", str(tmp_path / "missing"), "--weights", str(tiny_weights)]) == 2
    assert capsys.readouterr().err.strip() == f"mmrface: error: input not found: {tmp_path / 'missing'}"
    assert main(["restore", "-i", str(face), "--weights", str(tiny_weights), "-w", "3"]) == 2
    assert main(["restore", "-i", str(face), "--weights", str(tmp_path / "nope.safetensors")]) == 2


def test_bundled_weights_restore_better_than_the_input():
    """The registry's default model loads (sha256 verified) and improves its degraded input: far
    lower LPIPS and a higher PSNR at its default w = 1 (recorded in the file). It was last trained
    at w = 1 only: at w = 0.5 LPIPS still drops but PSNR falls (the bundled weights never saw this
    face; README "Results")."""
    from mmrface.data.degrade import Degradation
    from mmrface.metrics import get_metric
    from mmrface.metrics.psnr_ssim import psnr

    hq = np.asarray(Image.open(ROOT / "tests" / "data" / "face128.png").convert("RGB"))
    lq, _ = Degradation.from_config("sr8")(hq, np.random.default_rng(0))
    restorer = Restorer("mmrface-small", device="cpu", upscale=1)
    assert restorer.fidelity == 1.0  # the file's default_fidelity: w = 1 is its best setting
    lpips = get_metric("lpips")
    # measured: LPIPS 0.671 -> 0.153 (w 1) / 0.228 (w 0.5); PSNR 19.03 -> 19.91 / 16.08 dB
    for w, lpips_drop, psnr_gain in ((None, 0.4, 0.6), (0.5, 0.35, -4.0)):
        out = restorer.restore(lq, aligned=True, fidelity=w).image
        assert out.shape == hq.shape
        assert lpips(out, hq) < lpips(lq, hq) - lpips_drop
        assert psnr(out, hq) > psnr(lq, hq) + psnr_gain


def test_per_call_upscale_overrides_the_default(tiny_weights):
    restorer = Restorer(tiny_weights, device="cpu", upscale=2)
    lq = degraded_astronaut()
    assert restorer.restore(lq, upscale=1).image.shape == lq.shape
    assert restorer.restore(lq).image.shape == (1024, 1024, 3)
    with pytest.raises(UserError, match="upscale must be"):
        restorer.restore(lq, upscale=20)


class _Identity:
    """A 'network' that returns its input: any change in the output is the pipeline's own."""

    size = 64

    def __call__(self, x, w):
        return x


def test_a_face_larger_than_the_model_is_never_downgraded(tmp_path, capsys, tiny_weights):
    rgb = np.ascontiguousarray(np.asarray(Image.open(ASTRONAUT).convert("RGB")))
    plain = cv2.resize(rgb, None, fx=2, fy=2, interpolation=cv2.INTER_LANCZOS4)
    modes = {}
    for policy in ("blend", "keep", "restore"):
        result = Restorer(network=_Identity(), device="cpu", upscale=2, large_faces=policy).restore(rgb)
        face = result.faces[0]
        assert face.face_px > 150  # the astronaut's face spans ~171 px, the model makes 64
        x0, y0, x1, y1 = (face.box * 2).astype(int)
        modes[policy] = (face.mode, face.restored, np.abs(result.image[y0:y1, x0:x1].astype(int)
                                                         - plain[y0:y1, x0:x1]).mean())
    # keep: the photo itself; blend: the photo's own detail is kept (the model changed nothing);
    # restore: the 64-px crop stretched over a 342-px face on the output, clearly blurred
    assert modes["keep"][:2] == ("kept", False) and modes["keep"][2] == 0
    assert modes["blend"][:2] == ("blended", True) and modes["blend"][2] < 1.0
    assert modes["restore"][:2] == ("restored", True) and modes["restore"][2] > 4 * max(modes["blend"][2], 0.5)
    # a face the model covers at full resolution is restored as before
    small = cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_AREA)
    assert Restorer(network=_Identity(), device="cpu").restore(small, aligned=True).faces[0].mode == "restored"
    # the CLI says per face what it did
    photo = tmp_path / "a.png"
    shutil.copy(ASTRONAUT, photo)
    assert main(["restore", "-i", str(photo), "-o", str(tmp_path / "o"), "--weights", str(tiny_weights),
                 "--device", "cpu", "--large-faces", "keep"]) == 0
    err = capsys.readouterr().err
    assert "a.png: face 1 spans 171 px, more than the 64-px model: kept as it is" in err
    assert "0 face(s) restored, 1 kept as they were" in err

def _deep_astronaut() -> np.ndarray:
    """The degraded astronaut as 16-bit RGB whose low byte carries detail 8 bits cannot hold."""
    low = np.random.default_rng(3).integers(0, 200, (512, 512, 3))
    return (degraded_astronaut().astype(np.int64) * 257 - 100 + low).clip(0, 65535).astype(np.uint16)


@pytest.mark.parametrize("ext,scale", [("tif", "1"), ("png", "2")])
def test_cli_16bit_in_gives_16bit_out_at_full_precision(tmp_path, tiny_weights, ext, scale):
    deep = _deep_astronaut()
    src = tmp_path / "deep.tif"
    assert cv2.imwrite(str(src), deep[:, :, ::-1])
    out = tmp_path / "out"
    assert main(["restore", "-i", str(src), "-o", str(out), "-s", scale, "--ext", ext, "--weights",
                 str(tiny_weights), "-q", "--device", "cpu"]) == 0
    got = cv2.imread(str(out / f"deep.{ext}"), cv2.IMREAD_UNCHANGED)
    assert got.dtype == np.uint16, f"{ext} output is {got.dtype}"
    got = got[:, :, ::-1]
    background = deep if scale == "1" else cv2.resize(deep, None, fx=2, fy=2, interpolation=cv2.INTER_LANCZOS4)
    assert got.shape == background.shape
    np.testing.assert_array_equal(got[-100:, -100:], background[-100:, -100:])  # untouched: every bit kept
    k = int(scale)
    face = got[80 * k:160 * k, 190 * k:250 * k].astype(int)  # the face region was restored
    assert np.abs(face - background[80 * k:160 * k, 190 * k:250 * k]).mean() > 2 * 257


def test_cli_names_a_dangling_symlink(tmp_path, tiny_weights, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.full((80, 120, 3), 200, np.uint8)).save(src / "blank.png")
    (src / "moved.jpg").symlink_to(tmp_path / "elsewhere" / "moved.jpg")
    code = main(["restore", "-i", str(src), "-o", str(tmp_path / "out"), "--weights", str(tiny_weights), "-q",
                 "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1
    assert "moved.jpg" in err and "broken" in err and "2 file(s)" in err
    assert (tmp_path / "out" / "blank.png").is_file()
