"""Align faces to the FFHQ 5-point template: one similarity transform per face.

    crops, affines = align_faces(rgb, faces, size=512)   # N x S x S x 3 uint8, N x 2 x 3
    points_in_crop = transform_points(points, affines[k])

`affines[k]` maps image pixel coordinates (x, y) to crop pixel coordinates; `inverse_affine`
gives the way back (paste.py uses it). Pixel coordinates are pixel centres (OpenCV convention).

Border: where the crop reaches past the photo's edge, `border` decides what fills it:
- "soft" (default): mirror the photo at its edge, then blur the mirrored part and fade it to the
  photo's mean colour with distance from the edge. This is how FFHQ's own crops look past the
  photo's edge (the training distribution), there is no hard edge for a network to sharpen into
  a line next to the photo's border, and unlike a plain mirror it shows no doubled eyes or mouth.
- "reflect": plain mirror (OpenCV BORDER_REFLECT_101): continuous, but a face cut by the edge
  gets a mirrored twin.
- "constant": flat grey (135, 133, 132), as GFPGAN does: a hard edge at the photo's border.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

# FFHQ landmarks at 512 px: eye on the image's left, other eye, nose tip, mouth corners (L, R)
FFHQ_TEMPLATE_512 = np.array(
    [[192.98, 239.95], [318.90, 240.19], [256.63, 314.02], [201.26, 371.41], [313.09, 371.15]],
    dtype=np.float64,
)
GREY = (135, 133, 132)
_BORDERS = {"soft": cv2.BORDER_REFLECT_101, "reflect": cv2.BORDER_REFLECT_101, "constant": cv2.BORDER_CONSTANT}


def ffhq_template(size: int = 512) -> np.ndarray:
    """The 5 template points (5 x 2) for a `size` x `size` crop."""
    return FFHQ_TEMPLATE_512 * (size / 512.0)


def estimate_affine(landmarks: np.ndarray, size: int = 512) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift) taking the 5 landmarks to the
    template: closed form (Umeyama, written with complex numbers), deterministic. -> 2 x 3."""
    src = np.asarray(landmarks, np.float64).reshape(-1, 2)
    dst = ffhq_template(size)[: len(src)]
    ms, md = src.mean(0), dst.mean(0)
    zs = (src - ms) @ np.array([1, 1j])  # centred points as complex numbers
    zd = (dst - md) @ np.array([1, 1j])
    denom = float(np.sum(np.abs(zs) ** 2))
    if denom < 1e-12:
        raise ValueError("degenerate landmarks: all points coincide")
    c = np.sum(np.conj(zs) * zd) / denom  # scale * exp(i * angle)
    a = np.array([[c.real, -c.imag], [c.imag, c.real]])
    return np.concatenate([a, (md - a @ ms)[:, None]], axis=1)


def inverse_affine(affine: np.ndarray) -> np.ndarray:
    """Inverse of a 2 x 3 affine matrix."""
    a = np.asarray(affine, np.float64)
    inv = np.linalg.inv(a[:, :2])
    return np.concatenate([inv, (-inv @ a[:, 2])[:, None]], axis=1)


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2 x 3 affine of `outer(inner(p))`."""
    o, i = np.asarray(outer, np.float64), np.asarray(inner, np.float64)
    return np.concatenate([o[:, :2] @ i[:, :2], (o[:, :2] @ i[:, 2] + o[:, 2])[:, None]], axis=1)


def transform_points(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Map points (N x 2) through a 2 x 3 affine matrix."""
    a = np.asarray(affine, np.float64)
    return np.asarray(points, np.float64) @ a[:, :2].T + a[:, 2]


def warp_affine(
    src: np.ndarray,
    dst_to_src: np.ndarray,
    out_size: tuple[int, int],
    border: int = cv2.BORDER_REFLECT_101,
    border_value: Sequence[float] = (0, 0, 0),
    interpolation: int = cv2.INTER_CUBIC,
) -> np.ndarray:
    """Warp `src` into an image of `out_size` (w, h); `dst_to_src` maps output pixels to source
    pixels. Bicubic by default (a small face enlarged into a crop keeps its edges); when the warp
    shrinks by more than 2x the source region is first reduced
    with area averaging to twice the output resolution, so fine detail does not alias (reducing
    all the way would add a blur of its own on top of the interpolation)."""
    m = np.asarray(dst_to_src, np.float64)
    shrink = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))  # source pixels per output pixel
    if shrink > 2.0:
        src, m = _prefilter(src, m, out_size, shrink / 2.0)
    return cv2.warpAffine(
        src, m, out_size, flags=interpolation | cv2.WARP_INVERSE_MAP,
        borderMode=border, borderValue=tuple(float(v) for v in border_value),
    )


