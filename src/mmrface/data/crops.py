"""Square crops for the data sets: centre square, then resize to the training size.

Both work at any depth (uint8, uint16 or float images, HxW or HxWxC).
"""

from __future__ import annotations

import cv2
import numpy as np


def center_square(img: np.ndarray) -> np.ndarray:
    """Central square crop (aligned faces are square already; others lose the margins)."""
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return img[top:top + s, left:left + s]


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """Resize a square image to size x size: area filter when shrinking, bicubic when growing."""
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_CUBIC
    return cv2.resize(img, (size, size), interpolation=interp).reshape(size, size, -1)
