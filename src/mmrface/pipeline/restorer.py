"""`Restorer`: the one class every front end (CLI, web, video, evaluation) restores through.

    restorer = Restorer("mmrface-small", upscale=2)
    result = restorer.restore(rgb)            # uint8 HxWx3 RGB -> RestoreResult
    result.image, [f.box for f in result.faces]

A `Restorer` holds only immutable things (the network, the detector, options), never the current
photo: `restore` is a pure function of its arguments, so one instance can serve a web server.
The steps are functions over values: detect -> align -> network (batched) -> paste.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from mmrface.errors import UserError
from mmrface.pipeline.align import align_faces, crop_extent, crop_with_affine, rescale_affine
from mmrface.pipeline.detect import DEFAULT_DETECTOR, FALLBACK_DETECTOR, Face, detect_faces, get_detector
from mmrface.pipeline.paste import MASKS, paste_faces

#: What happens to a face larger than the model's output (its aligned square spans more than
#: `size` pixels of the photo, so a plain paste would replace real detail by a lower-resolution
#: face): "blend" adds the restoration's correction below the model's resolution to the photo's
#: own face, keeping every finer detail; "keep" leaves the face as it is; "restore" pastes the
#: restoration as for any face. docs/restore.md has the measurement behind the default.
LARGE_FACES = ("blend", "keep", "restore")
DEFAULT_LARGE_FACES = "blend"
MAX_BLEND_SIZE = 2048  # side of the high-resolution crop a blend is composed in


@dataclass
class RestoredFace:
    box: np.ndarray  # (4,) x0, y0, x1, y1 in input pixels
    landmarks: np.ndarray  # (5, 2) in input pixels
    score: float
    crop_lq: np.ndarray  # aligned input crop, size x size x 3 uint8 RGB
    crop_restored: np.ndarray  # restored crop, same size (the input crop when the face was kept)
    affine: np.ndarray  # (2, 3) input image -> crop
    restored: bool = True  # False: the face was kept as it is (large_faces="keep")
    note: str = ""  # what was done to a face larger than the model's output (one line for the user)
    face_px: float = 0.0  # side of the aligned square in input pixels
    mode: str = "restored"  # restored | blended (detail above the model's resolution kept) | kept


@dataclass
class RestoreResult:
    image: np.ndarray  # restored photo (upscaled), uint8 HxWx3 RGB
    faces: list[RestoredFace] = field(default_factory=list)
    alpha: np.ndarray | None = None  # upscaled alpha channel when the input had one


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
    return dev


def to_tensor(crops: np.ndarray) -> torch.Tensor:
    """(N, S, S, 3) uint8 RGB -> (N, 3, S, S) float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, S, S) in [-1, 1] -> (N, S, S, 3) uint8 RGB (rounded, clamped)."""
    x = images.detach().float().clamp(-1, 1).add(1).mul(127.5).round()
    return x.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()


DEFAULT_FIDELITY = 0.5  # -w when neither the user nor the weight file says otherwise
NOISE_CHOICES = ("stored", "random", "zero")


def default_fidelity(meta: dict) -> float:
    """The fidelity a weight file asks for (GFPGAN files: 1, which reproduces GFPGAN), else DEFAULT_FIDELITY."""
    try:
        return float(meta.get("default_fidelity", DEFAULT_FIDELITY))
    except (TypeError, ValueError):
        return DEFAULT_FIDELITY


class Restorer:
    """Detect, align, restore and paste back every face of a photo.

    Args:
        weights: registry name or path of a weight file (safetensors with its config embedded, or a
            checkpoint that `mmrface weights import` understands). Ignored when `model` is given.
        device: "auto", "cpu", "cuda", "cuda:1" …
        upscale: background and output scale factor `-s`.
        detector: detector backend name (see `mmrface.pipeline.detect`); "auto" is the default
            backend with the slower, pose-tolerant MMOD detector as fallback when it finds nothing.
        fidelity: default fidelity weight w in [0, 1] (0 = prior, 1 = faithful to the input); None
            (the default) takes the weight file's own default (1 for GFPGAN files), else 0.5.
        batch_size: faces per network call.
        fp16: half precision on CUDA (ignored on CPU).
        model: an already built network (tests, training validation); skips `weights`.
        network: a callable `(x: Tensor[N,3,S,S], w: float) -> Tensor` replacing the torch network,
            e.g. an ONNX Runtime session wrapper; its `size` attribute gives S.
        backend: "auto" (ONNX Runtime when `onnx` is given, else torch), "torch" or "onnx".
        onnx: an `mmrface export` graph run by ONNX Runtime (`OrtNetwork`); `weights` is then unused.
        paste_mask: "face" (soft face-region mask, the default) or "square" (the whole aligned crop).
        large_faces: "blend" (default), "keep" or "restore": what to do with a face larger than the
            model's output (see LARGE_FACES); "restore" is the `--force-restore` of the CLI.
        noise: the StyleGAN2 prior's noise: "stored" (the maps saved in the weight file; repeatable,
            zero when the file has none), "random" (a fresh draw per call, as GFPGAN's own code does)
            or "zero". An ONNX graph has its noise baked in at export.
    """

    def __init__(self, weights: str | Path | None = None, device: str | None = "auto", upscale: float = 2,
                 detector: str = "auto", fidelity: float | None = None, batch_size: int = 4, fp16: bool = True,
                 model: torch.nn.Module | None = None, network=None, detector_options: dict | None = None,
                 backend: str = "auto", onnx: str | Path | None = None, noise: str = "stored",
                 paste_mask: str = "face", large_faces: str = DEFAULT_LARGE_FACES):
        if fidelity is not None and not 0.0 <= fidelity <= 1.0:
            raise UserError(f"fidelity must be in [0, 1], got {fidelity}")
        if not 1 <= upscale <= 8:
            raise UserError(f"upscale must be in [1, 8], got {upscale}")
        if noise not in NOISE_CHOICES:
            raise UserError(f"noise must be one of {', '.join(NOISE_CHOICES)}, got {noise!r}")
        if paste_mask not in MASKS:
            raise UserError(f"paste mask must be one of {', '.join(MASKS)}, got {paste_mask!r}")
        self.paste_mask, self.large_faces = paste_mask, _check_large_faces(large_faces)
        self.device = resolve_device(device)
        self.upscale, self.batch_size, self.noise = float(upscale), max(1, int(batch_size)), noise
        self.meta: dict = {}
        network = _onnx_network(backend, onnx, self.device) if network is None else network
        if network is not None:
            self.network, self.size = network, int(network.size)
            self.meta = dict(getattr(network, "metadata", {}))  # an OrtNetwork's export metadata
        else:
            if model is None:
                if weights is None:
                    raise UserError("no weights given: pass --weights NAME_OR_FILE (see `mmrface weights list`)")
                from mmrface.models import RESTORERS, load_model

                model, self.meta = load_model(weights, arch=RESTORERS, device=self.device)
            model = model.to(self.device).eval()
            self.half = bool(fp16 and self.device.type == "cuda")
            if self.half:
                model = model.half()
            self.model, self.size = model, int(model.size)
            self.network = self._torch_network
        self.fidelity = float(default_fidelity(self.meta) if fidelity is None else fidelity)
        self.detector_name = DEFAULT_DETECTOR if detector == "auto" else detector
        self.fallback = FALLBACK_DETECTOR if detector == "auto" else None
        self.detector = get_detector(self.detector_name, **(detector_options or {}))

    # -- network -----------------------------------------------------------------------------
    def _torch_network(self, x: torch.Tensor, w: float) -> torch.Tensor:
        x = x.to(self.device, torch.float16 if self.half else torch.float32)
        mode = self.noise if self.noise != "stored" else "const" if _has_const_noise(self.model) else "zero"
        with torch.inference_mode():
            return self.model(x, w=w, noise_mode=mode).float()

    def restore_crops(self, crops: np.ndarray, fidelity: float | None = None) -> np.ndarray:
        """Aligned crops (N, S, S, 3) uint8 RGB -> restored crops, batched."""
        w = self.fidelity if fidelity is None else float(fidelity)
        if not 0.0 <= w <= 1.0:
            raise UserError(f"fidelity must be in [0, 1], got {w}")
        out = []
        for i in range(0, len(crops), self.batch_size):
            out.append(to_uint8(self.network(to_tensor(crops[i:i + self.batch_size]), w)))
        return np.concatenate(out) if out else np.zeros((0, self.size, self.size, 3), np.uint8)

    # -- whole photo -------------------------------------------------------------------------
    def find_faces(self, rgb: np.ndarray, only_center_face: bool = False, largest_face: bool = False,
                   min_size: int = 0) -> list[Face]:
        return detect_faces(rgb, self.detector, only_center_face=only_center_face,
                            largest_only=largest_face, min_size=min_size, fallback=self.fallback)

    def restore(self, rgb: np.ndarray, aligned: bool = False, only_center_face: bool = False,
                largest_face: bool = False, fidelity: float | None = None, alpha: np.ndarray | None = None,
                min_size: int = 0, faces: Sequence[Face] | None = None,
                upscale: float | None = None, large_faces: str | None = None) -> RestoreResult:
        """Restore every face of `rgb` (uint8 HxWx3 RGB) and paste it back on the upscaled photo.

        With `aligned=True` the input is one aligned face crop: it is restored as a whole and the
        result is that face at (input size × upscale). `faces` skips detection (video tracking).
        `fidelity`, `upscale` and `large_faces` override the instance's defaults for this call.
        A face larger than the model's output is blended, kept or restored (`large_faces`); its
        `mode` and `note` say which.
        """
        policy = self.large_faces if large_faces is None else _check_large_faces(large_faces)
        rgb = _check_image(rgb)
        upscale = self.upscale if upscale is None else float(upscale)
        if not 1 <= upscale <= 8:
            raise UserError(f"upscale must be in [1, 8], got {upscale}")
        grey = bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]))
        if aligned:
            return self._restore_aligned(rgb, fidelity, grey, upscale, policy)
        if faces is None:
            faces = self.find_faces(rgb, only_center_face, largest_face, min_size)
        restored_faces: list[RestoredFace] = []
        if faces:
            crops, affines = align_faces(rgb, faces, self.size)
            px = [crop_extent(a, self.size) for a in affines]
            modes = [_mode(policy, e, self.size) for e in px]
            todo = [k for k, m in enumerate(modes) if m != "kept"]
            out = crops.copy()
            if todo:
                out[todo] = self.restore_crops(crops[todo], fidelity)
                if grey:
                    out[todo] = _to_grey(out[todo])
            pasted = [out[k] if modes[k] == "restored" else
                      self._blend_large(rgb, affines[k], crops[k], out[k], px[k] * upscale) for k in todo]
            image = paste_faces(rgb, pasted, affines[todo], upscale=upscale, mask=self.paste_mask,
                                aligned_size=self.size)
            for k, (f, c, r, a) in enumerate(zip(faces, crops, out, affines)):
                restored_faces.append(RestoredFace(f.box, f.landmarks, f.score, c, r, a, modes[k] != "kept",
                                                   self._note(modes[k], px[k]), px[k], modes[k]))
        else:
            image = paste_faces(rgb, np.zeros((0, self.size, self.size, 3), np.uint8), np.zeros((0, 2, 3)),
                                upscale=upscale)
        return RestoreResult(image, restored_faces, _scale_alpha(alpha, image.shape[:2]))

    def _note(self, mode: str, px: float) -> str:
        what = {"blended": "restored below the model's resolution, its finer detail kept from the photo",
                "kept": "kept as it is"}.get(mode)
        if what is None:
            return ""
        return (f"spans {px:.0f} px, more than the {self.size}-px model: {what} "
                "(--large-faces blend|keep|restore; --force-restore pastes the restoration)")

    def _blend_large(self, rgb: np.ndarray, affine: np.ndarray, crop_lq: np.ndarray, restored: np.ndarray,
                     out_px: float) -> np.ndarray:
        """A face larger than the model: the photo's face at output resolution plus the restoration's
        correction (restored - model input), which lives below the model's resolution."""
        side = int(min(max(round(out_px), self.size), MAX_BLEND_SIZE))
        hi = crop_with_affine(rgb, rescale_affine(affine, side / self.size), side)
        return compose_detail(hi, crop_lq, restored)

    def _restore_aligned(self, rgb: np.ndarray, fidelity: float | None, grey: bool, upscale: float,
                         policy: str) -> RestoreResult:
        h, w = rgb.shape[:2]
        out_w, out_h = round(w * upscale), round(h * upscale)
        interp = cv2.INTER_AREA if max(h, w) > self.size else cv2.INTER_CUBIC
        crop = cv2.resize(rgb, (self.size, self.size), interpolation=interp) if (h, w) != (self.size,) * 2 else rgb
        sx, sy = self.size / w, self.size / h
        affine = np.array([[sx, 0, 0], [0, sy, 0]], np.float64)
        box = np.array([0, 0, w, h], np.float32)
        px = float(max(h, w))
        mode = _mode(policy, px, self.size)
        restored = crop if mode == "kept" else self.restore_crops(crop[None], fidelity)[0]
        if grey and mode != "kept":
            restored = _to_grey(restored[None])[0]
        face = RestoredFace(box, np.zeros((5, 2), np.float32), 1.0, crop, restored, affine, mode != "kept",
                            self._note(mode, px), px, mode)
        if mode != "restored":
            big = rgb if (out_h, out_w) == (h, w) else cv2.resize(rgb, (out_w, out_h), interpolation=cv2.INTER_LANCZOS4)
            image = big if mode == "kept" else compose_detail(big, crop, restored)
            return RestoreResult(image, [face])
        image = restored if (out_h, out_w) == restored.shape[:2] else cv2.resize(
            restored, (out_w, out_h), interpolation=cv2.INTER_LANCZOS4 if out_w > self.size else cv2.INTER_AREA)
        return RestoreResult(image, [face])


def compose_detail(hi: np.ndarray, lq: np.ndarray, restored: np.ndarray) -> np.ndarray:
    """`hi` (the photo's face at high resolution) + upsampled (restored - lq), clipped to uint8.

    `lq` is the model's input crop and `restored` its output (both at the model size): their
    difference is the restoration's correction, which has no detail above the model's
    resolution, so everything finer in `hi` survives; where the model changes nothing the result
    is `hi` itself.
    """
    h, w = hi.shape[:2]
    delta = restored.astype(np.float32) - lq.astype(np.float32)
    delta = cv2.resize(delta, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(np.rint(hi.astype(np.float32) + delta), 0, 255).astype(np.uint8)


def _mode(policy: str, face_px: float, size: int) -> str:
    """restored | blended | kept: what `policy` does to a face spanning `face_px` photo pixels."""
    if face_px <= size or policy == "restore":
        return "restored"
    return {"blend": "blended", "keep": "kept"}[policy]


def _check_large_faces(policy: str) -> str:
    if policy not in LARGE_FACES:
        raise UserError(f"large_faces must be one of {', '.join(LARGE_FACES)}, got {policy!r}")
    return policy


def _onnx_network(backend: str, onnx: str | Path | None, device: torch.device):
    """The ONNX Runtime network that `backend` / `onnx` ask for, or None for the torch model."""
    if backend not in ("auto", "torch", "onnx"):
        raise UserError(f"backend must be auto, torch or onnx, got {backend!r}")
    if backend == "torch" and onnx is not None:
        raise UserError("an ONNX file was given with backend torch; drop --onnx or use --backend onnx")
    if backend == "onnx" and onnx is None:
        raise UserError("backend onnx needs an ONNX file (--onnx FILE; write one with `mmrface export`)")
    if onnx is None:
        return None
    from mmrface.export.ort_backend import OrtNetwork, default_providers

    return OrtNetwork(onnx, providers=default_providers(device))


def _has_const_noise(model: torch.nn.Module) -> bool:
    return any(name.endswith("noise0") or ".noises." in name for name, _ in model.named_buffers())


def _check_image(rgb: np.ndarray) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        shape = getattr(rgb, "shape", None)
        raise UserError(f"expected a uint8 HxWx3 RGB image, got {type(rgb).__name__} {shape}")
    if min(rgb.shape[:2]) < 8:
        raise UserError(f"image too small: {rgb.shape[1]}x{rgb.shape[0]}")
    return rgb


def _to_grey(crops: np.ndarray) -> np.ndarray:
    y = crops.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat(np.clip(np.round(y), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def _scale_alpha(alpha: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
    if alpha is None:
        return None
    if alpha.shape[:2] == shape:
        return alpha
    return cv2.resize(alpha, (shape[1], shape[0]), interpolation=cv2.INTER_LANCZOS4)
