"""Converters: numeric parity with the reference code, every full-size layout, clear errors."""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmrface.cli import main
from mmrface.convert import convert_file, convert_state
from mmrface.errors import UserError
from mmrface.models.arcface import ArcFaceResNet, load_arcface
from mmrface.models.gfpgan_v1clean import GFPGANv1Clean
from mmrface.models.ops import make_fir_kernel
from mmrface.models.stylegan2 import StyleGAN2Generator
from mmrface.models import load_model

HERE = Path(__file__).resolve().parent
FIX, LAYOUTS = HERE / "fixtures", HERE / "layouts"


def fixture_io(name: str) -> dict:
    return torch.load(FIX / f"{name}_io.pt", weights_only=True)


def build(conv) -> torch.nn.Module:
    cfg = dict(conv.config)
    arch = cfg.pop("arch")
    model = {"stylegan2": StyleGAN2Generator, "gfpgan_v1clean": GFPGANv1Clean}[arch](**cfg)
    model.load_state_dict(conv.state_dict, strict=True)
    return model.eval()


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


# ---- parity on the reference fixtures ----------------------------------------------------------
@torch.no_grad()
def test_rosinality_parity():
    conv = convert_file(FIX / "rosinality_tiny64_ckpt.pt")
    assert conv.source_format == "rosinality"
    assert conv.config["upsample"] == "blur" and conv.config["equalized_lr"] and conv.config["narrow"] == 0.0625
    g, io = build(conv), fixture_io("rosinality_tiny64")
    assert torch.equal(g.latent_avg, torch.load(FIX / "rosinality_tiny64_ckpt.pt", weights_only=True)["latent_avg"])
    assert maxdiff(g([io["z"]], noise=io["noise"])[0], io["img"]) < 1e-4
    assert maxdiff(g([io["z"]], noise=io["noise"], truncation=io["truncation"])[0], io["img_trunc"]) < 1e-4
    assert maxdiff(g(io["w_plus"], input_is_latent=True, noise=io["noise"])[0], io["img_wplus"]) < 1e-4
    assert maxdiff(g([io["z"]], noise_mode="const")[0], io["img_stored_noise"]) < 1e-4


@torch.no_grad()
def test_gfpgan_clean_prior_parity():
    conv = convert_file(FIX / "gfpgan_clean_stylegan2_tiny64_ckpt.pth")
    assert conv.source_format == "gfpgan-clean" and conv.config["gain_mode"] == "pre"
    g, io = build(conv), fixture_io("gfpgan_clean_stylegan2_tiny64")
    assert maxdiff(g([io["z"]], noise=io["noise"])[0], io["img"]) < 1e-4
    assert maxdiff(g(io["w_plus"], input_is_latent=True, noise=io["noise"])[0], io["img_wplus"]) < 1e-4
    assert any("latent_avg" in n for n in conv.notes)  # GFPGAN files carry none: computed, and said so


@torch.no_grad()
def test_gfpgan_v1clean_parity_through_safetensors(tmp_path):
    """CLI import -> safetensors -> rebuilt from the file alone -> GFPGAN's outputs (image and pyramid)."""
    out = tmp_path / "gfpgan_tiny.safetensors"
    assert main(["weights", "import", str(FIX / "gfpgan_v1clean_tiny64_ckpt.pth"), "-o", str(out)]) == 0
    model, meta = load_model(out)
    assert isinstance(model, GFPGANv1Clean) and meta["config"]["model"]["arch"] == "gfpgan_v1clean"
    io = fixture_io("gfpgan_v1clean_tiny64")
    img, rgbs = model(io["x"], return_rgbs=True)  # stored noise buffers = noise_mode "const" (the default)
    assert maxdiff(img, io["img"]) < 1e-4
    assert len(rgbs) == len(io["out_rgbs"]) == 4
    for ours, ref in zip(rgbs, io["out_rgbs"]):
        assert maxdiff(ours, ref) < 1e-4
    assert maxdiff(model(io["x"]), io["img"]) < 1e-4  # return_rgbs=False returns the image alone
    # the fidelity knob is wired: w=0 drops the SFT branch, giving the prior's own image
    free = model.prior(model.encoder(io["x"])[0], input_is_latent=True)[0]
    assert maxdiff(model(io["x"], w=0.0), free) < 1e-6 and maxdiff(free, io["img"]) > 1e-2


