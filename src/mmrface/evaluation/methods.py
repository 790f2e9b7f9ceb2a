"""The things `mmrface evaluate` scores: a baseline, a model, or a folder of restored outputs.

Every method maps one test pair to a restored image **at the HQ size**:

    method(name, lq, hq) -> uint8 HxWx3 RGB of hq's shape   (raises MissingOutput to skip it)

Conventions (also written into report.json):

* ``bicubic`` (the floor): the LQ image itself. `make-testset` already resizes its LQ back to the
  HQ size with bicubic interpolation; an LQ of another size is resized here (bicubic up, area down).
* a model: the LQ face is an aligned crop, restored exactly as ``mmrface restore --aligned -s 1``
  does (`Restorer.restore(lq, aligned=True)`: resized to the model's size, area filter when
  shrinking, bicubic when enlarging; network at the given fidelity with constant noise; a grey
  input gives a grey output), then resized back to the HQ size (Lanczos up, area down).
* an outputs folder: the file with the test pair's name (``00000.png``), else the first file with
  the same stem and another image extension; resized to the HQ size if it differs (bicubic up,
  area down), so outputs saved with ``-s 2`` can be scored too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from mmrface.errors import UserError
from mmrface.pipeline.imageio import IMAGE_EXTENSIONS, ImageReadError, list_images, read_image

BASELINE = "bicubic"
_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")


class MissingOutput(Exception):
    """No restored image for this test pair (the reason is the message)."""


def fit_to(img: np.ndarray, shape: tuple[int, ...], up: int = cv2.INTER_CUBIC) -> np.ndarray:
    """Resize ``img`` to ``shape[:2]`` (area filter when shrinking, ``up`` when enlarging)."""
    h, w = shape[:2]
    if img.shape[:2] == (h, w):
        return img
    interp = cv2.INTER_AREA if img.shape[0] * img.shape[1] > h * w else up
    return cv2.resize(img, (w, h), interpolation=interp).reshape(h, w, -1)


@dataclass
class Method:
    """Base class: a named source of restored images."""

    name: str
    kind: str = field(init=False, default="method")

    def load(self) -> None:
        """Acquire heavy resources (a network) right before scoring."""

    def unload(self) -> None:
        """Release them after scoring."""

    def info(self) -> dict[str, Any]:
        """What this method is, for report.json."""
        return {"name": self.name, "kind": self.kind}

    def __call__(self, name: str, lq: np.ndarray, hq: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@dataclass
class BicubicBaseline(Method):
    """The LQ image itself, at the HQ size: every table's floor."""

    name: str = BASELINE
    kind: str = field(init=False, default="baseline")

    def info(self) -> dict[str, Any]:
        return {**super().info(), "source": "LQ input (bicubic-resized to the HQ size)"}

    def __call__(self, name: str, lq: np.ndarray, hq: np.ndarray) -> np.ndarray:
        return fit_to(lq, hq.shape)


@dataclass
class ModelMethod(Method):
    """A restoration network: from a weight file / registry name, or an already built module."""

    weights: str | None = None
    model: torch.nn.Module | None = None
    fidelity: float | None = None  # None: the weights' own default (1 for GFPGAN files), else 0.5
    device: str = "auto"
    kind: str = field(init=False, default="model")
    _restorer: Any = field(init=False, default=None, repr=False)
    _meta: dict = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.weights is None and self.model is None:
            raise UserError(f"method {self.name!r}: give weights or a model")
        if self.fidelity is not None and not 0.0 <= self.fidelity <= 1.0:
            raise UserError(f"fidelity must be in [0, 1], got {self.fidelity}")
        if self.weights is not None and self.model is None:
            from mmrface.weights import resolve_weights

            resolve_weights(self.weights)  # fail early (UserError) before any scoring starts

    def load(self) -> None:
        from mmrface.pipeline.restorer import Restorer

        if self._restorer is None:
            self._restorer = Restorer(self.weights, device=self.device, upscale=1, detector="dlib-hog",
                                      fidelity=self.fidelity, model=self.model)
            self._meta = self._restorer.meta

    def unload(self) -> None:
        self._restorer = None

    def info(self) -> dict[str, Any]:
        out = {**super().info(), "source": str(self.weights) if self.weights is not None else "in-memory model",
               "fidelity": self.fidelity}
        if self._restorer is not None:
            out["fidelity"] = self._restorer.fidelity
            out["model_size"] = self._restorer.size
            out["device"] = str(self._restorer.device)
        cfg = self._meta.get("config") if isinstance(self._meta, dict) else None
        if isinstance(cfg, dict):
            out["config_name"] = cfg.get("name")
            out["arch"] = (cfg.get("model") or {}).get("arch")
        return out

    def __call__(self, name: str, lq: np.ndarray, hq: np.ndarray) -> np.ndarray:
        self.load()
        result = self._restorer.restore(lq, aligned=True)
        return fit_to(result.image, hq.shape, up=cv2.INTER_LANCZOS4)


@dataclass
class OutputsMethod(Method):
    """A folder of already restored images, matched to the test pairs by file name."""

    folder: Path = Path(".")
    kind: str = field(init=False, default="outputs")
    _files: dict[str, Path] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder).expanduser()
        if not self.folder.is_dir():
            raise UserError(f"outputs folder not found: {self.folder}")
        files = list_images(self.folder)
        if not files:
            raise UserError(f"outputs folder {self.folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        for p in files:
            self._files.setdefault(p.name, p)
        for p in files:
            self._files.setdefault("stem:" + p.stem, p)

    def find(self, name: str) -> Path | None:
        """The output file for test pair ``name`` (exact name first, then same stem)."""
        return self._files.get(name) or self._files.get("stem:" + Path(name).stem)

    def check(self, names: list[str]) -> None:
        """UserError when no test pair has an output here (wrong folder)."""
        if not any(self.find(n) for n in names):
            raise UserError(f"outputs folder {self.folder} has no file named like the test pairs "
                            f"(e.g. {names[0]}); files are matched by name")

    def info(self) -> dict[str, Any]:
        return {**super().info(), "source": str(self.folder)}

    def __call__(self, name: str, lq: np.ndarray, hq: np.ndarray) -> np.ndarray:
        path = self.find(name)
        if path is None:
            raise MissingOutput(f"no output named {Path(name).stem}.* in {self.folder}")
        try:
            return fit_to(read_image(path).rgb, hq.shape)  # 16-bit outputs: each value rounded
        except ImageReadError as exc:
            raise MissingOutput(f"unreadable output {exc}") from exc


def split_named(value: str) -> tuple[str | None, str]:
    """``NAME=SOURCE`` -> (NAME, SOURCE); a plain SOURCE (or a path containing '=') -> (None, SOURCE)."""
    if "=" in value and not Path(value).expanduser().exists():
        name, source = value.split("=", 1)
        if _NAME_RE.match(name) and source:
            return name, source
    return None, value


def check_names(methods: list[Method]) -> None:
    """Method names must be unique and fit in a table cell."""
    seen: set[str] = set()
    for m in methods:
        if not _NAME_RE.match(m.name):
            raise UserError(f"bad method name {m.name!r}: use letters, digits and _.+- (at most 64)")
        if m.name in seen:
            raise UserError(f"two methods are named {m.name!r}: name them with NAME=WEIGHTS or NAME=DIR")
        seen.add(m.name)


def default_name(source: str) -> str:
    """Registry names stay as they are; a file or folder gives its stem / folder name."""
    p = Path(source).expanduser()
    if p.exists():
        return (p.stem if p.is_file() else p.resolve().name) or "method"
    return source
