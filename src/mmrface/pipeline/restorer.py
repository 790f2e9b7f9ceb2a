"""`Restorer`: the one class every front end (CLI, web, video, evaluation) restores through.

    restorer = Restorer("mmrface-small", upscale=2)
    result = restorer.restore(rgb)            # uint8 HxWx3 RGB -> RestoreResult
    result.image, [f.box for f in result.faces]

A `Restorer` holds only immutable things (the network, the detector, options), never the current
photo: `restore` is a pure function of its arguments, so one instance can serve a web server.
The steps are functions over values: detect -> align -> network (batched) -> paste. They are also
callable one by one, for front ends that run them on different machines (`mmrface.batch`):

    prepared = restorer.prepare(rgb)                       # detect + align (CPU)
    restored = restorer.restore_crops(prepared.crops)      # the network, batched (GPU)
    result = paste_photo(prepared, restored, alpha)        # paste back (CPU)

`prepare_photo` and `paste_photo` are the same steps as plain functions (a detector and a crop
size instead of a `Restorer`), so a worker that never runs the network need not load it.
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
from mmrface.pipeline.detect import DEFAULT_DETECTOR, FALLBACK_DETECTOR, Face, detect_faces, get_detector
from mmrface.pipeline.paste import paste_faces


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


@dataclass
class PreparedPhoto:
    """A photo after detect + align, before the network: what `restore_crops` and `paste_photo` need.

    crops (N, S, S, 3) uint8 and affines (N, 2, 3) image -> crop; `aligned`: the photo is one
    aligned face (resized to S x S as the only crop); `grey`: the photo has no colour.
    """

    rgb: np.ndarray
    faces: list[Face]
    crops: np.ndarray
    affines: np.ndarray
    grey: bool
    upscale: float
    aligned: bool = False


def pick_detectors(detector: str = "auto", options: dict | None = None):
    """(detector, fallback or None) for a backend name; "auto" = the default with MMOD as fallback."""
    name = DEFAULT_DETECTOR if detector == "auto" else detector
    return get_detector(name, **(options or {})), (FALLBACK_DETECTOR if detector == "auto" else None)


def prepare_photo(rgb: np.ndarray, size: int, detector, fallback=None, upscale: float = 2, aligned: bool = False,
                  only_center_face: bool = False, largest_face: bool = False, min_size: int = 0,
                  faces: Sequence[Face] | None = None) -> PreparedPhoto:
    """Detect (unless `faces` or `aligned`) and align the faces of `rgb` into `size` x `size` crops."""
    rgb = _check_image(rgb)
    grey = bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]))
    if aligned:
        h, w = rgb.shape[:2]
        interp = cv2.INTER_AREA if max(h, w) > size else cv2.INTER_CUBIC
        crop = cv2.resize(rgb, (size, size), interpolation=interp) if (h, w) != (size,) * 2 else rgb
        affine = np.array([[size / w, 0, 0], [0, size / h, 0]], np.float64)
        return PreparedPhoto(rgb, [], crop[None], affine[None], grey, upscale, aligned=True)
    if faces is None:
        faces = detect_faces(rgb, detector, only_center_face=only_center_face, largest_only=largest_face,
                             min_size=min_size, fallback=fallback)
    if faces:
        crops, affines = align_faces(rgb, faces, size)
    else:
        crops, affines = np.zeros((0, size, size, 3), np.uint8), np.zeros((0, 2, 3))
    return PreparedPhoto(rgb, list(faces), crops, affines, grey, upscale)


def paste_photo(prepared: PreparedPhoto, restored: np.ndarray, alpha: np.ndarray | None = None) -> RestoreResult:
    """Paste restored crops (N, S, S, 3) back onto the upscaled photo of `prepared`."""
    p = prepared
    if p.grey:
        restored = _to_grey(restored)
    if p.aligned:
        return _paste_aligned(p, restored[0])
    image = paste_faces(p.rgb, restored, p.affines, upscale=p.upscale)
    faces = [RestoredFace(f.box, f.landmarks, f.score, c, r, a)
             for f, c, r, a in zip(p.faces, p.crops, restored, p.affines)]
    return RestoreResult(image, faces, _scale_alpha(alpha, image.shape[:2]))


class Restorer:
    """Detect, align, restore and paste back every face of a photo.

    Args:
        weights: registry name or path of a weight file (safetensors with its config embedded, or a
            checkpoint that `mmrface weights import` understands). Ignored when `model` is given.
        device: "auto", "cpu", "cuda", "cuda:1" …
        upscale: background and output scale factor `-s`.
        detector: detector backend name (see `mmrface.pipeline.detect`); "auto" is the default
            backend with the slower, pose-tolerant MMOD detector as fallback when it finds nothing.
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
                 backend: str = "auto", onnx: str | Path | None = None):
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
        self.detector_name = DEFAULT_DETECTOR if detector == "auto" else detector
        self.detector, self.fallback = pick_detectors(detector, detector_options)

    # -- network -----------------------------------------------------------------------------
    def _torch_network(self, x: torch.Tensor, w: float) -> torch.Tensor:
        x = x.to(self.device, torch.float16 if self.half else torch.float32)
        with torch.inference_mode():
            return self.model(x, w=w, noise_mode="const" if _has_const_noise(self.model) else "zero").float()

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

    def prepare(self, rgb: np.ndarray, aligned: bool = False, only_center_face: bool = False,
                largest_face: bool = False, min_size: int = 0, faces: Sequence[Face] | None = None,
                upscale: float | None = None) -> PreparedPhoto:
        """Detect and align (no network): `restore_crops(p.crops)` and `paste_photo` finish the photo."""
        upscale = self.upscale if upscale is None else float(upscale)
        if not 1 <= upscale <= 8:
            raise UserError(f"upscale must be in [1, 8], got {upscale}")
        return prepare_photo(rgb, self.size, self.detector, self.fallback, upscale, aligned,
                             only_center_face, largest_face, min_size, faces)

    def restore(self, rgb: np.ndarray, aligned: bool = False, only_center_face: bool = False,
                largest_face: bool = False, fidelity: float | None = None, alpha: np.ndarray | None = None,
                min_size: int = 0, faces: Sequence[Face] | None = None,
                upscale: float | None = None) -> RestoreResult:
        """Restore every face of `rgb` (uint8 HxWx3 RGB) and paste it back on the upscaled photo.

        With `aligned=True` the input is one aligned face crop: it is restored as a whole and the
        result is that face at (input size × upscale). `faces` skips detection (video tracking).
        `fidelity` and `upscale` override the instance's defaults for this call.
        """
        prepared = self.prepare(rgb, aligned, only_center_face, largest_face, min_size, faces, upscale)
        return paste_photo(prepared, self.restore_crops(prepared.crops, fidelity), alpha)


def _paste_aligned(p: PreparedPhoto, restored: np.ndarray) -> RestoreResult:
    h, w = p.rgb.shape[:2]
    size = restored.shape[0]
    out_w, out_h = round(w * p.upscale), round(h * p.upscale)
    image = restored if (out_h, out_w) == restored.shape[:2] else cv2.resize(
        restored, (out_w, out_h), interpolation=cv2.INTER_LANCZOS4 if out_w > size else cv2.INTER_AREA)
    face = RestoredFace(np.array([0, 0, w, h], np.float32), np.zeros((5, 2), np.float32), 1.0, p.crops[0],
                        restored, p.affines[0])
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
