"""Trainer: overfitting, bit-exact resume, the CLI, checkpoints the restorer loads, NaN guard, priors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mmrface.config import load_config
from mmrface.errors import UserError
from mmrface.train import objectives
from mmrface.train.checkpoint import list_checkpoints
from mmrface.train.trainer import NonFiniteLossError, Trainer

DATA = Path(__file__).parent / "data"
FFHQ5_512 = [(192.98, 239.95), (318.90, 240.19), (256.63, 314.02), (201.26, 371.41), (313.09, 371.15)]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: threads only add overhead (and stall on a busy machine)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """Two aligned 128-px faces with a landmarks.json (dlib points for one, the FFHQ template for the other)."""
    root = tmp_path_factory.mktemp("faces")
    shutil.copy(DATA / "face128.png", root / "a.png")
    shutil.copy(DATA / "metrics_grace_hopper_face_128.png", root / "b.png")
    marks = json.loads((DATA / "face128_landmarks.json").read_text())
    s = 128 / 512
    template = [[(x + 0.5) * s - 0.5, (y + 0.5) * s - 0.5] for x, y in FFHQ5_512]
    (root / "landmarks.json").write_text(json.dumps({"a.png": marks["face128.png"], "b.png": {"5": template}}))
    return root


def tiny(faces: Path, out: Path, *overrides: str):
    """The tiny config at 32 px on the two faces, CPU, no validation unless asked."""
    return load_config("tiny", ["model.size=32", f"data.train_root={faces}", f"train.out_dir={out}",
                                "train.device=cpu", "train.val_every=0", "train.log_every=1", *overrides])


def fit(cfg, resume=False) -> Trainer:
    trainer = Trainer(cfg, resume=resume, progress=False)
    trainer.fit()
    return trainer


def test_tiny_config_overfits_two_faces(faces, tmp_path):
    cfg = tiny(faces, tmp_path / "run", "train.steps=30", "train.ckpt_every=1000", "data.augment=false",
               "data.degradation={preset: sr4}", "loss.selfsup.p_identity=0", "train.betas=[0.9, 0.99]")
    totals = [h["total"] for h in fit(cfg).history]
    # measured: 1.22 -> 0.37 (x0.30) in 30 steps on 2 fixed faces
    assert len(totals) == 30
    assert sum(totals[-3:]) / 3 < 0.4 * totals[0]


def _weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"step_{step:08d}.safetensors"))


def test_resume_is_bit_exact_on_cpu(faces, tmp_path):
    # everything random is on: augmentation, degradations, self-reconstruction draws, fidelity,
    # prior noise, GAN with R1, component discriminators, re-degradation
    opts = ["train.ckpt_every=5", "loss.gan=0.1", "loss.r1_every=2", "loss.component=0.1",
            "loss.selfsup.redegrade=0.5", "loss.selfsup.p_identity=0.5", "train.fidelity_range=[0.5, 1.0]"]
    fit(tiny(faces, tmp_path / "straight", "train.steps=10", *opts))
    fit(tiny(faces, tmp_path / "split", "train.steps=5", *opts))
    t = fit(tiny(faces, tmp_path / "split", "train.steps=10", *opts), resume=True)
    assert t.start == 5 and len(t.history) == 5
    a, b = _weights(tmp_path / "straight", 10), _weights(tmp_path / "split", 10)
    assert a.keys() == b.keys() and {k.split(".")[0] for k in a} == {"g", "g_ema", "d", "comp"}
    assert all(torch.equal(a[k], b[k]) for k in a)
    oa = load_file(str(tmp_path / "straight/checkpoints/step_00000010.optim.safetensors"))
    ob = load_file(str(tmp_path / "split/checkpoints/step_00000010.optim.safetensors"))
    assert oa.keys() == ob.keys() and all(torch.equal(oa[k], ob[k]) for k in oa)


def test_stop_after_ends_the_run_early_on_the_same_lr_schedule(faces, tmp_path):
    # train.stop_after: the first 6 steps of a 10-step cosine run, bit-exact, with a checkpoint at step 6
    opts = ["train.lr_schedule=cosine", "train.warmup_steps=2", "train.steps=10"]
    fit(tiny(faces, tmp_path / "full", "train.ckpt_every=2", *opts))
    t = fit(tiny(faces, tmp_path / "stop", "train.ckpt_every=4", "train.stop_after=6", *opts))
    assert len(t.history) == 6 and [s for s, _ in list_checkpoints(tmp_path / "stop" / "checkpoints")] == [4, 6]
    a, b = _weights(tmp_path / "full", 6), _weights(tmp_path / "stop", 6)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert load_file(str(tmp_path / "stop" / "latest_ema.safetensors")).keys()
    with pytest.raises(UserError, match="stop_after"):
        tiny(faces, tmp_path / "bad", "train.stop_after=0")


def test_max_minutes_stops_with_a_checkpoint_and_resumes(faces, tmp_path):
    # a tiny budget: the run stops after its first step, saved; --resume carries on to the end
    out = tmp_path / "budget"
    t = fit(tiny(faces, out, "train.steps=3", "train.ckpt_every=100", "train.max_minutes=0.0001"))
    assert len(t.history) == 1 and [s for s, _ in list_checkpoints(out / "checkpoints")] == [1]
    assert "train.max_minutes" in (out / "run.log").read_text()
    t = fit(tiny(faces, out, "train.steps=3", "train.ckpt_every=100"), resume=True)
    assert [s for s, _ in list_checkpoints(out / "checkpoints")][-1] == 3


def test_cli_train_writes_a_checkpoint_the_restorer_loads(faces, tmp_path, capsys):
    from mmrface.cli import main
    from mmrface.models import load_model

    out = tmp_path / "cli"
    rc = main(["train", "--config", "tiny", "--set", "train.steps=20", "--set",
               f"data.train_root={faces}", "--set", "train.device=cpu", "--set", "train.val_every=10",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    log = (out / "run.log").read_text()
    for text in ("l1: 1", "pyramid: 1 (decoder RGBs, first 1000 steps)",
                 "identity: off (loss.identity = 0 and no loss.identity_weights)", "gan: off", "step 20/20"):
        assert text in log and text in printed
    rows = (out / "val.csv").read_text().splitlines()
    assert rows[0] == "step,psnr,lpips" and [r.split(",")[0] for r in rows[1:]] == ["10", "20"]
    assert all(float(r.split(",")[1]) > 5 and 0 < float(r.split(",")[2]) < 1.5 for r in rows[1:])
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [20]  # ckpt_every 100: the final one
    assert not list(out.rglob("*.tmp*"))
    model, meta = load_model(out / "latest_ema.safetensors")
    assert model.size == 64 and meta["step"] == "20"
    ema = {k[len("g_ema."):]: v for k, v in _weights(out, 20).items() if k.startswith("g_ema.")}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ema.items())
    with torch.no_grad():
        y = model(torch.zeros(1, 3, 64, 64), noise_mode="const")
    assert y.shape == (1, 3, 64, 64) and torch.isfinite(y).all()
    # a second run into the same folder must not mix with the first one
    assert main(["train", "--config", "tiny", "--set", f"data.train_root={faces}", "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(faces, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_l1 = objectives.l1_loss

    def flaky_l1(out, target):
        calls["n"] += 1
        value = real_l1(out, target)
        return value * float("nan") if calls["n"] == 4 else value

    monkeypatch.setattr(objectives, "l1_loss", flaky_l1)
    run = tmp_path / "nan"
    trainer = Trainer(tiny(faces, run, "train.steps=6", "train.ckpt_every=2"), progress=False)
    with pytest.raises(NonFiniteLossError, match=r"loss 'l1' is nan at step 4; training stopped") as err:
        trainer.fit()
    assert isinstance(err.value, UserError)  # printed as one line by the CLI
    assert "step_00000002.json" in str(err.value)
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [2]
    from mmrface.weights import read_metadata

    assert read_metadata(run / "latest_ema.safetensors")["step"] == "2"
    assert "loss 'l1' is nan" in (run / "run.log").read_text()


def test_frozen_prior_is_loaded_logged_and_stays_bit_identical(faces, tmp_path):
    from mmrface.models import build_model
    from mmrface.weights import file_sha256, save_weights

    model_cfg = tiny(faces, tmp_path).model
    torch.manual_seed(123)
    prior = build_model(model_cfg).prior
    prior_cfg = {k: v for k, v in model_cfg["prior"].items() if k not in ("trainable", "init", "lr_mul")}
    path = tmp_path / "prior.safetensors"
    save_weights(path, prior.state_dict(), {"arch": "stylegan2", "size": 32, "style_dim": model_cfg["style_dim"],
                                            **prior_cfg})
    run = tmp_path / "frozen"
    t = fit(tiny(faces, run, "train.steps=3", f"train.prior_init={path}", "model.prior.trainable=false"))
    assert all(torch.equal(v, prior.state_dict()[k]) for k, v in t.G.prior.state_dict().items())
    assert all(torch.equal(v, prior.state_dict()[k]) for k, v in t.ema.model.prior.state_dict().items())
    assert all(not p.requires_grad for p in t.G.prior.parameters())
    assert sum(len(g["params"]) for g in t.opt_g.param_groups) == sum(
        1 for n, p in t.G.named_parameters() if not n.startswith("prior."))
    assert f"sha256 {file_sha256(path)} (frozen)" in (run / "run.log").read_text()
    with pytest.raises(UserError, match="frozen random prior"):
        Trainer(tiny(faces, tmp_path / "x", "model.prior.trainable=false"), progress=False)


def test_user_errors_before_training(faces, tmp_path):
    with pytest.raises(UserError, match="identity_weights: file not found"):
        Trainer(tiny(faces, tmp_path / "a", "loss.identity=10", f"loss.identity_weights={tmp_path}/arc.pth"))
    with pytest.raises(UserError, match="train_root: folder not found"):
        Trainer(tiny(tmp_path / "nowhere", tmp_path / "b"))
    with pytest.raises(UserError, match="no checkpoint"):
        Trainer(tiny(faces, tmp_path / "c"), resume=True)
    with pytest.raises(UserError, match="fidelity_range"):
        Trainer(tiny(faces, tmp_path / "d", "train.fidelity_range=[0.5, 2]"))
    assert not (tmp_path / "a").exists()


def test_keep_last_unpaired_and_mean_teacher(faces, tmp_path):
    unpaired = tmp_path / "real_lq"
    unpaired.mkdir()
    shutil.copy(DATA / "metrics_astronaut_face_128.png", unpaired / "x.png")
    run = tmp_path / "u"
    t = fit(tiny(faces, run, "train.steps=4", "train.ckpt_every=1", "train.keep_last=2",
                 f"data.unpaired_root={unpaired}", "loss.selfsup.unpaired=1", "loss.selfsup.mean_teacher=0.5",
                 "loss.selfsup.lowpass_scale=4", "loss.gan=0.1"))
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [3, 4]
    assert len(list((run / "checkpoints").iterdir())) == 6
    assert {"unpaired", "mean_teacher", "gan", "d_gan"} <= set(t.history[-1])
    log = (run / "run.log").read_text()
    assert "unpaired: 1 (low-pass L1 at 1/4 on real LQ + gan 0.1 on their outputs)" in log
    assert "mean_teacher: 0.5 (EMA teacher on real LQ of data.unpaired_root)" in log


def test_loader_workers_give_the_same_batches(faces):
    from mmrface.data.datasets import FaceFolderDataset
    from mmrface.train.data import StepBatches

    ds = FaceFolderDataset(faces, 32, "gfpgan", augment=True, landmarks=None, seed=0)
    direct = StepBatches(ds, 2, seed=0, num_workers=0).iterate(3)
    workers = StepBatches(ds, 2, seed=0, num_workers=2).iterate(3)
    for _ in range(3):
        a, b = next(direct), next(workers)
        assert torch.equal(a["lq"], b["lq"]) and torch.equal(a["hq"], b["hq"]) and a["params"] == b["params"]


def test_validation_on_a_make_testset_folder(faces, tmp_path):
    from mmrface.data.testset import make_testset
    from mmrface.models import build_model
    from mmrface.train.validate import Validator

    make_testset(faces, tmp_path / "val", preset="sr4", seed=3, size=32)
    cfg = tiny(faces, tmp_path / "v", f"data.val_root={tmp_path / 'val'}", "data.val_count=0")
    v = Validator(cfg, 32, torch.device("cpu"), tmp_path)
    assert v.lq.shape == (2, 3, 32, 32) and "2 of 2 pairs" in v.where
    base = v.baseline()
    assert 15 < base["psnr"] < 40 and 0 <= base["lpips"] < 1
    scores = v.evaluate(build_model(cfg.model))
    assert all(np.isfinite(list(scores.values())))
    v.log(7, scores)
    assert (tmp_path / "val.csv").read_text().splitlines()[1].startswith("7,")


def test_converted_rosinality_prior_frozen_in_training(faces, tmp_path):
    """issue 9: a prior imported from a third-party fixture, frozen: bit-identical after training."""
    from mmrface.cli import main
    from mmrface.weights import load_weights

    prior_file = tmp_path / "rosinality_prior.safetensors"
    fixture = Path(__file__).parent / "fixtures" / "rosinality_tiny64_ckpt.pt"
    assert main(["weights", "import", str(fixture), "-o", str(prior_file)]) == 0
    prior_sd, _ = load_weights(prior_file)
    # the MMRFaceNet prior section matching the fixture's generator (64 px, style 64, cm 2 x 1/16, FIR)
    cfg = tiny(faces, tmp_path / "run", "model.size=64", "model.style_dim=64", "train.steps=3",
               "model.prior={n_mlp: 2, channel_multiplier: 2, narrow: 0.0625, max_channels: 512, "
               "upsample: blur, equalized_lr: true, gain_mode: post, trainable: false}",
               f"train.prior_init={prior_file}")
    trainer = Trainer(cfg, progress=False)
    encoder_before = {k: v.clone() for k, v in trainer.G.encoder.state_dict().items()}
    trainer.fit()
    after = trainer.G.prior.state_dict()
    assert all(torch.equal(after[k], v) for k, v in prior_sd.items() if k in after)
    assert set(prior_sd) == set(after)  # every converted tensor has its place in our prior
    assert any(not torch.equal(v, trainer.G.encoder.state_dict()[k]) for k, v in encoder_before.items())


def _scaled_l1(monkeypatch, factors):
    """Make the l1 term `factors[call]` times larger on given calls (a finite blow-up)."""
    calls = {"n": 0}
    real_l1 = objectives.l1_loss

    def l1(out, target):
        calls["n"] += 1
        return real_l1(out, target) * factors.get(calls["n"], 1.0)

    monkeypatch.setattr(objectives, "l1_loss", l1)


def test_finite_blow_up_stops_the_run_naming_the_loss_before_it_reaches_a_checkpoint(faces, tmp_path, monkeypatch):
    _scaled_l1(monkeypatch, {k: 1e4 for k in range(6, 100)})
    run = tmp_path / "blowup"
    trainer = Trainer(tiny(faces, run, "train.steps=12", "train.ckpt_every=4", "train.divergence_patience=3"),
                      progress=False)
    with pytest.raises(NonFiniteLossError, match=r"loss 'l1' is .*x its running median .*3 steps in a row\) at step 8"):
        trainer.fit()
    # steps 6 and 7 were skipped, the checkpoint of step 4 is the one to resume from
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [4]
    assert "step 6 skipped: loss 'l1'" in (run / "run.log").read_text()


def test_a_single_spike_is_skipped_and_training_goes_on(faces, tmp_path, monkeypatch):
    _scaled_l1(monkeypatch, {5: 1e4})
    t = fit(tiny(faces, tmp_path / "spike", "train.steps=8", "train.ckpt_every=100"))
    assert len(t.history) == 8
    assert "grad_norm" not in t.history[4] and all("grad_norm" in h for i, h in enumerate(t.history) if i != 4)


def test_resume_refuses_a_changed_recipe_unless_allowed(faces, tmp_path):
    run = tmp_path / "r"
    fit(tiny(faces, run, "train.steps=2", "train.ckpt_every=2"))
    with pytest.raises(UserError, match=r"data.batch_size, train.lr_g changed .*--allow-changes"):
        Trainer(tiny(faces, run, "train.steps=4", "data.batch_size=1", "train.lr_g=0.001"), resume=True, progress=False)
    longer = Trainer(tiny(faces, run, "train.steps=4"), resume=True, progress=False)  # more steps: always fine
    assert longer.start == 2
    allowed = Trainer(tiny(faces, run, "train.steps=4", "train.lr_g=0.001"), resume=True, progress=False,
                      allow_changes=True)
    assert allowed.start == 2


def test_init_starts_from_every_weight_of_a_restorer_and_refuses_another_model(faces, tmp_path):
    first = tiny(faces, tmp_path / "a", "train.steps=3", "train.ckpt_every=1000")
    fit(first)
    init = tmp_path / "a" / "latest_ema.safetensors"
    saved = load_file(str(init))
    trainer = Trainer(tiny(faces, tmp_path / "b", "train.steps=2", f"train.init={init}"), progress=False)
    state = trainer.run.G.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items()) and saved.keys() == state.keys()
    assert f"init: {init}" in trainer.run.prior_line
    fresh = Trainer(tiny(faces, tmp_path / "c", "train.steps=2"), progress=False).run.G.state_dict()
    assert any(not torch.equal(fresh[k], v) for k, v in saved.items())  # init changed the start
    with pytest.raises(UserError, match="model differs from this config's in size"):
        Trainer(tiny(faces, tmp_path / "d", "model.size=64", f"train.init={init}"), progress=False)


def test_lpips_fidelity_leaves_full_fidelity_to_pixel_losses(faces, tmp_path):
    def lpips_terms(w: float, share: float) -> list[float]:
        cfg = tiny(faces, tmp_path / f"w{w}_{share}", "train.steps=2", "train.ckpt_every=1000", "loss.lpips=1",
                   f"loss.lpips_fidelity={share}", f"train.fidelity_range=[{w}, {w}]")
        trainer = fit(cfg)
        assert any("x (1 - 1 w) per sample" in line for line in trainer.run.obj.report) == (share == 1)
        return [h["lpips"] for h in trainer.history]

    assert lpips_terms(1.0, 1.0) == [0.0, 0.0]  # w = 1: no perceptual pull at all
    half, plain = lpips_terms(0.5, 1.0), lpips_terms(0.5, 0.0)
    assert all(p > 0.05 for p in plain)
    assert half[0] == pytest.approx(0.5 * plain[0], rel=1e-4)  # same first step, half the weight per sample
    assert half[1] != pytest.approx(0.5 * plain[1], rel=1e-4)  # ... so the two runs' updates differ


def test_fidelity_full_trains_a_share_of_samples_at_exactly_w_1(faces, tmp_path):
    from mmrface.train.steps import fidelity_draw

    run = Trainer(tiny(faces, tmp_path / "f", "train.fidelity_range=[0, 0.5]", "train.fidelity_full=0.3"),
                  progress=False).run
    torch.manual_seed(0)
    w = torch.cat([fidelity_draw(run, 1000) for _ in range(4)])
    full = w == 1
    assert 0.25 < full.float().mean().item() < 0.35  # the share at w = 1
    assert (w[~full] <= 0.5).all() and w[~full].std() > 0.1  # the rest uniform in the range
    run.cfg.train.fidelity_full = 0.0
    assert (fidelity_draw(run, 100) <= 0.5).all()
    run.cfg.train.fidelity_range, run.cfg.train.fidelity_full = (1.0, 1.0), 0.5
    assert fidelity_draw(run, 3) == 1.0  # a fixed w stays a float


def test_fidelity_full_from_changes_the_share_at_given_steps(faces, tmp_path):
    from mmrface.train.steps import fidelity_draw

    cfg = tiny(faces, tmp_path / "g", "train.fidelity_range=[0, 0.5]", "train.fidelity_full=0",
               "train.fidelity_full_from={10: 1.0, '20': 0.5}")
    assert cfg.train.fidelity_full_from == {10: 1.0, 20: 0.5}  # a checkpoint's JSON keys read back as steps
    run = Trainer(cfg, progress=False).run
    torch.manual_seed(0)
    assert (fidelity_draw(run, 500, step=9) <= 0.5).all()
    assert (fidelity_draw(run, 500, step=10) == 1).all()
    assert 0.4 < (fidelity_draw(run, 2000, step=25) == 1).float().mean().item() < 0.6
    for bad in ("{-1: 0.5}", "{5: 1.5}", "{a: 0.5}"):
        with pytest.raises(UserError, match="fidelity_full_from"):
            tiny(faces, tmp_path / "h", f"train.fidelity_full_from={bad}")
    # null clears a base config's schedule (a deep merge of {} would keep it): the fine-tune recipe
    assert load_config("small").train.fidelity_full_from
    assert load_config("small_finetune").train.fidelity_full_from == {}