@torch.no_grad()
def test_conventions_are_one_function_up_to_value_scaling():
    """rosinality's raw weights, rescaled by the layouts README rules (effective weights, sqrt2 folded
    into the layer before the activation), in our generator with equalized_lr=False, gain_mode="pre"
    and the same blur up-sampling, give rosinality's image: both options are implemented consistently."""
    conv = convert_file(FIX / "rosinality_tiny64_ckpt.pt")
    cfg = {k: v for k, v in conv.config.items() if k != "arch"}
    style_dim, r2 = cfg["style_dim"], 2 ** 0.5
    eff = {}
    for k, v in conv.state_dict.items():
        if k.startswith("mapping.") and k.endswith("weight"):
            v = v * 0.01 / v.shape[1] ** 0.5 * r2
        elif k.startswith("mapping."):
            v = v * 0.01 * r2
        elif k.endswith("modulation.weight"):
            v = v / style_dim ** 0.5
        elif k.endswith("conv.weight"):
            v = v / (v[0].numel()) ** 0.5
        elif re.fullmatch(r"(conv1|convs\.\d+)\.(noise_strength|bias)", k):  # the styled convs' own
            v = v * r2
        eff[k] = v
    g = StyleGAN2Generator(**(cfg | {"equalized_lr": False, "gain_mode": "pre"})).eval()
    g.load_state_dict(eff, strict=True)
    io = fixture_io("rosinality_tiny64")
    assert maxdiff(g([io["z"]], noise=io["noise"])[0], io["img"]) < 1e-4


def test_gfpgan_config_builds_the_v14_architecture():
    """The gfpgan_v1clean config builds exactly GFPGANv1Clean's 86,444,252 parameters (layouts summary)."""
    from mmrface.config import load_config
    from mmrface.models import build_model

    cfg = load_config("gfpgan_v1clean")
    with torch.device("meta"):
        model = build_model(cfg.model)
    assert isinstance(model, GFPGANv1Clean)
    assert sum(p.numel() for p in model.parameters()) == 86_444_252
    conv = convert_state({"params_ema": synth("gfpgan_GFPGANv1Clean_512_cm2")})
    assert {k: v for k, v in conv.config.items() if k != "arch"} == {k: v for k, v in cfg.model.items()
                                                                   if k != "arch"} | {"sft_half": True}


# ---- every full-size layout, synthesised with its container -----------------------------------
def synth(tsv: str, meta: bool = True, prefix: str = "") -> dict[str, torch.Tensor]:
    """A state dict of exactly the layout in tests/layouts/<tsv>.tsv (meta tensors: no memory)."""
    sd = {}
    for line in (LAYOUTS / f"{tsv}.tsv").read_text().splitlines()[1:]:
        key, shape, dtype = line.split("\t")
        dims = () if shape == "-" else tuple(int(s) for s in shape.split("x"))
        dt = getattr(torch, dtype)
        if meta:
            sd[prefix + key] = torch.empty(dims, dtype=dt, device="meta")
        elif key.endswith(".kernel"):  # rosinality's constant FIR buffers: outer([1,3,3,1])/64 * 4
            sd[prefix + key] = make_fir_kernel() * 4
        elif dt == torch.int64:
            sd[prefix + key] = torch.zeros(dims, dtype=dt)
        else:
            t = torch.randn(dims)
            if t.dim() >= 2:  # fan-in scaled, so that deep random networks stay finite
                t /= (t.numel() / t.shape[0] / (t.shape[1] if t.dim() == 5 else 1)) ** 0.5
            sd[prefix + key] = t.abs() + 0.5 if key.endswith("running_var") else t
    return sd


def optim_state(sd: dict) -> dict:
    params = [v for k, v in sd.items() if "noise" not in k and "kernel" not in k]
    return {"state": {i: {"step": torch.tensor(1.0), "exp_avg": torch.empty_like(p), "exp_avg_sq": torch.empty_like(p)}
                      for i, p in enumerate(params)}, "param_groups": [{"lr": 0.002, "params": list(range(len(params)))}]}