def _prefilter(src: np.ndarray, m: np.ndarray, out_size: tuple[int, int], shrink: float):
    """Area-reduce by `shrink` the part of `src` the warp reads; return it and the adjusted map."""
    w, h = out_size
    corners = transform_points(np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]]), m)
    pad = 2 * shrink + 2
    x0, y0 = np.floor(corners.min(0) - pad).astype(int)
    x1, y1 = np.ceil(corners.max(0) + pad).astype(int)
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, src.shape[1]), min(y1, src.shape[0])
    if x1 - x0 < 2 or y1 - y0 < 2:
        return src, m
    roi = src[y0:y1, x0:x1]
    rw, rh = max(1, round((x1 - x0) / shrink)), max(1, round((y1 - y0) / shrink))
    small = cv2.resize(roi, (rw, rh), interpolation=cv2.INTER_AREA)
    fx, fy = rw / (x1 - x0), rh / (y1 - y0)
    # source pixel x -> reduced pixel u = (x - x0 + 0.5) * fx - 0.5
    to_small = np.array([[fx, 0, (0.5 - x0) * fx - 0.5], [0, fy, (0.5 - y0) * fy - 0.5]])
    return small, compose(to_small, m)


def align_faces(
    rgb: np.ndarray,
    faces: Sequence | np.ndarray,
    size: int = 512,
    border: str = "soft",
) -> tuple[np.ndarray, np.ndarray]:
    """Cut FFHQ-aligned `size` x `size` crops of each face.

    faces: list of detect.Face, or landmarks N x 5 x 2 (FFHQ order).
    border: "soft" | "reflect" | "constant", how the part of a crop past the photo's edge is
    filled (see the module docstring).
    Returns crops N x size x size x 3 of the photo's dtype (uint8, or uint16 for a 16-bit photo)
    and affines N x 2 x 3 (image -> crop coordinates).
    """
    if border not in _BORDERS:
        raise ValueError(f"border must be one of {sorted(_BORDERS)}, got {border!r}")
    points = [np.asarray(getattr(f, "landmarks", f), np.float64) for f in faces]
    crops = np.zeros((len(points), size, size, 3), rgb.dtype)
    affines = np.zeros((len(points), 2, 3), np.float64)
    for k, lm in enumerate(points):
        affines[k] = estimate_affine(lm, size)
        crops[k] = crop_with_affine(rgb, affines[k], size, border)
    return crops, affines


def crop_with_affine(rgb: np.ndarray, affine: np.ndarray, size: int, border: str = "soft") -> np.ndarray:
    """The `size` x `size` crop that the 2x3 `affine` (image -> crop pixels) cuts from `rgb`."""
    crop_to_image = inverse_affine(affine)
    grey = GREY if rgb.dtype == np.uint8 else tuple(v * 257 for v in GREY)  # 16-bit photos
    crop = warp_affine(rgb, crop_to_image, (size, size), _BORDERS[border], grey)
    return _soften_outside(crop, rgb, crop_to_image) if border == "soft" else crop


def rescale_affine(affine: np.ndarray, k: float) -> np.ndarray:
    """The affine of the same crop resampled `k` times larger (pixel centres kept, as cv2.resize
    does): image -> crop pixels at k x the size."""
    return compose(np.array([[k, 0, 0.5 * k - 0.5], [0, k, 0.5 * k - 0.5]]), affine)


def _soften_outside(crop: np.ndarray, rgb: np.ndarray, crop_to_image: np.ndarray) -> np.ndarray:
    """Blur the mirrored part of a crop and fade it to the photo's mean colour (see "soft")."""
    size = crop.shape[0]
    h, w = rgb.shape[:2]
    edge = transform_points(np.array([[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]]),
                            crop_to_image)
    if edge.min() >= 0 and np.all(edge.max(0) <= [w - 1, h - 1]):
        return crop  # the crop lies inside the photo
    inside = cv2.warpAffine(np.ones((h, w), np.uint8), crop_to_image, (size, size),
                            flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderValue=0)
    dist = cv2.distanceTransform((1 - inside).astype(np.uint8), cv2.DIST_L2, 5)  # px from photo
    blur_w = np.clip(dist / (0.02 * size), 0, 1)[:, :, None]  # blurred within ~10 px at 512
    fade_w = np.clip(dist / (0.3 * size), 0, 1)[:, :, None] ** 0.5  # flat colour far out
    f = crop.astype(np.float32)
    sigma = 0.02 * size
    f += (cv2.GaussianBlur(f, (0, 0), sigma) - f) * blur_w
    mean = rgb.reshape(-1, 3).mean(0).astype(np.float32)
    f += (mean - f) * fade_w
    return np.clip(np.rint(f), 0, np.iinfo(crop.dtype).max).astype(crop.dtype)


def crop_extent(affine: np.ndarray, size: int) -> float:
    """Side of an aligned `size` crop measured in photo pixels (size / the affine's scale): how
    much real detail the photo holds for the face."""
    a = np.asarray(affine, np.float64)[:, :2]
    return float(size / np.sqrt(abs(np.linalg.det(a))))
