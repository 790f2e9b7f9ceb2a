"""Torch data sets: aligned HQ faces with on-the-fly degradation, unpaired real LQ faces, and the
paired test sets written by `mmrface make-testset`.

Every item is a dict that torch's default collate can batch: images are float32 (3, H, W) RGB
tensors in [-1, 1]; degradation records travel as JSON strings (`params`). Randomness is a pure
function of (seed, epoch, index), so an item is reproducible in any worker; call `set_epoch(e)`
to get fresh draws per epoch. Bad files are skipped with a warning naming them: at index time
(unreadable header) and at load time (a file that fails to decode is replaced by the next
readable index, deterministically).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from mmrface.data import degrade_ops as ops
from mmrface.data.degrade import Degradation, DegradationConfig, DegradationMix
from mmrface.data.crops import center_square, resize_square
from mmrface.data.landmarks import component_boxes, load_landmarks, transform_entry
from mmrface.errors import UserError
from mmrface.pipeline.imageio import ImageReadError, read_pixels, readable_images, to_8bit, to_float

#: Ranges of the HQ colour augmentation (`augment=True`): small, applied with probability 0.5.
HQ_JITTER = {"brightness": 0.05, "contrast": 0.05, "saturation": 0.05, "hue": 0.01}


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8, uint16 or float 0..1 -> float32 (3, H, W) in [-1, 1] (full precision)."""
    x = to_float(img)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))) * 2.0 - 1.0


class _ImageFolder(Dataset):
    """Shared part: file list, per-item generator, load with deterministic fallback."""

    def __init__(self, root: str | Path, size: int | None, seed: int):
        self.root = Path(root)
        self.size = size
        self.seed = int(seed)
        self.epoch = 0
        self.files = readable_images(self.root)
        if not self.files:
            raise UserError(f"no readable images (png/jpg/webp/bmp/tif) in {self.root}")
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        """Select the random draws of `epoch` (flips, jitter, degradations)."""
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def load(self, index: int) -> tuple[int, np.ndarray]:
        """(index actually used, RGB image at the file's depth: uint8 or uint16); falls back to the
        next readable file."""
        n = len(self.files)
        for k in range(n):
            i = (index + k) % n
            if i in self._bad:
                continue
            try:
                return i, read_pixels(self.files[i])
            except ImageReadError as exc:
                self._bad.add(i)
                warnings.warn(f"skipping unreadable image {exc}", stacklevel=2)
        raise UserError(f"none of the images in {self.root} can be decoded")

    def square(self, img: np.ndarray) -> np.ndarray:
        img = center_square(img)
        return img if self.size is None else resize_square(img, self.size)


