"""Frechet Inception Distance, computed as pytorch-fid does.

* Features: the 2048-d pool3 output of the FID Inception (:mod:`mmrface.metrics.inception`),
  with the user's ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid's port of the TF
  graph). Nothing is downloaded: without a weight file FID is unavailable.
* Input: uint8 HxWx3 RGB images, scaled to [0, 1]; the network resizes to 299x299 itself.
* Distance between the Gaussians (mu1, S1), (mu2, S2) of the two feature sets (sample covariance,
  ``ddof=1``): ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrtm(S1 S2))``.

FID is a set-level metric and strongly biased for small sets; report the set sizes with it.
On 2 CPU cores the 2048x2048 matrix square root alone takes about 15 s.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from scipy import linalg

from mmrface.errors import UserError
from mmrface.metrics._image import check_image
from mmrface.metrics.inception import FIDInception

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
_NO_WEIGHTS = f"FID needs --fid-weights {FID_WEIGHTS_NAME}"


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise UserError(f"FID statistics differ in shape: {mu1.shape}/{sigma1.shape} "
                        f"vs {mu2.shape}/{sigma2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        # Singular products are common with small sets (fewer samples than dimensions); a
        # non-finite result is handled below, as pytorch-fid does, by regularising the diagonals.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            imag = np.abs(covmean.imag).max()
            raise UserError(f"FID: matrix square root has a large imaginary part ({imag:.3g})")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, sample covariance) of (N, D) features; N >= 2."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise UserError(f"FID needs at least 2 images per set, got features of shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID between two (N, D) feature sets."""
    return frechet_distance(*feature_stats(features1), *feature_stats(features2))


def load_fid_inception(path: str | Path | None) -> FIDInception:
    """FID Inception with the weights of ``path`` (strict load; ``module.`` prefixes stripped)."""
    if path is None or str(path) == "":
        raise UserError(_NO_WEIGHTS)
    path = Path(path)
    if not path.is_file():
        from mmrface.weights import registry, verify_file

        entry = registry().get(str(path))  # e.g. pytorch-fid-inception, fetched by `mmrface weights fetch`
        if entry is None:
            raise UserError(f"FID weights not found: {path} ({_NO_WEIGHTS}, or `mmrface weights fetch "
                            f"pytorch-fid-inception` and the name)")
        verify_file(entry.path, entry.sha256, entry.size)
        path = entry.path
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, not a torch checkpoint, pickled objects
        first = (str(exc).splitlines() or [""])[0]
        raise UserError(f"cannot read FID weights {path}: {exc.__class__.__name__}: {first}") from exc
    if not isinstance(sd, dict):
        raise UserError(f"FID weights {path}: expected a state dict, got {type(sd).__name__}")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    model = FIDInception()
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise UserError(f"{path} is not {FID_WEIGHTS_NAME}: {len(missing)} missing keys "
                        f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")
    try:
        model.load_state_dict(sd, strict=True)  # also checks the shapes
    except RuntimeError as exc:
        raise UserError(f"{path}: tensor shapes differ from {FID_WEIGHTS_NAME}") from exc
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class FID:
    """FID between two sets of uint8 RGB images: ``FID(weights=path)(restored_list, gt_list)``.

    Without ``weights`` the metric is off: constructing it raises the UserError
    "FID needs --fid-weights pt_inception-2015-12-05-6726825d.pth".
    """

    def __init__(self, weights: str | Path | None = None, batch_size: int = 16,
                 device: str = "cpu") -> None:
        self.model = load_fid_inception(weights).to(device)
        self.batch_size = batch_size
        self.device = device

    @torch.no_grad()
    def features(self, images: Iterable[np.ndarray]) -> np.ndarray:
        """(N, 2048) float64 pool3 features of uint8 HxWx3 RGB images (sizes may differ)."""
        out, batch = [], []
        for img in images:
            t = torch.from_numpy(np.ascontiguousarray(check_image(img))).permute(2, 0, 1).float() / 255.0
            batch.append(torch.nn.functional.interpolate(t[None], size=(299, 299), mode="bilinear",
                                                         align_corners=False)[0])
            if len(batch) == self.batch_size:
                out.append(self.model(torch.stack(batch).to(self.device)).cpu())
                batch = []
        if batch:
            out.append(self.model(torch.stack(batch).to(self.device)).cpu())
        if not out:
            raise UserError("FID: no images given")
        return torch.cat(out).double().numpy()

    def __call__(self, restored: Sequence[np.ndarray], gt: Sequence[np.ndarray]) -> float:
        """FID between the restored set and the ground-truth set."""
        return fid_from_features(self.features(restored), self.features(gt))