def containers():
    g256, d256 = synth("rosinality_Generator_256_cm2"), synth("rosinality_Discriminator_256_cm2")
    g550 = synth("rosinality_550000pt_g_and_g_ema_256_cm2")
    return {
        "gfpgan_GFPGANv1Clean_512_cm2": ({"params_ema": synth("gfpgan_GFPGANv1Clean_512_cm2")}, "gfpgan-v1clean", 512),
        "gfpgan_StyleGAN2GeneratorClean_512_cm2": ({"params_ema": synth("gfpgan_StyleGAN2GeneratorClean_512_cm2")},
                                                   "gfpgan-clean", 512),
        "gfpgan_StyleGAN2GeneratorClean_512_cm1": ({"params_ema": synth("gfpgan_StyleGAN2GeneratorClean_512_cm1")},
                                                   "gfpgan-clean", 512),
        "basicsr_StyleGAN2Generator_512_cm1": ({"params_ema": synth("basicsr_StyleGAN2Generator_512_cm1"),
                                                "params": synth("basicsr_StyleGAN2Generator_512_cm1")}, "basicsr", 512),
        # a HEAD train.py checkpoint after the re-save hint dropped 'args'
        "rosinality_Generator_256_cm2": ({"g": g256, "d": d256, "g_ema": dict(g256), "g_optim": optim_state(g256),
                                          "d_optim": optim_state(d256), "ada_aug_p": 0.0}, "rosinality", 256),
        "rosinality_Generator_1024_cm2": ({"g_ema": synth("rosinality_Generator_1024_cm2"),
                                           "latent_avg": torch.empty(512, device="meta")}, "rosinality", 1024),
        "rosinality_550000pt": ({"g": g550, "d": d256, "g_optim": optim_state(g550), "d_optim": optim_state(d256),
                                 "g_ema": dict(g550)}, "rosinality", 256),
    }


CASES = list(containers())


@pytest.mark.parametrize("name", CASES)
def test_full_size_layout_imports(name):
    """Every source key consumed, every target key filled with its shape (meta tensors, no memory)."""
    obj, fmt, size = containers()[name]
    conv = convert_state(obj)
    assert conv.source_format == fmt and conv.config["size"] == size
    cfg = {k: v for k, v in conv.config.items() if k != "arch"}
    with torch.device("meta"):
        model = (GFPGANv1Clean if fmt == "gfpgan-v1clean" else StyleGAN2Generator)(**cfg)
    target = model.state_dict()
    assert set(conv.state_dict) == set(target)
    assert all(conv.state_dict[k].shape == v.shape for k, v in target.items())
    # nothing of the source was dropped except the constant FIR buffers we rebuild
    inner = obj.get("params_ema", obj.get("g_ema"))
    kept = [k for k in inner if not k.endswith("kernel")]
    n_added = 1 + (13 if name == "rosinality_550000pt" else 0)  # latent_avg (from the container or computed)
    assert len(conv.state_dict) == len(kept) + n_added
    if name == "rosinality_550000pt":
        assert any("noise buffers missing" in n for n in conv.notes)
    if fmt == "gfpgan-v1clean":
        assert conv.config == {"arch": "gfpgan_v1clean", "size": 512, "style_dim": 512, "channel_multiplier": 2,
                               "n_mlp": 8, "narrow": 1, "sft_half": True}


def test_module_prefix_and_forced_format():
    sd = synth("gfpgan_StyleGAN2GeneratorClean_512_cm1", prefix="module.")
    conv = convert_state({"params_ema": sd})
    assert "module." in conv.found and conv.config["channel_multiplier"] == 1
    with pytest.raises(UserError, match="not part of a rosinality checkpoint"):
        convert_state({"params_ema": sd}, fmt="rosinality")


@pytest.mark.parametrize("bad,match", [
    ({"params_ema": synth("gfpgan_GFPGANv1_original_512_cm1")}, "original GFPGANv1"),
    ({"d": synth("rosinality_Discriminator_256_cm2")}, "no state dict"),
    (synth("rosinality_Discriminator_256_cm2"), "discriminator"),
    ({"fc.weight": torch.zeros(2, 2)}, "unknown checkpoint layout"),
    ([1, 2, 3], "not a state dict"),
])
def test_wrong_content_is_one_clear_error(bad, match):
    with pytest.raises(UserError, match=match):
        convert_state(bad)


def test_incomplete_generator_is_refused():
    sd = synth("basicsr_StyleGAN2Generator_512_cm1")
    del sd["to_rgbs.3.bias"]
    with pytest.raises(UserError, match="missing"):
        convert_state({"params_ema": sd})


def test_bad_files_fail_with_one_line(tmp_path, capsys):
    good = (FIX / "rosinality_tiny64_ckpt.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(good[: len(good) // 2])
    (tmp_path / "text.pth").write_text("not a checkpoint at all\n")
    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "other.pth")
    for name, match in [("trunc.pt", "truncated"), ("text.pth", "checkpoint"), ("other.pth", "unknown"),
                        ("absent.pth", "no such file")]:
        with pytest.raises(UserError, match=match):
            convert_file(tmp_path / name)
        rc = main(["weights", "import", str(tmp_path / name), "-o", str(tmp_path / "o.safetensors")])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.startswith("mmrface: error:") and "\n" not in err and name in err
    assert not (tmp_path / "o.safetensors").exists()


