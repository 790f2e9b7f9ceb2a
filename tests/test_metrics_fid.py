"""FID: Inception layout vs pytorch-fid's checkpoint, forward shape, Frechet distance maths."""

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import linalg

from mmrface.errors import UserError
from mmrface.metrics.fid import FID, fid_from_features, frechet_distance, load_fid_inception
from mmrface.metrics.inception import FIDInception, _avg_pool

LAYOUT = Path(__file__).parent / "data" / "metrics_fid_inception_layout.tsv"


def _synthetic_state_dict() -> dict[str, torch.Tensor]:
    """Random tensors with exactly the keys/shapes/dtypes of pt_inception-2015-12-05-6726825d.pth.

    He-scaled conv weights and near-identity batch norms keep the features input-dependent.
    """
    g = torch.Generator().manual_seed(0)
    sd = {}
    for line in LAYOUT.read_text().splitlines()[1:]:
        key, shape, dtype = line.split("\t")
        dims = () if shape == "-" else tuple(int(s) for s in shape.split("x"))
        if dtype == "int64":
            sd[key] = torch.randint(0, 1000, dims, generator=g)
        elif key.endswith(("running_var", "bn.weight")):
            sd[key] = 1 + 0.1 * torch.rand(dims, generator=g)
        elif key.endswith(("running_mean", "bn.bias", "fc.bias")):
            sd[key] = 0.01 * torch.randn(dims, generator=g)
        else:
            fan_in = int(np.prod(dims[1:]))
            sd[key] = torch.randn(dims, generator=g) * (2.0 / fan_in) ** 0.5
    return sd


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    sd = _synthetic_state_dict()
    path = tmp_path_factory.mktemp("fid") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(sd, path)
    return path, sd


def test_layout_loads_strictly(weights_file):
    path, sd = weights_file
    model = load_fid_inception(path)
    ours = model.state_dict()
    assert list(ours) == list(sd)  # every key consumed, every key filled, same order
    assert all(torch.equal(ours[k], sd[k]) for k in sd)
    # a DataParallel-style prefix is accepted too
    prefixed = path.with_name("prefixed.pth")
    torch.save({f"module.{k}": v for k, v in sd.items()}, prefixed)
    assert torch.equal(load_fid_inception(prefixed).fc.weight, sd["fc.weight"])


def test_forward_and_fid_on_small_images(weights_file):
    fid = FID(weights=weights_file[0])
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((32, 32, 3), (40, 24, 3))]
    feats = fid.features(imgs)
    assert feats.shape == (2, 2048) and np.isfinite(feats).all()
    assert np.abs(feats[0] - feats[1]).max() > 1e-3 * np.abs(feats).max()  # depends on the input


@pytest.mark.slow
def test_fid_end_to_end(weights_file):
    # slow: scipy's sqrtm of the 2048x2048 covariance product takes ~15 s on 2 cores
    fid = FID(weights=weights_file[0])
    rng = np.random.default_rng(0)
    a = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    b = [np.clip(x.astype(int) + 60, 0, 255).astype(np.uint8) for x in a]
    assert fid(a, a) == pytest.approx(0.0, abs=1e-3)
    assert fid(a, b) > 0


def test_user_errors(tmp_path):
    exact = r"^FID needs --fid-weights pt_inception-2015-12-05-6726825d\.pth$"
    with pytest.raises(UserError, match=exact):
        FID()
    with pytest.raises(UserError, match="not found"):
        FID(weights=tmp_path / "missing.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(UserError, match="missing keys"):
        FID(weights=wrong)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read"):
        FID(weights=junk)
    with pytest.raises(UserError, match="at least 2 images"):
        fid_from_features(np.zeros((1, 4)), np.zeros((3, 4)))


def test_avg_pool_excludes_padding_and_last_block_max_pools():
    x = torch.ones(1, 1, 4, 4)
    assert torch.allclose(_avg_pool(x), x)  # count_include_pad=True would give 4/9 in the corners
    m = FIDInception()
    assert m.Mixed_7c.max_pool and not m.Mixed_7b.max_pool


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    d = frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]]))
    assert d == pytest.approx((1 - 3) ** 2 + (2 - 3) ** 2)
    # commuting (diagonal) covariances: |dmu|^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = rng.uniform(0.5, 3, 6), rng.uniform(0.5, 3, 6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expect = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expect, rel=1e-9)
    # general SPD: tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), evaluated through eigendecompositions
    q1, q2 = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = q1 @ q1.T + 0.1 * np.eye(5), q2 @ q2.T + 0.1 * np.eye(5)
    w, v = np.linalg.eigh(s1)
    r1 = v @ np.diag(np.sqrt(w)) @ v.T
    inner = np.linalg.eigvalsh(r1 @ s2 @ r1)
    expect = np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(inner))
    assert frechet_distance(np.zeros(5), s1, np.zeros(5), s2) == pytest.approx(expect, rel=1e-8)
    assert np.allclose(linalg.sqrtm(r1 @ r1), r1)  # sanity of the reference square root


def test_fid_from_features_gaussian_samples():
    rng = np.random.default_rng(1)
    f1 = rng.normal(0, 1, (4000, 3))
    f2 = rng.normal(0, 1, (4000, 3)) * 2 + 1  # N(1, 4 I): FID = 3 * 1 + 3 * (1 - 2)^2 = 6
    assert fid_from_features(f1, f2) == pytest.approx(6.0, rel=0.05)
    assert fid_from_features(f1, f1) == pytest.approx(0.0, abs=1e-8)
