"""Input checks and colour conversions shared by the metrics.

Every metric takes numpy uint8 images, HxWx3 RGB (HxW grey where stated). Bad input raises
:class:`mmrface.errors.UserError` with a one-line message.
"""

from __future__ import annotations

import numpy as np

from mmrface.errors import UserError

# ITU-R BT.601 "studio swing" luma from RGB in [0, 255] (MATLAB's rgb2ycbcr, BasicSR's y channel).
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64) / 255.0
_Y_OFFSET = 16.0


def check_image(img: np.ndarray, name: str = "image", allow_gray: bool = False) -> np.ndarray:
    """Return ``img`` if it is a uint8 HxWx3 (or HxW when ``allow_gray``) array, else raise."""
    if not isinstance(img, np.ndarray):
        raise UserError(f"{name}: expected a numpy array, got {type(img).__name__}")
    if img.dtype != np.uint8:
        raise UserError(f"{name}: expected dtype uint8, got {img.dtype}")
    ok = (img.ndim == 3 and img.shape[2] == 3) or (allow_gray and img.ndim == 2)
    if not ok:
        want = "HxWx3 or HxW" if allow_gray else "HxWx3 RGB"
        raise UserError(f"{name}: expected a {want} image, got shape {tuple(img.shape)}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise UserError(f"{name}: empty image of shape {tuple(img.shape)}")
    return img


def check_pair(restored: np.ndarray, gt: np.ndarray | None, allow_gray: bool = False) -> None:
    """Check a restored/ground-truth pair: both valid images of the same shape."""
    check_image(restored, "restored", allow_gray)
    if gt is None:
        raise UserError("this metric needs a ground-truth image (gt is None)")
    check_image(gt, "gt", allow_gray)
    if restored.shape != gt.shape:
        raise UserError(f"restored {tuple(restored.shape)} and gt {tuple(gt.shape)} differ in shape")


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """Y of YCbCr (BT.601, range [16, 235]) of a uint8 RGB image, as float64 HxW, not rounded."""
    return img.astype(np.float64) @ _Y_WEIGHTS + _Y_OFFSET


def crop(img: np.ndarray, border: int) -> np.ndarray:
    """Remove ``border`` pixels from each side (no-op for 0)."""
    if border < 0:
        raise UserError(f"crop_border must be >= 0, got {border}")
    if border == 0:
        return img
    if 2 * border >= min(img.shape[0], img.shape[1]):
        raise UserError(f"crop_border {border} leaves nothing of a {img.shape[1]}x{img.shape[0]} image")
    return img[border:-border, border:-border]


def to_tensor(img: np.ndarray) -> "torch.Tensor":  # noqa: F821 (torch imported lazily)
    """uint8 HxWx3 RGB -> float32 tensor (1, 3, H, W) in [-1, 1]."""
    import torch  # only the network metrics need torch; PSNR/SSIM/NIQE stay numpy-only

    check_image(img)
    t = torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1).float()
    return (t / 127.5 - 1.0).unsqueeze(0)