class FaceFolderDataset(_ImageFolder):
    """Aligned HQ faces from a folder, degraded on the fly.

    Items: `hq`, `lq` (3, size, size) in [-1, 1]; `params` (the degradation record as a JSON
    string, "null" without degradation); `path`; `index`; `flipped`; and, when landmarks are
    used, `landmarks5` (5, 2) and `boxes` (3, 4): left eye, right eye, mouth as x0, y0, x1, y1 in
    output pixels (after the flip, left/right swapped). `landmarks`: None (off), "auto"
    (`root/landmarks.json` when it exists) or a path to such a file.
    Images of any size are centre-cropped to a square and resized to `size`.
    """

    def __init__(self, root: str | Path, size: int,
                 degradation: Degradation | str | Mapping[str, Any] | DegradationConfig | None
                 = "gfpgan", augment: bool = True, landmarks: str | Path | None = "auto",
                 seed: int = 0):
        super().__init__(root, size, seed)
        if degradation is None or isinstance(degradation, (Degradation, DegradationMix)):
            self.degradation = degradation
        else:
            self.degradation = Degradation.from_config(degradation)
        self.augment = augment
        self.landmarks: dict[str, dict] | None = None
        if landmarks == "auto":
            lm_path = self.root / "landmarks.json"
            self.landmarks = load_landmarks(lm_path) if lm_path.is_file() else None
        elif landmarks is not None:
            self.landmarks = load_landmarks(landmarks)
        if self.landmarks is not None:
            missing = [p.name for p in self.files if p.name not in self.landmarks]
            if missing:
                warnings.warn(f"{len(missing)} image(s) of {self.root} have no landmarks "
                              f"(e.g. {missing[0]}); they are left out", stacklevel=2)
                self.files = [p for p in self.files if p.name in self.landmarks]
                if not self.files:
                    raise UserError(f"no image of {self.root} has landmarks")

    def colour_flags(self) -> list[bool]:
        """Per file: is the face in colour (mean saturation >= COLOUR_THRESHOLD)? Read from the
        `colour` field `mmrface prepare` writes into root/landmarks.json, measured for files without."""
        from mmrface.data.recipe import COLOUR_THRESHOLD, colourfulness

        if getattr(self, "_colour_flags", None) is not None:
            return self._colour_flags
        lm_path, entries = self.root / "landmarks.json", {}
        if lm_path.is_file():
            try:
                entries = json.loads(lm_path.read_text())
            except (OSError, ValueError) as exc:
                raise UserError(f"cannot read landmarks file {lm_path}: {exc}") from exc
        flags = []
        for i, path in enumerate(self.files):
            entry = entries.get(path.name)
            value = entry.get("colour") if isinstance(entry, dict) else None
            if value is None:
                value = colourfulness(to_8bit(center_square(self.load(i)[1])))
            flags.append(float(value) >= COLOUR_THRESHOLD)
        self._colour_flags = flags
        return flags

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = self.rng(index)
        used, img = self.load(index)
        h0, w0 = img.shape[:2]
        hq = to_float(self.square(img))  # size x size x 3, 0..1 (16-bit files keep their precision)
        flip = bool(self.augment and rng.random() < 0.5)
        if flip:
            hq = np.ascontiguousarray(hq[:, ::-1])
        if self.augment and rng.random() < 0.5:
            hq = ops.color_jitter(hq, {
                k: (0.0 if k == "hue" else 1.0) + rng.uniform(-a, a) for k, a in HQ_JITTER.items()
            })
        if self.degradation is not None:
            lq, params = self.degradation(hq, rng)
            lq = np.round(lq * 255.0) / 255.0  # an LQ image is 8-bit, like a real photo
        else:
            lq, params = hq, None
        item: dict[str, Any] = {
            "hq": to_tensor(hq), "lq": to_tensor(lq), "params": json.dumps(params),
            "path": str(self.files[used]), "index": used, "flipped": flip,
        }
        if self.landmarks is not None:
            item.update(self._boxes(self.files[used].name, h0, w0, flip))
        return item

    def _boxes(self, name: str, h0: int, w0: int, flip: bool) -> dict[str, torch.Tensor]:
        entry = self.landmarks[name]
        side = min(h0, w0)  # centre crop, then resize to self.size
        src = entry.get("size", float(w0))
        pre = w0 / src  # points given for a src x src version of this file
        item = {k: (entry[k] + 0.5) * pre - 0.5 for k in ("5", "68") if k in entry}
        s = self.size / side
        pts = transform_entry(item, (s, s), ((w0 - side) // 2, (h0 - side) // 2),
                              flip_width=self.size if flip else None)
        return {"landmarks5": torch.from_numpy(pts["5"].astype(np.float32)),
                "boxes": torch.from_numpy(component_boxes(pts, self.size))}


class UnpairedLQDataset(_ImageFolder):
    """Real LQ photos of aligned faces without HQ (for self-supervised fine-tuning).

    Items: `lq` (3, size, size) in [-1, 1], `path`, `index`, `flipped` (`augment` flips half).
    """

    def __init__(self, root: str | Path, size: int, augment: bool = False, seed: int = 0):
        super().__init__(root, size, seed)
        self.augment = augment

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = self.rng(index)
        used, img = self.load(index)
        lq = self.square(img)
        flip = bool(self.augment and rng.random() < 0.5)
        if flip:
            lq = np.ascontiguousarray(lq[:, ::-1])
        return {"lq": to_tensor(lq), "path": str(self.files[used]), "index": used,
                "flipped": flip}


class PairedTestSet(Dataset):
    """A test set as written by `mmrface make-testset`: `root/lq/*.png`, `root/hq/*.png` and
    `root/params.json` (optional; without it, file names present in both folders are paired).

    Items: `lq`, `hq` (3, H, W) in [-1, 1] (resized to `size` when given), `name`, `params`
    (JSON string of the degradation record, "null" when unknown). Unreadable pairs are skipped
    with a warning.
    """

    def __init__(self, root: str | Path, size: int | None = None):
        self.root = Path(root)
        self.size = size
        for sub in ("lq", "hq"):
            if not (self.root / sub).is_dir():
                raise UserError(f"{self.root} is not a test set: missing folder {sub}/")
        self.meta: dict[str, Any] = {}
        records: dict[str, Any] = {}
        index_file = self.root / "params.json"
        if index_file.is_file():
            try:
                self.meta = json.loads(index_file.read_text())
                records = {it["name"]: it.get("params") for it in self.meta["items"]}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise UserError(f"cannot read {index_file}: {exc}") from exc
            names = list(records)
        else:
            hq_names = {p.name for p in readable_images(self.root / "hq")}
            names = [p.name for p in readable_images(self.root / "lq") if p.name in hq_names]
        self.items: list[tuple[str, Any]] = []
        for name in names:
            paths = [self.root / sub / name for sub in ("lq", "hq")]
            if all(p.is_file() for p in paths):
                self.items.append((name, records.get(name)))
            else:
                warnings.warn(f"skipping {name}: missing from lq/ or hq/ of {self.root}",
                              stacklevel=2)
        if not self.items:
            raise UserError(f"no LQ/HQ pairs in {self.root}")
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self.items)
        for k in range(n):
            i = (index + k) % n
            if i in self._bad:
                continue
            name, params = self.items[i]
            try:
                lq, hq = (read_pixels(self.root / sub / name) for sub in ("lq", "hq"))
            except ImageReadError as exc:
                self._bad.add(i)
                warnings.warn(f"skipping unreadable pair {exc}", stacklevel=2)
                continue
            if self.size is not None:
                lq, hq = (resize_square(center_square(a), self.size) for a in (lq, hq))
            return {"lq": to_tensor(lq), "hq": to_tensor(hq), "name": name,
                    "params": json.dumps(params)}
        raise UserError(f"none of the pairs in {self.root} can be decoded")
