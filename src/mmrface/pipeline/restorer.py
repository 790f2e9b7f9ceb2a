"""`Restorer`: the one class every front end (CLI, web, video, evaluation) restores through.

    restorer = Restorer("mmrface-small", upscale=2)
    result = restorer.restore(rgb)            # uint8 HxWx3 RGB -> RestoreResult
    result.image, [f.box for f in result.faces]

A `Restorer` holds only immutable things (the network, the detection options, defaults), never the
current photo: `restore` is a pure function of its arguments, so one instance can serve a web
server. The steps are functions over values: detect -> align -> network (batched) -> paste.
Which faces are searched for and kept is one `DetectionOptions` value (`pipeline/detection.py`).

A 16-bit photo (uint16 HxWx3, `imageio.LoadedImage.pixels`) is restored at its depth: detection
runs on its 8-bit view, the aligned crops, the network's input and output and the pasted photo
stay uint16, so the background keeps every bit and the result is uint16 too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from mmrface.errors import UserError
from mmrface.pipeline.align import align_faces
from mmrface.pipeline.detect import Face, get_detector
from mmrface.pipeline.detection import DetectionOptions, find_faces, options_from_detector
from mmrface.pipeline.imageio import to_8bit
from mmrface.pipeline.paste import paste_faces

MIN_SIDE = 8  # smallest photo (short side) the Restorer accepts


@dataclass
class RestoredFace:
    box: np.ndarray  # (4,) x0, y0, x1, y1 in input pixels
    landmarks: np.ndarray  # (5, 2) in input pixels
    score: float
    crop_lq: np.ndarray  # aligned input crop, size x size x 3 uint8 RGB
    crop_restored: np.ndarray  # restored crop, same size
    affine: np.ndarray  # (2, 3) input image -> crop


@dataclass
class RestoreResult:
    image: np.ndarray  # restored photo (upscaled), HxWx3 RGB of the input's dtype (uint8 or uint16)
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
    """(N, S, S, 3) uint8 or uint16 RGB -> (N, 3, S, S) float in [-1, 1]."""
    half = 127.5 if crops.dtype == np.uint8 else 32767.5
    x = torch.from_numpy(np.ascontiguousarray(crops).astype(np.float32, copy=False))
    return x.permute(0, 3, 1, 2).div(half).sub(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, S, S) in [-1, 1] -> (N, S, S, 3) uint8 RGB (rounded, clamped)."""
    return to_pixels(images, np.uint8)


def to_pixels(images: torch.Tensor, dtype=np.uint8) -> np.ndarray:
    """(N, 3, S, S) in [-1, 1] -> (N, S, S, 3) RGB of `dtype` (uint8 or uint16; rounded, clamped)."""
    half = 127.5 if dtype == np.uint8 else 32767.5
    x = images.detach().float().clamp(-1, 1).add(1).mul(half).round()
    return x.permute(0, 2, 3, 1).cpu().numpy().astype(dtype)


def load_network(weights: str | Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """Build the network described by a weight file's embedded config and load it strictly."""
    from mmrface.models import build_model
    from mmrface.weights import load_weights

    state, meta = load_weights(weights)
    config = meta.get("config")
    if not isinstance(config, dict) or "model" not in config:
        raise UserError(f"{weights}: the weight file carries no model config; re-save it with `mmrface weights import`")
    model = build_model(config["model"])
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if ".noises." not in k and not k.startswith("noises.")]
    if missing or unexpected:
        raise UserError(f"{weights}: weights do not fit the model "
                        f"({len(missing)} missing, {len(unexpected)} unexpected, e.g. {(missing or unexpected)[:2]})")
    return model.to(device).eval(), meta