def test_pickled_args_refused_with_working_resave_hint(tmp_path):
    ckpt = torch.load(FIX / "rosinality_tiny64_ckpt.pt", weights_only=True)
    src = tmp_path / "train_ckpt.pt"
    torch.save({"g_ema": ckpt["g_ema"], "args": argparse.Namespace(size=64), "ada_aug_p": 0.0}, src)
    with pytest.raises(UserError, match="argparse.Namespace") as err:
        convert_file(src)
    cmd = str(err.value).split("re-save it without that entry: ", 1)[1]
    argv = shlex.split(cmd)
    assert argv[0] == "python"
    subprocess.run([sys.executable, *argv[1:]], check=True, timeout=120)
    conv = convert_file(tmp_path / "train_ckpt_clean.pt")
    assert conv.source_format == "rosinality" and conv.config["size"] == 64


# ---- ArcFace ---------------------------------------------------------------------------------
def test_arcface_loads_strictly_with_module_prefix(tmp_path):
    sd = synth("gfpgan_ResNetArcFace_IRBlock_2222_noSE", meta=False, prefix="module.")
    torch.save(sd, tmp_path / "arcface_resnet18.pth")
    conv = convert_file(tmp_path / "arcface_resnet18.pth")
    assert conv.source_format == "arcface" and "module." in conv.found
    net = ArcFaceResNet(conv.config["layers"])
    net.load_state_dict(conv.state_dict, strict=True)
    ref = {k[len("module."):]: v for k, v in sd.items()}
    assert all(torch.equal(net.state_dict()[k], v) for k, v in ref.items())
    with torch.no_grad():
        assert net.eval()(torch.randn(2, 1, 128, 128)).shape == (2, 512)
    loaded = load_arcface(tmp_path / "arcface_resnet18.pth")  # the identity-loss entry point
    assert not loaded.training and torch.equal(loaded.fc5.weight, ref["fc5.weight"])
    with pytest.raises(UserError, match="not an ArcFace"):
        load_arcface(FIX / "rosinality_tiny64_ckpt.pt")
    # files whose loader tolerated missing num_batches_tracked still import
    no_nbt = {k: v for k, v in ref.items() if not k.endswith("num_batches_tracked")}
    assert convert_state(no_nbt).state_dict.keys() == net.state_dict().keys()


# ---- full-size real imports (slow) -----------------------------------------------------------
@pytest.mark.slow
@torch.no_grad()
def test_full_size_gfpgan_v14_real_import(tmp_path):
    src, out = tmp_path / "GFPGANv1.4.pth", tmp_path / "gfpgan_v1.4.safetensors"
    torch.save({"params_ema": synth("gfpgan_GFPGANv1Clean_512_cm2", meta=False)}, src)
    assert main(["weights", "import", str(src), "-o", str(out)]) == 0
    model, meta = load_model(out)
    assert isinstance(model, GFPGANv1Clean) and model.size == 512
    src_sd = torch.load(src, weights_only=True)["params_ema"]
    ours = model.state_dict()
    assert torch.equal(ours["encoder.first.weight"], src_sd["conv_body_first.weight"])
    assert torch.equal(ours["decoder.sft_shift.6.2.bias"], src_sd["condition_shift.6.2.bias"])
    assert torch.equal(ours["prior.convs.13.conv.weight"], src_sd["stylegan_decoder.style_convs.13.modulated_conv.weight"][0])
    assert torch.equal(ours["prior.noises.noise14"], src_sd["stylegan_decoder.noises.noise14"])
    img = model(torch.zeros(1, 3, 512, 512).uniform_(-1, 1))
    assert img.shape == (1, 3, 512, 512) and torch.isfinite(img).all()


@pytest.mark.slow
@torch.no_grad()
def test_full_size_rosinality_1024_real_import(tmp_path):
    src = tmp_path / "stylegan2-ffhq-config-f.pt"
    latent_avg = torch.randn(512)
    torch.save({"g_ema": synth("rosinality_Generator_1024_cm2", meta=False), "latent_avg": latent_avg}, src)
    conv = convert_file(src)
    g = build(conv)
    assert torch.equal(g.latent_avg, latent_avg) and g.num_latent == 18
    img, _ = g(torch.randn(1, 512), truncation=0.7, noise_mode="const")
    assert img.shape == (1, 3, 1024, 1024) and torch.isfinite(img).all()
