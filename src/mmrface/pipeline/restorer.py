"""`Restorer`: the one class every front end (CLI, web, video, batch, evaluation) restores through.

    restorer = Restorer("mmrface-small", upscale=2)
    result = restorer.restore(rgb)            # uint8 HxWx3 RGB -> RestoreResult
    result.image, [f.box for f in result.faces]

A `Restorer` holds only immutable things (the network, the detector, options), never the current
photo: `restore` is a pure function of its arguments, so one instance can serve a web server.
The steps are functions over values (`pipeline/photo.py`): prepare (detect + align) -> network
(batched) -> paste. Which faces are searched for and kept is one `DetectionOptions` value
(`pipeline/detection.py`). A 16-bit photo (uint16) is restored at its depth: detection runs on its
8-bit view, the crops, the network's input and output and the pasted photo stay uint16.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mmrface.errors import UserError
from mmrface.pipeline.detect import Face, get_detector
from mmrface.pipeline.detection import DetectionOptions, find_faces, options_from_detector
from mmrface.pipeline.imageio import to_8bit
from mmrface.pipeline.paste import MASKS
from mmrface.pipeline.photo import (  # noqa: F401  (RestoredFace, RestoreResult, MIN_SIDE: re-exported)
    DEFAULT_LARGE_FACES,
    LARGE_FACES,
    MIN_SIDE,
    PreparedPhoto,
    RestoredFace,
    RestoreResult,
    check_large_faces,
    paste_photo,
    prepare_photo,
)


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


DEFAULT_FIDELITY = 0.5  # -w when neither the user nor the weight file says otherwise
NOISE_CHOICES = ("stored", "random", "zero")


def default_fidelity(meta: dict) -> float:
    """The fidelity a weight file asks for (GFPGAN files: 1, which reproduces GFPGAN), else DEFAULT_FIDELITY."""
    try:
        return float(meta.get("default_fidelity", DEFAULT_FIDELITY))
    except (TypeError, ValueError):
        return DEFAULT_FIDELITY


def fidelity_note(meta: dict, w: float) -> str | None:
    """A one-line caution when `w` is not the fidelity a weight file was last trained at.

    Files whose last training steps used one w only (metadata `fidelity_trained`, e.g. the bundled
    mmrface-small at w = 1) restore worse at other settings of the knob; other files say nothing.
    """
    try:
        trained = float(meta["fidelity_trained"])
    except (KeyError, TypeError, ValueError):
        return None
    if abs(w - trained) < 1e-6:
        return None
    return (f"these weights were last trained at w = {trained:g} only and restore worse at w = {w:g} "
            '(README "Results"); fine-tune with the knob\'s range (configs/small_finetune.yaml) to use it')


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
                 paste_mask: str = "face", large_faces: str = DEFAULT_LARGE_FACES,
                 detection: DetectionOptions | None = None):
        if fidelity is not None and not 0.0 <= fidelity <= 1.0:
            raise UserError(f"fidelity must be in [0, 1], got {fidelity}")
        if not 1 <= upscale <= 8:
            raise UserError(f"upscale must be in [1, 8], got {upscale}")
        if noise not in NOISE_CHOICES:
            raise UserError(f"noise must be one of {', '.join(NOISE_CHOICES)}, got {noise!r}")
        if paste_mask not in MASKS:
            raise UserError(f"paste mask must be one of {', '.join(MASKS)}, got {paste_mask!r}")
        self.paste_mask, self.large_faces = paste_mask, check_large_faces(large_faces)
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
        mode = self.noise if self.noise != "stored" else "const" if _has_const_noise(self.model) else "zero"
        with torch.inference_mode():
            return self.model(x, w=w, noise_mode=mode).float()

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

    def prepare(self, rgb: np.ndarray, aligned: bool = False, only_center_face: bool | None = None,
                largest_face: bool | None = None, min_size: float | None = None,
                faces: Sequence[Face] | None = None, upscale: float | None = None,
                large_faces: str | None = None) -> PreparedPhoto:
        """Detect and align (no network): `restore_crops(p.crops)` and `paste_photo` finish the photo."""
        upscale = self.upscale if upscale is None else float(upscale)
        if not 1 <= upscale <= 8:
            raise UserError(f"upscale must be in [1, 8], got {upscale}")
        return prepare_photo(rgb, self.size, self.detection_for(only_center_face, largest_face, min_size), upscale,
                             aligned, faces, large_faces or self.large_faces, self.paste_mask)

    def restore(self, rgb: np.ndarray, aligned: bool = False, only_center_face: bool | None = None,
                largest_face: bool | None = None, fidelity: float | None = None, alpha: np.ndarray | None = None,
                min_size: float | None = None, faces: Sequence[Face] | None = None,
                upscale: float | None = None, large_faces: str | None = None) -> RestoreResult:
        """Restore every face of `rgb` (uint8 or uint16 HxWx3 RGB) and paste it back on the upscaled photo.

        With `aligned=True` the input is one aligned face crop: it is restored as a whole and the
        result is that face at (input size × upscale). `faces` skips detection (video tracking).
        `fidelity`, `upscale` and `large_faces` override the instance's defaults for this call.
        A face larger than the model's output is blended, kept or restored (`large_faces`); its
        `mode` and `note` say which.
        """
        prepared = self.prepare(rgb, aligned, only_center_face, largest_face, min_size, faces, upscale, large_faces)
        return paste_photo(prepared, self.restore_crops(prepared.crops, fidelity), alpha)


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
