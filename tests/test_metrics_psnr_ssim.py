"""PSNR / SSIM (RGB and Y) against scikit-image's implementations."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mmrface.errors import UserError
from mmrface.metrics._image import rgb_to_y
from mmrface.metrics.psnr_ssim import psnr, ssim

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def pair():
    gt = cv2.cvtColor(cv2.imread(str(DATA / "metrics_astronaut_256.png")), cv2.COLOR_BGR2RGB)
    rng = np.random.default_rng(1)
    restored = cv2.GaussianBlur(gt, (0, 0), 1.2)
    restored = np.clip(restored + rng.normal(0, 6, gt.shape), 0, 255).astype(np.uint8)
    return restored, gt


def _sk_ssim(a, b, channel_axis=None):
    # skimage filters the whole image (reflect borders) and then averages the SSIM map after
    # cropping (win_size - 1) // 2 = 5 pixels per side: exactly the pixels whose 11x11 window lies
    # inside the image, i.e. the same pixels as BasicSR's valid filtering.
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=255, channel_axis=channel_axis)


def test_y_channel_matches_skimage_bt601(pair):
    _, gt = pair
    y_sk = rgb2ycbcr(gt)[..., 0]  # BT.601, [16, 235] for uint8 input
    assert np.abs(rgb_to_y(gt) - y_sk).max() < 1e-9


@pytest.mark.parametrize("border", [0, 4])
def test_psnr_matches_skimage(pair, border):
    r, g = pair
    c = (slice(border, -border or None),) * 2
    assert abs(psnr(r, g, border) - peak_signal_noise_ratio(g[c], r[c], data_range=255)) < 1e-3
    ref_y = peak_signal_noise_ratio(rgb_to_y(g)[c], rgb_to_y(r)[c], data_range=255)
    assert abs(psnr(r, g, border, y_channel=True) - ref_y) < 1e-3
    assert 20 < psnr(r, g, border) < 40


@pytest.mark.parametrize("border", [0, 4])
def test_ssim_matches_skimage(pair, border):
    r, g = pair
    c = (slice(border, -border or None),) * 2
    ours = ssim(r, g, border)
    assert abs(ours - _sk_ssim(r[c], g[c], channel_axis=2)) < 1e-3
    ours_y = ssim(r, g, border, y_channel=True)
    assert abs(ours_y - _sk_ssim(rgb_to_y(r)[c], rgb_to_y(g)[c])) < 1e-3
    assert 0.3 < ours < 0.99 and 0.3 < ours_y < 0.99


def test_ssim_equals_brute_force_valid_windows():
    # Explicit definition: one weighted 11x11 window per *valid* position, no padding anywhere.
    rng = np.random.default_rng(0)
    g = rng.integers(0, 256, (15, 13), dtype=np.uint8)
    r = np.clip(g + rng.normal(0, 20, g.shape), 0, 255).astype(np.uint8)
    k = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    w = np.outer(k, k) / np.outer(k, k).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for i in range(15 - 10):
        for j in range(13 - 10):
            a, b = g[i:i + 11, j:j + 11].astype(float), r[i:i + 11, j:j + 11].astype(float)
            ma, mb = (w * a).sum(), (w * b).sum()
            va, vb = (w * (a - ma) ** 2).sum(), (w * (b - mb) ** 2).sum()
            cov = (w * (a - ma) * (b - mb)).sum()
            vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    assert len(vals) == 15
    assert ssim(r, g) == pytest.approx(float(np.mean(vals)), abs=1e-9)


def test_identical_and_bad_inputs(pair):
    _, g = pair
    assert psnr(g, g) == float("inf")
    assert ssim(g, g) == pytest.approx(1.0)
    with pytest.raises(UserError, match="differ in shape"):
        psnr(g, g[:-1])
    with pytest.raises(UserError, match="uint8"):
        ssim(g.astype(np.float32), g)
    with pytest.raises(UserError, match="at least 11x11"):
        ssim(g[:10, :10], g[:10, :10])
    with pytest.raises(UserError, match="crop_border"):
        psnr(g, g, crop_border=200)
    with pytest.raises(UserError, match="ground-truth"):
        psnr(g, None)
