"""Weights registry, safetensors with config, sha256 verification and prior loading."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from mmrface.cli import main
from mmrface.convert import convert_file
from mmrface.errors import UserError
from mmrface.models import load_model
from mmrface.models.stylegan2 import StyleGAN2Generator
from mmrface.weights import (file_sha256, load_prior, load_weights, prior_config,
                             read_metadata, registry, resolve_weights, save_weights, verify_file)

FIX = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def tiny_gen() -> StyleGAN2Generator:
    torch.manual_seed(0)
    return StyleGAN2Generator(32, style_dim=32, n_mlp=2, narrow=1 / 32, noise_mode="const").eval()


@pytest.fixture
def reg(tmp_path, monkeypatch):
    """An empty user registry in tmp_path, selected through $MMRFACE_WEIGHTS_REGISTRY."""
    path = tmp_path / "weights.yaml"
    path.write_text("weights: []\n")
    monkeypatch.setenv("MMRFACE_WEIGHTS_REGISTRY", str(path))
    return path


def add_entry(reg_path: Path, name: str, file: Path, **extra) -> None:
    data = yaml.safe_load(reg_path.read_text())
    data["weights"].append({"name": name, "file": file.name, "size": file.stat().st_size,
                            "sha256": file_sha256(file), "config": "tiny",
                            "licence": "Apache-2.0", "trained_on": "random init (test)", **extra})
    reg_path.write_text(yaml.safe_dump(data))


def test_save_load_roundtrip_rebuilds_model(tmp_path, tiny_gen):
    cfg = {"arch": "stylegan2", "size": 32, "style_dim": 32, "n_mlp": 2, "narrow": 1 / 32, "noise_mode": "const"}
    path = tmp_path / "g.safetensors"
    sha = save_weights(path, tiny_gen.state_dict(), cfg, {"trained_on": "nothing"})
    assert sha == file_sha256(path)
    meta = read_metadata(path)
    assert meta["trained_on"] == "nothing" and '"arch": "stylegan2"' in meta["config"]
    sd, info = load_weights(path)
    assert info["config"] == {"model": cfg} and info["sha256"] == sha
    assert all(torch.equal(sd[k], v) for k, v in tiny_gen.state_dict().items())
    model, _ = load_model(path)  # the file alone rebuilds the network
    z = torch.randn(2, 32)
    with torch.no_grad():
        assert torch.equal(model(z)[0], tiny_gen(z)[0])


def test_registry_resolve_and_verify(tmp_path, reg, tiny_gen, capsys):
    wdir = tmp_path / "w"
    wdir.mkdir()
    good = wdir / "tiny.safetensors"
    save_weights(good, tiny_gen.state_dict(), {"arch": "stylegan2", "size": 32, "style_dim": 32, "n_mlp": 2,
                                               "narrow": 1 / 32})
    data = {"weights_dir": "w", "weights": []}
    reg.write_text(yaml.safe_dump(data))
    add_entry(reg, "tiny-prior", good)
    assert registry()["tiny-prior"].path == good.resolve()
    assert resolve_weights("tiny-prior") == good.resolve()
    with pytest.raises(UserError, match=r"known: .*tiny-prior"):
        resolve_weights("no-such-weights")
    assert main(["weights", "verify"]) == 0  # the bundled registry and the user's
    out = capsys.readouterr().out
    assert "ok      tiny-prior" in out and "ok      mmrface-small " in out
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "tiny-prior  [ok]" in out and "Apache-2.0" in out and "random init (test)" in out

    # one byte changed in a copy the registry points to: verify and load fail, naming the file
    bad = wdir / "tiny_copy.safetensors"
    shutil.copy(good, bad)
    add_entry(reg, "tiny-copy", bad)
    raw = bytearray(bad.read_bytes())
    raw[-5] ^= 0xFF
    bad.write_bytes(bytes(raw))
    assert main(["weights", "verify"]) == 2
    captured = capsys.readouterr()
    assert "FAILED  tiny-copy" in captured.out and str(bad) in captured.err and "ok      tiny-prior" in captured.out
    with pytest.raises(UserError, match="sha256 mismatch") as err:
        load_weights("tiny-copy")
    assert str(bad) in str(err.value)
    with pytest.raises(UserError, match=str(bad)):
        verify_file(bad, registry()["tiny-copy"].sha256)
    assert main(["weights", "verify", "tiny-prior"]) == 0  # the good one alone still passes


def test_bundled_registry_verifies(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("MMRFACE_WEIGHTS_REGISTRY", str(tmp_path / "none.yaml"))
    assert main(["weights", "list"]) == 2  # a named registry that does not exist is an error
    assert "none.yaml" in capsys.readouterr().err
    (tmp_path / "none.yaml").write_text("weights: []\n")
    assert main(["weights", "verify"]) == 0  # the bundled entries (none yet) plus an empty user file


def test_malformed_registry_names_its_file(reg):
    reg.write_text("weights:\n  - name: x\n")
    with pytest.raises(UserError, match=str(reg)):
        registry()


def test_import_info_and_load_pth_directly(tmp_path, reg, capsys):
    out = tmp_path / "ros.safetensors"
    assert main(["weights", "import", str(FIX / "rosinality_tiny64_ckpt.pt"), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "found: rosinality stylegan2" in text and "sha256" in text
    assert main(["weights", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "from rosinality" in text and '"upsample": "blur"' in text and "source_sha256" in text
    # a .pth is converted on load, to the same tensors
    sd_pth, meta = load_weights(FIX / "rosinality_tiny64_ckpt.pt")
    sd_st, _ = load_weights(out)
    assert meta["source_format"] == "rosinality" and sd_pth.keys() == sd_st.keys()
    assert all(torch.equal(sd_pth[k], sd_st[k]) for k in sd_st)
    assert main(["weights", "import", str(FIX / "rosinality_tiny64_ckpt.pt"), "-o", str(tmp_path / "x.pt")]) == 2


def test_load_prior_strict_with_sha(tmp_path, reg):
    path = tmp_path / "prior.safetensors"
    conv = convert_file(FIX / "gfpgan_clean_stylegan2_tiny64_ckpt.pth")
    sha = save_weights(path, conv.state_dict, conv.config)
    cfg = prior_config(path)
    assert cfg["upsample"] == "bilinear" and cfg["equalized_lr"] is False and "arch" not in cfg
    g = StyleGAN2Generator(**cfg)
    assert load_prior(g, path) == sha
    assert all(torch.equal(g.state_dict()[k], v) for k, v in conv.state_dict.items())
    # a generator of the other convention is refused with what to set
    wrong = StyleGAN2Generator(**(cfg | {"upsample": "blur", "equalized_lr": True, "gain_mode": "post"}))
    with pytest.raises(UserError, match="upsample"):
        load_prior(wrong, path)
    # a generator of another size is refused, not half-loaded
    with pytest.raises(UserError, match="does not fit"):
        load_prior(StyleGAN2Generator(**(cfg | {"size": 32})), path)
    # a whole GFPGAN restorer file provides its prior
    full = tmp_path / "gfpgan.safetensors"
    conv_full = convert_file(FIX / "gfpgan_v1clean_tiny64_ckpt.pth")
    save_weights(full, conv_full.state_dict, conv_full.config)
    g2 = StyleGAN2Generator(**prior_config(full))
    load_prior(g2, full)
    assert torch.equal(g2.const.weight, conv_full.state_dict["prior.const.weight"])


@pytest.mark.parametrize("name", ["mmrface-small", "mmrface-small-resblock"])
def test_bundled_weights_match_the_config_their_entry_names(monkeypatch, tmp_path, name):
    """A registry entry's `config` is the recipe that made the file: its model section equals the file's
    own, so `--config <that>` (and the fine-tune config built on it) can start from the weights."""
    from mmrface.config import load_config
    from mmrface.models import inference_config
    from mmrface.weights import registry

    monkeypatch.setenv("MMRFACE_WEIGHTS_REGISTRY", str(tmp_path / "user.yaml"))
    (tmp_path / "user.yaml").write_text("weights: []\n")
    entry = registry()[name]
    model = inference_config(load_weights(name)[1]["config"]["model"])
    assert model == inference_config(load_config(entry.config).model)
    if name == "mmrface-small":  # train.init of the fine-tune recipe is this file
        assert load_config("small_finetune").train.init == name
        assert model == inference_config(load_config("small_finetune").model)
