"""Face landmarks of a data-set folder and the eye / mouth boxes derived from them.

`landmarks.json` in a face folder maps file names to points in that image's pixels (pixel-index
coordinates, (0, 0) = centre of the top-left pixel):

    {"0001.png": {"5": [[x, y] * 5], "68": [[x, y] * 68], "size": 512}, ...}

"5" is (left eye, right eye, nose, left mouth corner, right mouth corner) as seen in the image,
"68" the iBUG/dlib 68 points (optional, preferred for the boxes), "size" the side of the square
image the points refer to (optional: the file's own width is used).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mmrface.errors import UserError

#: Indices of the 68-point scheme: eye seen on the image's left, on its right, outer lip.
EYE_L68, EYE_R68, MOUTH68 = slice(36, 42), slice(42, 48), slice(48, 60)
#: 5-point order after a horizontal flip (left/right eye and mouth corners swap).
FLIP5 = [1, 0, 2, 4, 3]


def load_landmarks(path: str | Path) -> dict[str, dict]:
    """Read and validate a landmarks.json; values become float arrays ("5": (5, 2), ...)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read landmarks file {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected an object mapping file names to landmarks")
    out = {}
    for name, entry in raw.items():
        try:
            item = {}
            for key, n in (("5", 5), ("68", 68)):
                if key in entry:
                    pts = np.asarray(entry[key], dtype=np.float64)
                    if pts.shape != (n, 2):
                        raise ValueError(f'"{key}" must hold {n} [x, y] pairs')
                    item[key] = pts
            if not item:
                raise ValueError('needs "5" or "68" points')
            if "5" not in item:
                item["5"] = five_from_68(item["68"])
            if entry.get("size") is not None:
                item["size"] = float(entry["size"])
        except (TypeError, ValueError, AttributeError) as exc:
            raise UserError(f"{path}: bad entry for {name!r}: {exc}") from exc
        out[name] = item
    return out


def five_from_68(p68: np.ndarray) -> np.ndarray:
    """Eye centres, nose tip and mouth corners of the 68-point scheme, (5, 2)."""
    return np.stack([p68[EYE_L68].mean(0), p68[EYE_R68].mean(0), p68[30], p68[48], p68[54]])


def transform_entry(item: dict, scale_xy: tuple[float, float], offset_xy: tuple[float, float],
                    flip_width: int | None = None) -> dict:
    """Points mapped into an output image.

    A pixel-index point x goes to (x - offset + 0.5) * scale - 0.5 (the half-pixel convention of
    cv2.resize); with `flip_width` W the result is mirrored (x -> W - 1 - x) and the 5 points are
    reordered so that index 0 is again the eye on the image's left.
    """
    s = np.asarray(scale_xy)
    o = np.asarray(offset_xy)
    out = {k: (item[k] - o + 0.5) * s - 0.5 for k in ("5", "68") if k in item}
    if flip_width is not None:
        for k in out:
            out[k][:, 0] = flip_width - 1 - out[k][:, 0]
        out["5"] = out["5"][FLIP5]
        out["flipped"] = True
    return out


def component_boxes(item: dict, size: int) -> np.ndarray:
    """(3, 4) float32 square boxes x0, y0, x1, y1 (left eye, right eye, mouth) clipped to the
    image, from the 68 points when present (`transform_entry` output), else from the 5 points.

    Eye half-side: max(0.28 * inter-ocular distance, 0.75 * eye width) (about 70 px at 512, as
    GFPGAN's enlarged eye boxes); mouth: max(0.4 * IOD, 0.6 * mouth width / height).
    """
    p5 = item["5"]
    if "68" in item:
        p68 = item["68"]
        left, right = p68[EYE_L68], p68[EYE_R68]
        if item.get("flipped"):
            left, right = right, left
        eyes = [left.mean(0), right.mean(0)]
        eye_extent = max(np.ptp(g, axis=0).max() for g in (left, right))
        mouth = p68[MOUTH68]
        mouth_c = (mouth.min(0) + mouth.max(0)) / 2
        mouth_extent = np.ptp(mouth, axis=0).max()
    else:
        eyes = [p5[0], p5[1]]
        eye_extent = 0.0
        mouth_c = (p5[3] + p5[4]) / 2
        mouth_extent = float(np.linalg.norm(p5[4] - p5[3]))
    iod = float(np.linalg.norm(eyes[1] - eyes[0]))
    eye_half = max(0.28 * iod, 0.75 * eye_extent)
    mouth_half = max(0.4 * iod, 0.6 * mouth_extent)
    boxes = [np.r_[c - eye_half, c + eye_half] for c in eyes]
    boxes.append(np.r_[mouth_c - mouth_half, mouth_c + mouth_half])
    return np.clip(np.asarray(boxes), 0, size).astype(np.float32)
