"""The training-data recipe behind `mmrface prepare --split ...`: identities, splits and filters.

    ids = IdentitySplit.from_manifest("manifest.csv")          # file -> (identity, split)
    ids = IdentitySplit.by_hash(val_fraction=0.1)              # no manifest: hash of the identity
    split = ids.split_of(photo_path)                           # "train" | "val" | None (not listed)
    keep, reason = FaceFilter(min_crop=128, colour="any").check(crop, crop_px)

Splits are by **identity**, never by photo: every photo of one person lands in the same split, so
a validation number is measured on people the model never saw. A manifest (CSV) names each
photo's split, and optionally its person (`id`, `identity`, `person` or `icpsr` column); if a
person appears in two splits the manifest is refused. Without a manifest the split is a stable
hash of the identity (by default the file stem, i.e. one person per photo as in FFHQ; pass a
regular expression whose first group is the person for names like `alice_003.jpg`).

Filters work on the aligned crop: `min_crop` is the side of the aligned square measured in the
source photo's pixels (below the model size the training target would be an up-sampled, blurred
face), and `colour` keeps colour photos, grey ones, or both, by the mean HSV saturation of the
crop's central region (0-255; greyscale prints and sepia engravings score low).
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mmrface.errors import UserError

SPLITS = ("train", "val")
ID_COLUMNS = ("id", "identity", "person", "icpsr")
COLOUR_THRESHOLD = 40.0  # mean saturation (0-255) at and above which a crop counts as colour


def colourfulness(crop: np.ndarray) -> float:
    """Mean HSV saturation (0-255) of the central half of an RGB uint8 crop."""
    h, w = crop.shape[:2]
    centre = crop[h // 4: h - h // 4, w // 4: w - w // 4]
    return float(cv2.cvtColor(np.ascontiguousarray(centre), cv2.COLOR_RGB2HSV)[..., 1].mean())


@dataclass
class FaceFilter:
    min_crop: float = 0.0  # aligned square side in source pixels
    colour: str = "any"  # any | colour | grey
    threshold: float = COLOUR_THRESHOLD

    def __post_init__(self):
        if self.colour not in ("any", "colour", "grey"):
            raise UserError(f"--colour must be any, colour or grey, got {self.colour!r}")

    def check(self, crop: np.ndarray, extent: float) -> tuple[bool, str]:
        """(keep, reason when not kept)."""
        if extent < self.min_crop:
            return False, "crop_too_small"
        if self.colour != "any":
            is_colour = colourfulness(crop) >= self.threshold
            if is_colour != (self.colour == "colour"):
                return False, "not_colour" if self.colour == "colour" else "not_grey"
        return True, ""


@dataclass
class IdentitySplit:
    """Which split (and which person) a photo belongs to."""

    val_fraction: float = 0.1
    id_pattern: re.Pattern | None = None
    table: dict[str, tuple[str, str]] | None = None  # manifest: relative path or name -> (id, split)
    by_name: dict[str, tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def by_hash(cls, val_fraction: float = 0.1, id_regex: str | None = None) -> "IdentitySplit":
        if not 0.0 < val_fraction < 1.0:
            raise UserError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
        try:
            pattern = re.compile(id_regex) if id_regex else None
        except re.error as exc:
            raise UserError(f"--id-regex {id_regex!r}: {exc}") from None
        if pattern is not None and pattern.groups < 1:
            raise UserError(f"--id-regex {id_regex!r} needs a group, e.g. '^([a-z]+)_' (the person)")
        return cls(val_fraction, pattern)

    @classmethod
    def from_manifest(cls, path: str | Path, split_column: str = "split") -> "IdentitySplit":
        path = Path(path).expanduser()
        try:
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise UserError(f"--manifest {path}: cannot read it ({exc})") from None
        if not rows or "file" not in rows[0] or split_column not in rows[0]:
            raise UserError(f"--manifest {path}: needs a header with the columns file and {split_column}")
        id_col = next((c for c in ID_COLUMNS if c in rows[0]), None)
        table: dict[str, tuple[str, str]] = {}
        person_split: dict[str, str] = {}
        for n, row in enumerate(rows, start=2):
            split = (row[split_column] or "").strip()
            if split not in SPLITS:
                raise UserError(f"--manifest {path}, line {n}: split {split!r} is not one of {list(SPLITS)}")
            person = (row[id_col] or "").strip() if id_col else ""
            person = person or Path(row["file"]).stem
            if person_split.setdefault(person, split) != split:
                raise UserError(f"--manifest {path}, line {n}: person {person} is in both splits "
                                "(a split by identity keeps every photo of a person on one side)")
            table[row["file"].strip().replace("\\", "/")] = (person, split)
        by_name = {}
        for key, value in table.items():
            by_name.setdefault(Path(key).name, value)
        return cls(table=table, by_name=by_name)

    def identity(self, photo: Path) -> str:
        if self.id_pattern is not None:
            m = self.id_pattern.search(photo.name)
            if m:
                return m.group(1)
        return photo.stem

    def lookup(self, photo: Path) -> tuple[str, str] | None:
        """(identity, split) of a photo, or None when a manifest does not list it."""
        if self.table is None:
            person = self.identity(photo)
            h = int.from_bytes(hashlib.sha256(person.encode("utf-8")).digest()[:8], "big") / 2**64
            return person, ("val" if h < self.val_fraction else "train")
        parts = photo.as_posix().split("/")
        for k in range(len(parts)):  # longest relative path the manifest knows first
            hit = self.table.get("/".join(parts[k:]))
            if hit:
                return hit
        return self.by_name.get(photo.name)