class Restorer:
    """Detect, align, restore and paste back every face of a photo.

    Args:
        weights: registry name or path of a weight file (safetensors with its config embedded, or a
            checkpoint that `mmrface weights import` understands). Ignored when `model` is given.
        device: "auto", "cpu", "cuda", "cuda:1" …
        upscale: background and output scale factor `-s`.
        detection: the `DetectionOptions` of every photo (backend, fallback, min face size,
            only-center / largest face, search sizes); see `mmrface.pipeline.detection`.
        detector, detector_options: the older way to say it, used when `detection` is not given:
            "auto" = the default backend with the MMOD fallback (when dlib is installed), a
            backend name = that backend alone, with `detector_options` for its constructor.
        fidelity: default fidelity weight w in [0, 1] (0 = prior, 1 = faithful to the input).
        batch_size: faces per network call.
        fp16: half precision on CUDA (ignored on CPU).
        model: an already built network (tests, training validation); skips `weights`.
        network: a callable `(x: Tensor[N,3,S,S], w: float) -> Tensor` replacing the torch network,
            e.g. an ONNX Runtime session wrapper; its `size` attribute gives S.
        backend: "auto" (ONNX Runtime when `onnx` is given, else torch), "torch" or "onnx".
        onnx: an `mmrface export` graph run by ONNX Runtime (`OrtNetwork`); `weights` is then unused.
    """

    def __init__(self, weights: str | Path | None = None, device: str | None = "auto", upscale: float = 2,
                 detector: str = "auto", fidelity: float = 0.5, batch_size: int = 4, fp16: bool = True,
                 model: torch.nn.Module | None = None, network=None, detector_options: dict | None = None,
                 backend: str = "auto", onnx: str | Path | None = None, detection: DetectionOptions | None = None):
        if not 0.0 <= fidelity <= 1.0:
            raise UserError(f"fidelity must be in [0, 1], got {fidelity}")
        if not 1 <= upscale <= 8:
            raise UserError(f"upscale must be in [1, 8], got {upscale}")
        self.device = resolve_device(device)
        self.upscale, self.fidelity, self.batch_size = float(upscale), float(fidelity), max(1, int(batch_size))
        self.meta: dict = {}
        network = _onnx_network(backend, onnx, self.device) if network is None else network
        if network is not None:
            self.network, self.size = network, int(network.size)
            self.meta = dict(getattr(network, "metadata", {}))  # an OrtNetwork's export metadata
        else:
            if model is None:
                if weights is None:
                    raise UserError("no weights given: pass --weights NAME_OR_FILE (see `mmrface weights list`)")
                model, self.meta = load_network(weights, self.device)
            model = model.to(self.device).eval()
            self.half = bool(fp16 and self.device.type == "cuda")
            if self.half:
                model = model.half()
            self.model, self.size = model, int(model.size)
            self.network = self._torch_network
        self.detection = detection if detection is not None else options_from_detector(detector, detector_options)
        self.detector_name = self.detection.primary
        self.detector = get_detector(self.detector_name, **dict(self.detection.backend_options))

    @property
    def fallback(self) -> str | None:
        """The backend searched when the primary finds no face (None: no fallback)."""
        return self.detection.resolved_fallback()

    # -- network -----------------------------------------------------------------------------
    def _torch_network(self, x: torch.Tensor, w: float) -> torch.Tensor:
        x = x.to(self.device, torch.float16 if self.half else torch.float32)
        with torch.inference_mode():
            return self.model(x, w=w, noise_mode="const" if _has_const_noise(self.model) else "zero").float()

    def restore_crops(self, crops: np.ndarray, fidelity: float | None = None) -> np.ndarray:
        """Aligned crops (N, S, S, 3) uint8 or uint16 RGB -> restored crops of that dtype, batched."""
        w = self.fidelity if fidelity is None else float(fidelity)
        if not 0.0 <= w <= 1.0:
            raise UserError(f"fidelity must be in [0, 1], got {w}")
        out = []
        for i in range(0, len(crops), self.batch_size):
            out.append(to_pixels(self.network(to_tensor(crops[i:i + self.batch_size]), w), crops.dtype))
        return np.concatenate(out) if out else np.zeros((0, self.size, self.size, 3), crops.dtype)

    # -- whole photo -------------------------------------------------------------------------
    def detection_for(self, only_center_face: bool | None = None, largest_face: bool | None = None,
                      min_size: float | None = None) -> DetectionOptions:
        """The instance's detection options with these per-call choices (None: keep the instance's)."""
        changes = {k: v for k, v in (("only_center", only_center_face), ("largest", largest_face),
                                     ("min_size", min_size)) if v is not None}
        return self.detection.replace(**changes) if changes else self.detection

    def find_faces(self, rgb: np.ndarray, only_center_face: bool | None = None, largest_face: bool | None = None,
                   min_size: float | None = None) -> list[Face]:
        """The faces `restore` would restore in `rgb` (uint8 or uint16 HxWx3)."""
        return find_faces(to_8bit(rgb), self.detection_for(only_center_face, largest_face, min_size))

    def restore(self, rgb: np.ndarray, aligned: bool = False, only_center_face: bool | None = None,
                largest_face: bool | None = None, fidelity: float | None = None, alpha: np.ndarray | None = None,
                min_size: float | None = None, faces: Sequence[Face] | None = None,
                upscale: float | None = None) -> RestoreResult:
        """Restore every face of `rgb` (uint8 or uint16 HxWx3 RGB) and paste it back on the upscaled photo.

        With `aligned=True` the input is one aligned face crop: it is restored as a whole and the
        result is that face at (input size × upscale). `faces` skips detection (video tracking).
        `fidelity` and `upscale` override the instance's defaults for this call, and
        `only_center_face`, `largest_face`, `min_size` its detection options (None: keep them).
        """
        rgb = _check_image(rgb)
        upscale = self.upscale if upscale is None else float(upscale)
        if not 1 <= upscale <= 8:
            raise UserError(f"upscale must be in [1, 8], got {upscale}")
        grey = bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]))
        if aligned:
            return self._restore_aligned(rgb, fidelity, grey, upscale)
        if faces is None:
            faces = self.find_faces(rgb, only_center_face, largest_face, min_size)
        restored_faces: list[RestoredFace] = []
        if faces:
            crops, affines = align_faces(rgb, faces, self.size)
            restored = self.restore_crops(crops, fidelity)
            if grey:
                restored = _to_grey(restored)
            image = paste_faces(rgb, restored, affines, upscale=upscale)
            restored_faces = [RestoredFace(f.box, f.landmarks, f.score, c, r, a)
                              for f, c, r, a in zip(faces, crops, restored, affines)]
        else:
            image = paste_faces(rgb, np.zeros((0, self.size, self.size, 3), rgb.dtype), np.zeros((0, 2, 3)),
                                upscale=upscale)
        return RestoreResult(image, restored_faces, _scale_alpha(alpha, image.shape[:2]))

    def _restore_aligned(self, rgb: np.ndarray, fidelity: float | None, grey: bool, upscale: float) -> RestoreResult:
        h, w = rgb.shape[:2]
        interp = cv2.INTER_AREA if max(h, w) > self.size else cv2.INTER_CUBIC
        crop = cv2.resize(rgb, (self.size, self.size), interpolation=interp) if (h, w) != (self.size,) * 2 else rgb
        restored = self.restore_crops(crop[None], fidelity)[0]
        if grey:
            restored = _to_grey(restored[None])[0]
        out_w, out_h = round(w * upscale), round(h * upscale)
        image = restored if (out_h, out_w) == restored.shape[:2] else cv2.resize(
            restored, (out_w, out_h), interpolation=cv2.INTER_LANCZOS4 if out_w > self.size else cv2.INTER_AREA)
        sx, sy = self.size / w, self.size / h
        affine = np.array([[sx, 0, 0], [0, sy, 0]], np.float64)
        face = RestoredFace(np.array([0, 0, w, h], np.float32), np.zeros((5, 2), np.float32), 1.0, crop, restored, affine)
        return RestoreResult(image, [face])


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
    if (not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3
            or rgb.dtype not in (np.uint8, np.uint16)):
        shape, dtype = getattr(rgb, "shape", None), getattr(rgb, "dtype", "")
        raise UserError(f"expected a uint8 or uint16 HxWx3 RGB image, got {type(rgb).__name__} {shape} {dtype}")
    if min(rgb.shape[:2]) < MIN_SIDE:
        raise UserError(f"image too small: {rgb.shape[1]}x{rgb.shape[0]} (at least {MIN_SIDE}x{MIN_SIDE})")
    return rgb


def _to_grey(crops: np.ndarray) -> np.ndarray:
    y = crops.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    top = np.iinfo(crops.dtype).max
    return np.repeat(np.clip(np.round(y), 0, top).astype(crops.dtype)[..., None], 3, axis=-1)


def _scale_alpha(alpha: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
    if alpha is None:
        return None
    if alpha.shape[:2] == shape:
        return alpha
    return cv2.resize(alpha, (shape[1], shape[0]), interpolation=cv2.INTER_LANCZOS4)
