"""NIQE: behaviour on distortions, the building blocks, and BasicSR's reference numbers."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from mmrface.errors import UserError
from mmrface.metrics.niqe import aggd_fit, block_features, matlab_imresize, niqe, pristine_model

DATA = Path(__file__).parent / "data"

# BasicSR 1.4.2 ``calculate_niqe(cv2.imread(path), crop_border, 'HWC', 'y')`` on
# tests/data/metrics_astronaut_256.png, run once outside the repo (BasicSR claims MATLAB parity:
# 5.7296 on its baboon.png). BasicSR works in float32; our default is float64, as MATLAB.
BASICSR_REFERENCE = {0: 4.135877, 4: 3.719332}


@pytest.fixture(scope="module")
def photo():
    return cv2.cvtColor(cv2.imread(str(DATA / "metrics_astronaut_256.png")), cv2.COLOR_BGR2RGB)


def test_distortions_raise_niqe(photo):
    rng = np.random.default_rng(0)
    clean = niqe(photo)
    noisy = niqe(np.clip(photo + rng.normal(0, 15, photo.shape), 0, 255).astype(np.uint8))
    blurred = niqe(cv2.GaussianBlur(photo, (0, 0), 2.0))
    assert 2.0 < clean < 6.0
    assert noisy > clean + 2.0
    assert blurred > clean + 1.5


@pytest.mark.parametrize("border", [0, 4])
def test_matches_basicsr_reference(photo, border):
    ref = BASICSR_REFERENCE[border]
    assert niqe(photo, crop_border=border, dtype=np.float32) == pytest.approx(ref, rel=2e-3)
    assert niqe(photo, crop_border=border) == pytest.approx(ref, rel=1e-2)


def test_aggd_fit_recovers_known_distributions():
    rng = np.random.default_rng(0)
    g = rng.normal(0, 1, 400_000)  # Gaussian: alpha 2, beta = sigma * sqrt(2)
    alpha, bl, br = aggd_fit(g)
    assert alpha == pytest.approx(2.0, abs=0.03)
    assert bl == pytest.approx(np.sqrt(2), rel=0.02) and br == pytest.approx(np.sqrt(2), rel=0.02)
    lap = rng.laplace(0, 0.5, 400_000)  # Laplace(b): alpha 1, beta = b
    alpha, bl, br = aggd_fit(lap)
    assert alpha == pytest.approx(1.0, abs=0.03)
    assert bl == pytest.approx(0.5, rel=0.03) and br == pytest.approx(0.5, rel=0.03)
    # AGGD(alpha 2, beta_l, beta_r = 2 beta_l): half-Gaussians with std 1 and 2 and the AGGD's
    # side masses beta_l / (beta_l + beta_r) = 1/3 and 2/3.
    left = rng.random(g.size) < 1 / 3
    asym = np.where(left, -np.abs(g), 2 * np.abs(rng.normal(0, 1, g.size)))
    alpha, bl, br = aggd_fit(asym)
    assert alpha == pytest.approx(2.0, abs=0.05)
    assert br / bl == pytest.approx(2.0, rel=0.02)
    alpha, bl, br = aggd_fit(np.zeros(100))  # flat: MATLAB's NaN behaviour
    assert alpha == pytest.approx(0.2) and np.isnan(bl) and np.isnan(br)


def test_block_features_and_model_shapes():
    rng = np.random.default_rng(0)
    f = block_features(rng.normal(0, 1, (96, 96)))
    assert len(f) == 18 and np.isfinite(f).all()
    mu, cov = pristine_model()
    assert mu.shape == (36,) and cov.shape == (36, 36) and np.allclose(cov, cov.T)


def test_matlab_imresize_half():
    # Bicubic resampling keeps linear functions exactly away from the borders; MATLAB samples
    # output pixel u (1-based) at input position 2u - 0.5.
    ramp = np.tile(np.arange(1, 41, dtype=np.float64), (24, 1))  # value = column index (1-based)
    out = matlab_imresize(ramp, 0.5)
    assert out.shape == (12, 20)
    u = np.arange(1, 21)
    assert np.allclose(out[:, 3:-3], (2 * u - 0.5)[3:-3])
    assert np.allclose(matlab_imresize(np.full((10, 14), 7.0), 0.5), 7.0)


def test_bad_inputs(photo):
    with pytest.raises(UserError, match="at least 96x96"):
        niqe(photo[:90, :90])
    with pytest.raises(UserError, match="too few textured"):
        niqe(np.full((200, 200, 3), 128, np.uint8))
    with pytest.raises(UserError, match="uint8"):
        niqe(photo.astype(np.float32))
