"""Losses and the self-supervised terms: values on known inputs, gradients, weight-0 behaviour."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmrface.config import load_config
from mmrface.data.degrade import Degradation
from mmrface.errors import UserError
from mmrface.losses import gan, selfsup
from mmrface.losses.basic import downsample, l1_loss, pyramid_l1
from mmrface.losses.component import ComponentDiscriminators, crop_boxes
from mmrface.losses.identity import IdentityLoss, build_identity_loss, check_identity_config
from mmrface.losses.perceptual import LPIPSLoss, PerceptualLoss, gram_matrix
from mmrface.train.objectives import GenBatch, GenOutputs, Objectives


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead (and stall on a busy machine)
    yield
    torch.set_num_threads(n)


def _img(b=2, s=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, s, s, generator=g) * 2 - 1


def _grad_of(loss, x):
    (g,) = torch.autograd.grad(loss, x)
    return g


# ---------------------------------------------------------------------------------- pixel losses
def test_l1_and_pyramid_values_and_gradients():
    hq = _img()
    out = (hq + 0.25).requires_grad_(True)
    assert l1_loss(out, hq).item() == pytest.approx(0.25, abs=1e-6)
    rgbs_exact = [downsample(hq, s) for s in (8, 16, 32)]
    assert pyramid_l1(rgbs_exact, hq).item() == pytest.approx(0.0, abs=1e-7)
    rgbs = [(r + 0.5).requires_grad_(True) for r in rgbs_exact]
    assert pyramid_l1(rgbs, hq).item() == pytest.approx(0.5, abs=1e-6)  # mean over levels
    grads = torch.autograd.grad(pyramid_l1(rgbs, hq), rgbs)
    assert all(g.abs().sum() > 0 for g in grads)
    assert _grad_of(l1_loss(out, hq), out).abs().sum() > 0
    with pytest.raises(ValueError, match="return_rgbs"):
        pyramid_l1([], hq)


def test_downsample_is_box_average():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert torch.equal(downsample(x, 2), F.avg_pool2d(x, 2))


# ---------------------------------------------------------------------------------- VGG / LPIPS
def test_perceptual_and_style_losses():
    hq = _img(1, 32)
    loss = PerceptualLoss(perceptual=True, style=True)
    p0, s0 = loss(hq, hq)
    assert p0.item() == pytest.approx(0.0, abs=1e-6) and s0.item() == pytest.approx(0.0, abs=1e-9)
    out = _img(1, 32, seed=1).requires_grad_(True)
    p, s = loss(out, hq)
    assert p.item() > 0 and s.item() > 0
    g = torch.autograd.grad(p + s, out)[0]
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert not any(q.requires_grad for q in loss.parameters())  # VGG stays frozen
    only_style = PerceptualLoss({"conv2_2": 1.0}, perceptual=False, style=True)
    p, s = only_style(out, hq)
    assert p is None and s is not None


def test_gram_matrix():
    f = torch.ones(1, 2, 3, 3)
    assert torch.allclose(gram_matrix(f), torch.full((1, 2, 2), 9 / 18))


def test_lpips_loss_gradient():
    hq = _img(1, 32)
    loss = LPIPSLoss("alex")
    assert loss(hq, hq).item() == pytest.approx(0.0, abs=1e-6)
    out = _img(1, 32, seed=2).requires_grad_(True)
    value = loss(out, hq)
    assert value.item() > 0.05
    assert torch.autograd.grad(value, out)[0].abs().sum() > 0


# ---------------------------------------------------------------------------------- GAN
def test_gan_losses_match_their_formulas():
    fake, real = torch.tensor([[0.5], [-1.0]]), torch.tensor([[2.0], [0.0]])
    assert gan.g_nonsaturating(fake).item() == pytest.approx(F.softplus(-fake).mean().item())
    expected = F.softplus(-real).mean() + F.softplus(fake).mean()
    assert gan.d_logistic(real, fake).item() == pytest.approx(expected.item())


def test_r1_penalty_of_a_linear_critic():
    a = torch.randn(3 * 8 * 8, requires_grad=True)  # the critic's weights
    x = _img(4, 8).requires_grad_(True)
    logits = x.flatten(1) @ a  # gradient w.r.t. each image is `a`
    pen = gan.r1_penalty(logits, x)
    assert pen.item() == pytest.approx(a.pow(2).sum().item(), rel=1e-5)
    (g,) = torch.autograd.grad(pen, a)  # create_graph: the penalty trains the critic
    assert torch.allclose(g, 2 * a.detach(), rtol=1e-5)


def test_lazy_r1_adam_correction():
    lr, betas = gan.lazy_r1_adam(0.002, (0.0, 0.99), 16)
    c = 16 / 17
    assert lr == pytest.approx(0.002 * c) and betas[1] == pytest.approx(0.99 ** c)
    assert gan.lazy_r1_adam(0.002, (0.0, 0.99), 0) == (0.002, (0.0, 0.99))


# ---------------------------------------------------------------------------------- components
def test_crop_boxes_takes_exact_pixels_for_aligned_boxes():
    img = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    # edges at x 3.5 .. 11.5, y 5.5 .. 13.5 in pixel-index coordinates = pixels 4..11, 6..13
    boxes = torch.tensor([[[3.5, 5.5, 11.5, 13.5]], [[0.5, 0.5, 8.5, 8.5]]])
    crops = crop_boxes(img, boxes, 8)
    assert crops.shape == (2, 1, 3, 8, 8)
    assert torch.allclose(crops[0, 0], img[0, :, 6:14, 4:12])
    assert torch.allclose(crops[1, 0], img[1, :, 1:9, 1:9])


def test_component_discriminators_shapes_and_gradient():
    comp = ComponentDiscriminators(64)
    x = _img(2, 64).requires_grad_(True)
    boxes = torch.tensor([[10.0, 20, 26, 36], [38, 20, 54, 36], [20, 40, 44, 60]]).expand(2, 3, 4)
    logits = comp(x, boxes)
    assert set(logits) == {"left_eye", "right_eye", "mouth"}
    assert all(v.shape == (2, 1, 4, 4) for v in logits.values())
    loss = sum(gan.g_nonsaturating(v) for v in logits.values())
    g = torch.autograd.grad(loss, x)[0]
    assert g[:, :, 20:36, 10:26].abs().sum() > 0  # gradient reaches the eye region
    assert g[:, :, :8, :].abs().sum() == 0  # and nothing outside the boxes


# ---------------------------------------------------------------------------------- identity
def test_identity_config_is_off_or_an_error(tmp_path):
    assert check_identity_config(0, None) == "identity: off (loss.identity = 0 and no loss.identity_weights)"
    assert build_identity_loss(0, None) is None
    with pytest.raises(UserError, match="needs loss.identity_weights"):
        check_identity_config(10, None)
    with pytest.raises(UserError, match="file not found"):
        build_identity_loss(10, str(tmp_path / "missing.pth"))


def test_identity_loss_from_a_weight_file(tmp_path):
    from mmrface.models.arcface import ArcFaceResNet
    from mmrface.weights import save_weights

    torch.manual_seed(0)
    net = ArcFaceResNet((1, 1, 1, 1))
    path = tmp_path / "arcface.safetensors"
    save_weights(path, net.state_dict(), {"arch": "arcface", "layers": [1, 1, 1, 1]})
    loss = build_identity_loss(10, str(path))
    assert isinstance(loss, IdentityLoss)
    hq = _img(2, 32)
    assert loss(hq, hq).item() == pytest.approx(0.0, abs=1e-6)
    out = _img(2, 32, seed=3).requires_grad_(True)
    value = loss(out, hq)
    assert value.item() > 0
    assert torch.autograd.grad(value, out)[0].abs().sum() > 0
    loss.train()
    assert not loss.embedder.training  # BN statistics stay fixed


# ---------------------------------------------------------------------------------- self-supervised
def test_p_identity_schedule_and_mask():
    assert selfsup.p_identity_at(0.2, 0.0, 100, 0) == pytest.approx(0.2)
    assert selfsup.p_identity_at(0.2, 0.0, 100, 50) == pytest.approx(0.1)
    assert selfsup.p_identity_at(0.2, 0.0, 100, 1000) == pytest.approx(0.0)
    assert selfsup.p_identity_at(0.3, 0.0, 0, 1000) == pytest.approx(0.3)  # no decay
    g = torch.Generator().manual_seed(0)
    mask = selfsup.identity_mask(4000, 0.25, generator=g)
    assert abs(mask.float().mean().item() - 0.25) < 0.03
    lq, hq = torch.zeros(3, 3, 4, 4), torch.ones(3, 3, 4, 4)
    x = selfsup.swap_in_hq(lq, hq, torch.tensor([True, False, True]))
    assert x[0].eq(1).all() and x[1].eq(0).all() and x[2].eq(1).all()


def _degraded_pair(seed=0, size=32):
    rng = np.random.default_rng(seed)
    hq01 = np.random.default_rng(100 + seed).random((size, size, 3)).astype(np.float32)
    hq01 = np.ascontiguousarray(np.clip(hq01 * 0.5 + 0.25, 0, 1))
    lq01, rec = Degradation.from_config({"preset": "gfpgan", "scale": [2, 4], "jitter_prob": 0.0})(hq01, rng)
    to_t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float() * 2 - 1  # noqa: E731
    return to_t(hq01), to_t(lq01), json.dumps(rec)


def test_redegrade_loss_is_small_for_the_true_face_and_has_gradient():
    pairs = [_degraded_pair(s) for s in (0, 1)]
    hq = torch.cat([p[0] for p in pairs])
    lq = torch.cat([p[1] for p in pairs])
    params = [p[2] for p in pairs]
    exact = selfsup.redegrade_loss(hq, lq, params).item()
    wrong = selfsup.redegrade_loss(hq.flip(-1), lq, params).item()
    assert exact < 0.01 < wrong
    out = hq.clone().requires_grad_(True)
    loss = selfsup.redegrade_loss(out + 0.1, lq, params)
    assert torch.autograd.grad(loss, out)[0].abs().sum() > 0
    # self-reconstruction samples (keep=False) and samples without a record are left out
    only_first = selfsup.redegrade_loss(hq, lq, params, keep=torch.tensor([True, False]))
    assert only_first.item() == pytest.approx(selfsup.redegrade_loss(hq[:1], lq[:1], params[:1]).item())
    none = selfsup.redegrade_loss(out, lq, ["null", "null"])
    assert none.item() == 0 and none.requires_grad


def test_lowpass_loss_ignores_high_frequencies():
    base = _img(2, 32)
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 0.4 - 0.2  # period-2 pattern
    out = (base + checker).requires_grad_(True)
    assert selfsup.lowpass_loss(out, base, 8).item() == pytest.approx(0.0, abs=1e-6)
    assert l1_loss(out, base).item() == pytest.approx(0.2, abs=1e-5)
    value = selfsup.lowpass_loss(out + 0.1, base, 8)
    assert value.item() == pytest.approx(0.1, abs=1e-5)
    assert torch.autograd.grad(value, out)[0].abs().sum() > 0
    with pytest.raises(ValueError, match="does not divide"):
        selfsup.lowpass(torch.zeros(1, 3, 30, 30), 8)


def test_pseudo_pairs_are_seeded_degradations():
    teacher = _img(2, 32)
    deg = Degradation.from_config("gfpgan")
    a, rec_a = selfsup.pseudo_pairs(teacher, deg, np.random.default_rng(5))
    b, rec_b = selfsup.pseudo_pairs(teacher, deg, np.random.default_rng(5))
    c, _ = selfsup.pseudo_pairs(teacher, deg, np.random.default_rng(6))
    assert a.shape == teacher.shape and torch.equal(a, b) and rec_a == rec_b
    assert not torch.equal(a, c)
    assert torch.allclose((a + 1) * 127.5, ((a + 1) * 127.5).round(), atol=1e-3)  # 8-bit values


# ---------------------------------------------------------------------------------- objectives
def _cfg(*overrides):
    return load_config("tiny", ["model.size=32", *overrides])


def test_objectives_report_every_loss_and_compute_only_active_ones():
    obj = Objectives(_cfg("loss.pyramid=0", "loss.selfsup.redegrade=0.5"), has_landmarks=False, has_unpaired=False)
    text = "\n".join(obj.report)
    assert "  l1: 1" in text and "redegrade: 0.5" in text
    for line in ("pyramid: off (loss.pyramid = 0)", "gan: off (loss.gan = 0", "style: off (loss.style = 0)",
                 "identity: off (loss.identity = 0 and no loss.identity_weights)", "component: off",
                 "unpaired: off", "mean_teacher: off", "lpips: off", "perceptual: off"):
        assert line in text
    assert obj.percep is None and obj.lpips is None and obj.identity is None
    hq, out = _img(2, 32), _img(2, 32, seed=1).requires_grad_(True)
    terms = obj.generator_terms(0, GenOutputs(out), GenBatch(hq, hq, ["null", "null"], torch.tensor([True, True])))
    assert set(terms) == {"l1", "redegrade"}  # weight 0: not computed at all
    assert obj.total(terms).item() == pytest.approx(terms["l1"].item() + 0.5 * terms["redegrade"].item())


def test_objectives_refuse_a_loss_whose_input_is_missing(tmp_path):
    with pytest.raises(UserError, match="identity_weights: file not found"):
        Objectives(_cfg("loss.identity=10", f"loss.identity_weights={tmp_path}/nope.pth"), False, False)
    with pytest.raises(UserError, match="landmarks.json"):
        Objectives(_cfg("loss.component=1"), has_landmarks=False, has_unpaired=False)
    with pytest.raises(UserError, match="unpaired_root"):
        Objectives(_cfg("loss.selfsup.unpaired=1"), has_landmarks=False, has_unpaired=False)
    with pytest.raises(UserError, match="no loss is active"):
        Objectives(_cfg("loss.l1=0", "loss.pyramid=0"), False, False)
    with pytest.raises(UserError, match=">= 0"):
        Objectives(_cfg("loss.l1=-1"), False, False)


def test_adversarial_terms_reach_the_generator_output():
    from mmrface.models import discriminator_for
    from mmrface.losses.component import ComponentDiscriminators

    cfg = _cfg("loss.gan=0.1", "loss.component=0.5", "loss.l1=0", "loss.pyramid=0")
    obj = Objectives(cfg, has_landmarks=True, has_unpaired=False)
    d, comp = discriminator_for(cfg.model), ComponentDiscriminators(32)
    d.requires_grad_(False)
    comp.requires_grad_(False)
    hq, out = _img(2, 32), _img(2, 32, seed=1).requires_grad_(True)
    boxes = torch.tensor([[4.0, 8, 14, 18], [18, 8, 28, 18], [8, 18, 24, 30]]).expand(2, 3, 4)
    terms = obj.generator_terms(0, GenOutputs(out), GenBatch(hq, hq, ["null"] * 2, torch.tensor([True, True]), boxes),
                                d, comp)
    assert set(terms) == {"gan", "component"}
    for name in ("gan", "component"):
        g = torch.autograd.grad(terms[name], out, retain_graph=True)[0]
        assert torch.isfinite(g).all() and g.abs().sum() > 0, name
    d_terms = Objectives.discriminator_terms(d.requires_grad_(True), comp.requires_grad_(True), hq, out.detach(),
                                             boxes, out.detach())
    assert set(d_terms) == {"d_gan", "d_component"}
    grads = torch.autograd.grad(d_terms["d_gan"] + d_terms["d_component"], list(d.parameters()) + list(comp.parameters()))
    assert all(torch.isfinite(g).all() for g in grads) and sum(g.abs().sum() for g in grads) > 0
