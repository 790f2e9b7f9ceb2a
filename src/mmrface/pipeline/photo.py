"""One photo's way through restoration as functions over values (no state kept anywhere):

    p = prepare_photo(rgb, size, DetectionOptions(), upscale)     # detect + align (CPU)
    restored = restorer.restore_crops(p.crops)                     # the network (batched, GPU/CPU)
    result = paste_photo(p, restored, alpha)                       # paste back (CPU)

`Restorer.restore` is exactly these three calls; the Ray batch engine runs them as three stages.
A 16-bit photo (uint16) stays 16-bit throughout: detection runs on its 8-bit view, the crops, the
network's input and output and the pasted photo keep the input's depth.

Faces larger than the model's output. A face whose aligned square spans more photo pixels than
the model produces (a 400-px face and a 128-px model) would lose real detail if its restoration
were simply pasted. `large_faces` decides: "blend" (default) composes the photo's own face at
output resolution plus the restoration's correction `restored - model input`, which has no detail
above the model's resolution, so every finer detail of the photo survives and where the model
changes nothing the face is the photo itself; "keep" leaves such faces as they are; "restore"
pastes the restoration like any face (`--force-restore`). docs/restore.md has the measurement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from mmrface.errors import UserError
from mmrface.pipeline.align import align_faces, crop_extent, crop_with_affine, rescale_affine
from mmrface.pipeline.detect import Face
from mmrface.pipeline.detection import DetectionOptions, find_faces
from mmrface.pipeline.imageio import to_8bit
from mmrface.pipeline.paste import MASKS, paste_faces

LARGE_FACES = ("blend", "keep", "restore")
DEFAULT_LARGE_FACES = "blend"
MAX_BLEND_SIZE = 2048  # side of the high-resolution crop a blend is composed in
MIN_SIDE = 8  # smallest photo (short side) accepted


@dataclass
class RestoredFace:
    box: np.ndarray  # (4,) x0, y0, x1, y1 in input pixels
    landmarks: np.ndarray  # (5, 2) in input pixels
    score: float
    crop_lq: np.ndarray  # aligned input crop, size x size x 3 RGB (the photo's dtype)
    crop_restored: np.ndarray  # restored crop, same size (the input crop when the face was kept)
    affine: np.ndarray  # (2, 3) input image -> crop
    restored: bool = True  # False: the face was kept as it is (large_faces="keep")
    note: str = ""  # what was done to a face larger than the model's output (one line for the user)
    face_px: float = 0.0  # side of the aligned square in input pixels
    mode: str = "restored"  # restored | blended (detail above the model's resolution kept) | kept


@dataclass
class RestoreResult:
    image: np.ndarray  # restored photo (upscaled), HxWx3 RGB of the input's dtype (uint8 or uint16)
    faces: list[RestoredFace] = field(default_factory=list)
    alpha: np.ndarray | None = None  # upscaled alpha channel when the input had one


@dataclass
class PreparedPhoto:
    """A photo after detect + align, before the network: what `restore_crops` and `paste_photo` need.

    crops (N, S, S, 3) (the photo's dtype) and affines (N, 2, 3) image -> crop; `aligned`: the photo is one
    aligned face (resized to S x S as the only crop); `grey`: the photo has no colour; `face_px`
    and `modes`: each face's size in photo pixels and what the paste does with it.
    """

    rgb: np.ndarray
    faces: list[Face]
    crops: np.ndarray
    affines: np.ndarray
    grey: bool
    upscale: float
    aligned: bool = False
    face_px: list[float] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)
    paste_mask: str = "face"


def check_large_faces(policy: str) -> str:
    if policy not in LARGE_FACES:
        raise UserError(f"large_faces must be one of {', '.join(LARGE_FACES)}, got {policy!r}")
    return policy


def face_mode(policy: str, face_px: float, size: int) -> str:
    """restored | blended | kept: what `policy` does to a face spanning `face_px` photo pixels."""
    if face_px <= size or policy == "restore":
        return "restored"
    return {"blend": "blended", "keep": "kept"}[policy]


def prepare_photo(rgb: np.ndarray, size: int, detection: DetectionOptions | None = None, upscale: float = 2,
                  aligned: bool = False, faces: Sequence[Face] | None = None,
                  large_faces: str = DEFAULT_LARGE_FACES, paste_mask: str = "face") -> PreparedPhoto:
    """Detect (unless `faces` or `aligned`; with `detection`) and align the faces of `rgb` (uint8
    or uint16 HxWx3) into `size` x `size` crops."""
    rgb = check_image(rgb)
    check_large_faces(large_faces)
    if paste_mask not in MASKS:
        raise UserError(f"paste mask must be one of {', '.join(MASKS)}, got {paste_mask!r}")
    grey = bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]))
    if aligned:
        h, w = rgb.shape[:2]
        interp = cv2.INTER_AREA if max(h, w) > size else cv2.INTER_CUBIC
        crop = cv2.resize(rgb, (size, size), interpolation=interp) if (h, w) != (size,) * 2 else rgb
        affine = np.array([[size / w, 0, 0], [0, size / h, 0]], np.float64)
        px = float(max(h, w))
        return PreparedPhoto(rgb, [], crop[None], affine[None], grey, upscale, True, [px],
                             [face_mode(large_faces, px, size)], paste_mask)
    if faces is None:
        faces = find_faces(to_8bit(rgb), detection or DetectionOptions())
    if faces:
        crops, affines = align_faces(rgb, faces, size)
    else:
        crops, affines = np.zeros((0, size, size, 3), rgb.dtype), np.zeros((0, 2, 3))
    px = [crop_extent(a, size) for a in affines]
    return PreparedPhoto(rgb, list(faces), crops, affines, grey, upscale, False, px,
                         [face_mode(large_faces, e, size) for e in px], paste_mask)


def paste_photo(prepared: PreparedPhoto, restored: np.ndarray, alpha: np.ndarray | None = None) -> RestoreResult:
    """Paste restored crops (N, S, S, 3) back onto the upscaled photo of `prepared`."""
    p = prepared
    size = p.crops.shape[1]
    modes = p.modes or ["restored"] * len(p.crops)
    px = p.face_px or [float(size)] * len(p.crops)
    restored = np.where(np.array([m == "kept" for m in modes], bool)[:, None, None, None], p.crops, restored) \
        if len(restored) else restored
    if p.grey:
        restored = to_grey(restored)
    notes = [_note(m, e, size) for m, e in zip(modes, px)]
    if p.aligned:
        return _paste_aligned(p, restored[0], modes[0], notes[0], px[0])
    todo = [k for k, m in enumerate(modes) if m != "kept"]
    pasted = [restored[k] if modes[k] == "restored" else
              _blend_large(p.rgb, p.affines[k], p.crops[k], restored[k], px[k] * p.upscale) for k in todo]
    image = paste_faces(p.rgb, pasted, p.affines[todo], upscale=p.upscale, mask=p.paste_mask, aligned_size=size)
    faces = [RestoredFace(f.box, f.landmarks, f.score, c, r, a, m != "kept", n, e, m)
             for f, c, r, a, m, n, e in zip(p.faces, p.crops, restored, p.affines, modes, notes, px)]
    return RestoreResult(image, faces, scale_alpha(alpha, image.shape[:2]))


def compose_detail(hi: np.ndarray, lq: np.ndarray, restored: np.ndarray) -> np.ndarray:
    """`hi` (the photo's face at high resolution) + upsampled (restored - lq), clipped to hi's dtype.

    `lq` is the model's input crop and `restored` its output (both at the model size): their
    difference is the restoration's correction, which has no detail above the model's
    resolution, so everything finer in `hi` survives; where the model changes nothing the result
    is `hi` itself.
    """
    h, w = hi.shape[:2]
    delta = restored.astype(np.float32) - lq.astype(np.float32)
    delta = cv2.resize(delta, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(np.rint(hi.astype(np.float32) + delta), 0, np.iinfo(hi.dtype).max).astype(hi.dtype)


def _blend_large(rgb: np.ndarray, affine: np.ndarray, crop_lq: np.ndarray, restored: np.ndarray,
                 out_px: float) -> np.ndarray:
    """The photo's face, cut at output resolution, plus the restoration's correction."""
    size = crop_lq.shape[0]
    side = int(min(max(round(out_px), size), MAX_BLEND_SIZE))
    hi = crop_with_affine(rgb, rescale_affine(affine, side / size), side)
    return compose_detail(hi, crop_lq, restored)


def _note(mode: str, px: float, size: int) -> str:
    what = {"blended": "restored below the model's resolution, its finer detail kept from the photo",
            "kept": "kept as it is"}.get(mode)
    if what is None:
        return ""
    return (f"spans {px:.0f} px, more than the {size}-px model: {what} "
            "(--large-faces blend|keep|restore; --force-restore pastes the restoration)")


def _paste_aligned(p: PreparedPhoto, restored: np.ndarray, mode: str, note: str, px: float) -> RestoreResult:
    h, w = p.rgb.shape[:2]
    size = restored.shape[0]
    out_w, out_h = round(w * p.upscale), round(h * p.upscale)
    face = RestoredFace(np.array([0, 0, w, h], np.float32), np.zeros((5, 2), np.float32), 1.0, p.crops[0],
                        restored, p.affines[0], mode != "kept", note, px, mode)
    if mode != "restored":
        big = p.rgb if (out_h, out_w) == (h, w) else cv2.resize(p.rgb, (out_w, out_h), interpolation=cv2.INTER_LANCZOS4)
        return RestoreResult(big if mode == "kept" else compose_detail(big, p.crops[0], restored), [face])
    image = restored if (out_h, out_w) == restored.shape[:2] else cv2.resize(
        restored, (out_w, out_h), interpolation=cv2.INTER_LANCZOS4 if out_w > size else cv2.INTER_AREA)
    return RestoreResult(image, [face])


def check_image(rgb: np.ndarray) -> np.ndarray:
    if (not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3
            or rgb.dtype not in (np.uint8, np.uint16)):
        shape, dtype = getattr(rgb, "shape", None), getattr(rgb, "dtype", "")
        raise UserError(f"expected a uint8 or uint16 HxWx3 RGB image, got {type(rgb).__name__} {shape} {dtype}")
    if min(rgb.shape[:2]) < MIN_SIDE:
        raise UserError(f"image too small: {rgb.shape[1]}x{rgb.shape[0]} (at least {MIN_SIDE}x{MIN_SIDE})")
    return rgb


def to_grey(crops: np.ndarray) -> np.ndarray:
    y = crops.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    top = np.iinfo(crops.dtype).max
    return np.repeat(np.clip(np.round(y), 0, top).astype(crops.dtype)[..., None], 3, axis=-1)


def scale_alpha(alpha: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
    if alpha is None:
        return None
    if alpha.shape[:2] == shape:
        return alpha
    return cv2.resize(alpha, (shape[1], shape[0]), interpolation=cv2.INTER_LANCZOS4)
