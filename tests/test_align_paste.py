"""pipeline/align.py and pipeline/paste.py: template fit, crops, exact round trip, no seams."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from mmrface.pipeline.align import (
    GREY,
    align_faces,
    compose,
    estimate_affine,
    ffhq_template,
    inverse_affine,
    transform_points,
)
from mmrface.pipeline.detect import detect_faces
from mmrface.pipeline.imageio import read_image
from mmrface.pipeline.paste import FACE_ELLIPSE, face_mask, feather_mask, paste_faces, upscale_image

PHOTOS = Path(__file__).resolve().parents[1] / "assets" / "photos"


@pytest.fixture(scope="module")
def astronaut():
    rgb = read_image(PHOTOS / "astronaut.png").rgb
    return rgb, detect_faces(rgb, "mtcnn")[0].landmarks


def _similarity(scale, angle_deg, tx, ty):
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]])


def _crop_coords(shape, affine):
    """Crop coordinates (H x W x 2) of every photo pixel under `affine`."""
    ys, xs = np.mgrid[: shape[0], : shape[1]]
    pts = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    return transform_points(pts, affine).reshape(shape[0], shape[1], 2)


def test_template_scales_with_size():
    np.testing.assert_allclose(ffhq_template(512)[0], [192.98, 239.95])
    np.testing.assert_allclose(ffhq_template(256), ffhq_template(512) / 2)


@pytest.mark.parametrize("size", [64, 512])
def test_estimate_affine_recovers_a_known_similarity(size):
    true = _similarity(0.37, 23.0, 11.0, -4.0)  # photo -> crop
    landmarks = transform_points(ffhq_template(size), inverse_affine(true))
    affine = estimate_affine(landmarks, size)
    np.testing.assert_allclose(affine, true, atol=1e-9)
    np.testing.assert_allclose(transform_points(landmarks, affine), ffhq_template(size), atol=1e-9)


def test_estimate_affine_is_least_squares_similarity():
    rng = np.random.default_rng(0)
    landmarks = ffhq_template(512) * 0.5 + 30 + rng.normal(0, 3, (5, 2))
    affine = estimate_affine(landmarks, 512)
    a = affine[:, :2]
    np.testing.assert_allclose(a[0, 0], a[1, 1])  # a similarity: rotation and uniform scale
    np.testing.assert_allclose(a[0, 1], -a[1, 0])
    best = np.sum((transform_points(landmarks, affine) - ffhq_template(512)) ** 2)
    for _ in range(50):  # any nearby similarity fits worse
        p = rng.normal(0, 0.01, 4)
        other = affine + np.array([[p[0], -p[1], p[2]], [p[1], p[0], p[3]]])
        assert np.sum((transform_points(landmarks, other) - ffhq_template(512)) ** 2) >= best


def test_inverse_and_compose():
    m = _similarity(1.7, -40, 5, 9)
    np.testing.assert_allclose(compose(m, inverse_affine(m)), [[1, 0, 0], [0, 1, 0]], atol=1e-12)


def test_aligned_crop_puts_the_eyes_on_the_template(astronaut):
    rgb, landmarks = astronaut
    crops, affines = align_faces(rgb, [landmarks], 512)
    assert crops.shape == (1, 512, 512, 3) and crops.dtype == np.uint8 and affines.shape == (1, 2, 3)
    found = detect_faces(crops[0], "mtcnn")
    assert len(found) == 1
    # detected again on the crop, the eyes sit on the template's eyes (4 % of the crop = 20 px
    # would be a visible misalignment; the residual of the 5-point fit plus detector noise is less)
    np.testing.assert_allclose(found[0].landmarks[:2], ffhq_template(512)[:2], atol=0.02 * 512)
    # and the landmark transform agrees with that detection
    np.testing.assert_allclose(transform_points(landmarks, affines[0])[:2], found[0].landmarks[:2], atol=6)


def test_border_modes(astronaut):
    rgb, landmarks = astronaut
    edge = np.ascontiguousarray(rgb[60:, 180:])  # the face now touches the top and left edges
    lm = landmarks - [180, 60]
    constant, affine = align_faces(edge, [lm], 128, border="constant")
    outside = _crop_coords((128, 128), inverse_affine(affine[0]))
    out_mask = (outside[..., 0] < -2.5) | (outside[..., 1] < -2.5)  # beyond the bicubic taps
    assert out_mask.sum() > 500
    assert (constant[0][out_mask] == GREY).all()
    soft, _ = align_faces(edge, [lm], 128, border="soft")
    reflect, _ = align_faces(edge, [lm], 128, border="reflect")
    inside = (outside[..., 0] > 2.5) & (outside[..., 1] > 2.5)
    # inside the photo all modes agree; outside, soft is the reflection smoothed towards flat
    np.testing.assert_array_equal(soft[0][inside], constant[0][inside])
    np.testing.assert_array_equal(reflect[0][inside], constant[0][inside])
    lap = lambda img: np.abs(cv2.Laplacian(img.astype(np.float32), cv2.CV_32F))[out_mask].mean()
    assert lap(soft[0]) < 0.5 * lap(reflect[0])
    with pytest.raises(ValueError):
        align_faces(edge, [lm], 128, border="wrap")


def test_paste_of_unchanged_crop_is_identity(astronaut):
    rgb, landmarks = astronaut
    crops, affines = align_faces(rgb, [landmarks], 512)
    out = paste_faces(rgb, crops, affines)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    coords = _crop_coords(rgb.shape, affines[0])
    far = (coords < -1).any(-1) | (coords > 512).any(-1)
    assert far.mean() > 0.5
    np.testing.assert_array_equal(out[far], rgb[far])  # bit-identical away from the face
    face = ((coords > 100) & (coords < 412)).all(-1)  # the face itself, where the mask is 1
    err = np.abs(out[face].astype(int) - rgb[face])
    assert err.mean() < 1.5 and np.percentile(err, 99) < 8  # interpolation there and back


def test_paste_upscale(astronaut):
    rgb, landmarks = astronaut
    crops, affines = align_faces(rgb, [landmarks], 512)
    out = paste_faces(rgb, crops, affines, upscale=2)
    assert out.shape == (1024, 1024, 3)
    big = upscale_image(rgb, 2)
    coords = _crop_coords(rgb.shape, affines[0])
    far = cv2.resize(((coords < -2) | (coords > 514)).any(-1).astype(np.uint8), (1024, 1024),
                     interpolation=cv2.INTER_NEAREST).astype(bool)
    np.testing.assert_array_equal(out[far], big[far])
    face = cv2.resize(((coords > 100) & (coords < 412)).all(-1).astype(np.uint8), (1024, 1024),
                      interpolation=cv2.INTER_NEAREST).astype(bool)
    assert np.abs(out[face].astype(int) - big[face]).mean() < 3.0
    assert paste_faces(rgb, crops, affines, upscale=3).shape == (1536, 1536, 3)


def test_paste_restored_crop_of_another_size(astronaut):
    rgb, landmarks = astronaut
    crops, affines = align_faces(rgb, [landmarks], 256)
    big_crop = cv2.resize(crops[0], (512, 512), interpolation=cv2.INTER_CUBIC)[None]
    a = paste_faces(rgb, crops, affines).astype(int)
    b = paste_faces(rgb, big_crop, affines, aligned_size=256).astype(int)
    assert np.abs(a - b).mean() < 0.5


def _gradient(img):
    """Gradient magnitude (H x W) of an image, channels averaged."""
    gy, gx = np.gradient(img.astype(np.float32).mean(-1) if img.ndim == 3 else img.astype(np.float32))
    return np.hypot(gx, gy)


def test_no_seam_at_the_mask_border(astronaut):
    """Paste a crop brightened by 40: along the mask's border the photo must not gain an edge.

    The change the paste makes is isolated by comparing with the paste of the unchanged crop
    (which carries the same interpolation round trip); pixels near saturation, where +40 clips
    and the change follows the texture, are left out. A hard-edged paste is the control: it
    shows a step of 40 levels, a gradient of about 20 per pixel, where the feathered one
    spreads the step over the feather."""
    rgb, landmarks = astronaut
    crops, affines = align_faces(rgb, [landmarks], 512)
    brighter = np.clip(crops.astype(int) + 40, 0, 255).astype(np.uint8)
    same = paste_faces(rgb, crops, affines)
    out = paste_faces(rgb, brighter, affines)
    coords = _crop_coords(rgb.shape, affines[0])
    band = ((coords > -2) & (coords < 514)).all(-1) & ~((coords > 60) & (coords < 452)).all(-1)
    unclipped = cv2.dilate((rgb.max(-1) > 205).astype(np.uint8), np.ones((5, 5), np.uint8)) == 0
    band &= unclipped
    assert band.sum() > 5000
    change = out.astype(np.float32) - same
    assert change[band].max() > 35  # the +40 does reach the band's inner side
    assert _gradient(change)[band].max() < 8.0  # a 40-level step spread over the feather: ~4.5
    # and the photo's own gradient along the border is not raised by more than a small margin
    assert _gradient(out)[band].mean() < _gradient(rgb)[band].mean() + 1.0
    # control: a hard-edged square paste of the same change
    hard = same.astype(np.float32)
    inside = ((coords >= 0) & (coords <= 511)).all(-1)
    hard[inside] += 40
    assert _gradient(hard - same)[band].max() > 15.0


def test_feather_mask_is_zero_at_the_edge_and_one_inside():
    m = feather_mask(512)
    assert m[0].max() == 0 and m[:, 0].max() == 0 and m[-1].max() == 0
    assert m[100:412, 100:412].min() == 1.0
    assert not m.flags.writeable


def test_overlapping_faces(astronaut):
    rgb, landmarks = astronaut
    second = landmarks * 0.9 + [30, 25]  # a second face overlapping the first
    crops, affines = align_faces(rgb, [landmarks, second], 256)
    coords = [_crop_coords(rgb.shape, a) for a in affines]
    inner = [((c > 70) & (c < 186)).all(-1) for c in coords]
    both = inner[0] & inner[1]
    assert both.sum() > 1000
    # unchanged crops composited in turn: no darkening where they overlap
    out = paste_faces(rgb, crops, affines)
    d = out[both].astype(int) - rgb[both]
    assert abs(d.mean()) < 0.5 and np.abs(d).mean() < 2.5
    # flat crops: where the later one's mask is 1 it wins exactly; the earlier one shows elsewhere
    flat = np.stack([np.full((256, 256, 3), 200, np.uint8), np.full((256, 256, 3), 50, np.uint8)])
    out = paste_faces(rgb, flat, affines, mask="square")
    assert (out[inner[1]] == 50).all()
    assert (out[inner[0] & ~((coords[1] > -2) & (coords[1] < 258)).all(-1)] == 200).all()


def test_color_match(astronaut):
    rgb, landmarks = astronaut
    crops, affines = align_faces(rgb, [landmarks], 256)
    tinted = np.clip(crops.astype(int) + [40, -20, 0], 0, 255).astype(np.uint8)
    face = ((_crop_coords(rgb.shape, affines[0]) > 70) & (_crop_coords(rgb.shape, affines[0]) < 186)).all(-1)
    shift = lambda out: (out[face].astype(float) - rgb[face]).mean(0)
    assert shift(paste_faces(rgb, tinted, affines))[0] > 30
    assert np.abs(shift(paste_faces(rgb, tinted, affines, color_match=True))).max() < 4


def test_background_is_used(astronaut):
    rgb, landmarks = astronaut
    crops, affines = align_faces(rgb, [landmarks], 256)
    bg = np.full((1024, 1024, 3), 7, np.uint8)
    out = paste_faces(rgb, crops, affines, upscale=2, background=bg)
    assert out.shape == (1024, 1024, 3) and out[0, 0].tolist() == [7, 7, 7]
    assert out[230, 445].mean() > 50  # the face (cheek) is pasted onto it
    np.testing.assert_array_equal(paste_faces(rgb, crops[:0], affines[:0]), rgb)


@pytest.mark.parametrize("color_match", [False, True])
def test_strip_blending_equals_one_pass(astronaut, monkeypatch, color_match):
    """Blending in row strips (bounded memory) gives the same pixels as one big region."""
    from mmrface.pipeline import paste

    rgb, landmarks = astronaut
    crops, affines = align_faces(rgb, [landmarks], 256)
    tinted = np.clip(crops.astype(int) + [30, -10, 5], 0, 255).astype(np.uint8)
    strips = paste_faces(rgb, tinted, affines, upscale=2, color_match=color_match)
    monkeypatch.setattr(paste, "STRIP_ROWS", 100_000)
    whole = paste_faces(rgb, tinted, affines, upscale=2, color_match=color_match)
    diff = np.abs(strips.astype(int) - whole.astype(int))
    assert diff.max() <= (1 if color_match else 0)  # colour stats summed per strip: float rounding only


def test_face_mask_covers_the_face_and_leaves_the_crop_background_alone(astronaut):
    """The default paste changes only the face region: the restored crop's own background (the
    corners and sides of the aligned square) never replaces the photo's, so no box shows."""
    m = face_mask(256)
    assert m[0].max() == 0 and m[:, 0].max() == 0 and m[-1].max() == 0 and not m.flags.writeable
    cx, cy, ax, ay = FACE_ELLIPSE
    assert m[int(cy * 256), int(cx * 256)] == 1.0 and m[100:200, 80:176].min() > 0.99  # eyes to mouth
    assert m[:40, :40].max() == 0 and m[:40, -40:].max() == 0  # the crop's top corners: background
    rgb, landmarks = astronaut
    crops, affines = align_faces(rgb, [landmarks], 256)
    grey = np.full_like(crops, 128)  # a "restoration" that differs everywhere
    coords = _crop_coords(rgb.shape, affines[0])
    u = (coords + 0.5) / 256
    outside = (((u[..., 0] - cx) / ax) ** 2 + ((u[..., 1] - cy) / ay) ** 2 > 2.0) & ((coords > 0) & (coords < 255)).all(-1)
    centre = ((u > 0.4) & (u < 0.6)).all(-1)
    face = paste_faces(rgb, grey, affines)
    square = paste_faces(rgb, grey, affines, mask="square")
    assert outside.sum() > 3000
    assert np.array_equal(face[outside], rgb[outside])  # inside the square, outside the face: untouched
    assert (face[centre] == 128).all() and (square[centre] == 128).all()
    assert np.abs(square[outside].astype(int) - rgb[outside]).mean() > 8  # the old box (part of it feathered)
