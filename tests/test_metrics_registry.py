"""The metric registry: names, the uniform call convention, lazy loading, errors."""

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from mmrface.errors import UserError
from mmrface.metrics import METRICS, available_metrics, get_metric
from mmrface.metrics.psnr_ssim import psnr, ssim

DATA = Path(__file__).parent / "data"


def _read(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(DATA / name)), cv2.COLOR_BGR2RGB)


def test_names_and_specs():
    assert available_metrics() == ["psnr", "ssim", "psnr_y", "ssim_y", "lpips", "lpips_vgg", "niqe",
                                   "id_dlib", "lmd_dlib", "fid"]
    assert METRICS["id_dlib"].label == "Deg (dlib)" and METRICS["lmd_dlib"].label == "LMD (dlib-68)"
    assert not METRICS["niqe"].needs_gt and not METRICS["fid"].per_image
    assert METRICS["psnr"].higher_is_better and not METRICS["lpips"].higher_is_better


def test_uniform_call_convention():
    gt = _read("metrics_astronaut_256.png")
    restored = cv2.GaussianBlur(gt, (0, 0), 1.5)
    assert get_metric("psnr", crop_border=4)(restored, gt) == psnr(restored, gt, 4)
    assert get_metric("ssim_y")(restored, gt) == ssim(restored, gt, y_channel=True)
    assert get_metric("psnr_y")(restored, gt) > get_metric("psnr")(restored, gt) - 5
    niqe = get_metric("niqe")
    assert niqe(restored, None) > niqe(gt, None)  # no-reference: gt may be None
    ref, p1 = _read("lpips/ex_ref.png"), _read("lpips/ex_p1.png")
    assert round(get_metric("lpips")(p1, ref), 3) == 0.138
    from mmrface.metrics import _lpips_model

    assert _lpips_model("alex") is _lpips_model("alex")  # the network is built once
    face = _read("metrics_astronaut_face_128.png")
    deg = get_metric("id_dlib")(cv2.GaussianBlur(face, (0, 0), 1.0), face)
    assert 0 <= deg < 15
    assert get_metric("lmd_dlib")(face, face) == 0.0


def test_errors():
    with pytest.raises(UserError, match="unknown metric"):
        get_metric("brisque")
    with pytest.raises(UserError, match="allowed: crop_border"):
        get_metric("psnr", border=4)
    with pytest.raises(UserError, match="FID needs --fid-weights"):
        get_metric("fid")


def test_import_is_light():
    # models and their libraries load on first use, not when the registry is imported
    code = ("import sys, mmrface.metrics; "
            "heavy = ('dlib', 'scipy', 'cv2', 'mmrface.metrics.lpips'); "
            "print(','.join(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
