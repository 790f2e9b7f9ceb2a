"""One architecture registry and one strict loader (`mmrface.models`), used by every caller."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from mmrface.cli import main
from mmrface.config import load_config
from mmrface.errors import UserError
from mmrface.models import ARCHS, build_model, discriminator_for, load_model
from mmrface.pipeline.restorer import Restorer
from mmrface.weights import save_weights

SRC = Path(__file__).resolve().parents[1] / "src" / "mmrface"


@pytest.fixture
def tiny(tmp_path):
    cfg = load_config("tiny")
    model = build_model(cfg.model)
    path = tmp_path / "tiny.safetensors"
    save_weights(path, model.state_dict(), cfg.to_dict())
    return cfg, model, path


def test_discriminator_arcface_and_prior_are_registered_like_the_restorers(tmp_path):
    assert {"mmrface", "gfpgan_v1clean", "stylegan2", "stylegan2_discriminator", "arcface"} <= set(ARCHS)
    for cfg in ({"arch": "stylegan2_discriminator", "size": 32, "channel_multiplier": 1, "narrow": 0.125},
                {"arch": "arcface", "layers": [1, 1, 1, 1]},
                {"arch": "stylegan2", "size": 16, "style_dim": 32, "n_mlp": 2, "narrow": 0.0625}):
        model = build_model(cfg)
        path = tmp_path / f"{cfg['arch']}.safetensors"
        save_weights(path, model.state_dict(), cfg)
        loaded, meta = load_model(path)  # the file alone rebuilds it, strictly
        assert type(loaded) is type(model) and not loaded.training
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_discriminator_for_lives_in_the_model_registry():
    cfg = load_config("tiny").model
    d = discriminator_for(cfg)
    assert type(d).__name__ == "StyleGAN2Discriminator" and d(torch.zeros(2, 3, 64, 64)).shape == (2, 1)


def test_trainer_does_not_import_the_cli_layer():
    tree = ast.parse((SRC / "train" / "trainer.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not {m for m in imported if m.startswith("mmrface.commands")}


def test_restorer_loads_strictly(tiny, tmp_path):
    cfg, model, _ = tiny
    sd = model.state_dict()
    noise = next(k for k in sd if ".noises." in k)
    missing = tmp_path / "missing_noise.safetensors"  # the old loader accepted this (strict=False)
    save_weights(missing, {k: v for k, v in sd.items() if k != noise}, cfg.to_dict())
    with pytest.raises(UserError, match=r"does not fit the model: 1 missing"):
        Restorer(missing, device="cpu")
    extra = tmp_path / "extra.safetensors"
    save_weights(extra, {**sd, "stray.weight": torch.zeros(1)}, cfg.to_dict())
    with pytest.raises(UserError, match="1 unexpected"):
        Restorer(extra, device="cpu")


def test_loader_refuses_the_wrong_kind_of_network(tmp_path):
    cfg = {"arch": "arcface", "layers": [1, 1, 1, 1]}
    path = tmp_path / "arcface.safetensors"
    save_weights(path, build_model(cfg).state_dict(), cfg)
    with pytest.raises(UserError, match="holds a arcface model, not an mmrface restorer or a GFPGANv1Clean"):
        Restorer(path, device="cpu")


def test_training_only_prior_keys_of_old_files_are_ignored(tiny, tmp_path, recwarn):
    cfg, model, _ = tiny
    raw = cfg.to_dict()
    raw["model"]["prior"] = {**raw["model"].get("prior", {}), "init": "/nowhere/prior.safetensors", "lr_mul": 0.01}
    path = tmp_path / "old.safetensors"
    save_weights(path, model.state_dict(), raw)
    loaded, _ = load_model(path)
    assert not hasattr(loaded, "prior_init") and not hasattr(loaded, "prior_lr_mul") and len(recwarn) == 0


def test_one_architecture_table_for_convert(monkeypatch):
    from mmrface.convert import check_complete

    monkeypatch.setitem(ARCHS, "test_linear", "torch.nn:Linear")  # registered once, known to convert too
    sd = torch.nn.Linear(2, 3).state_dict()
    check_complete(sd, {"arch": "test_linear", "in_features": 2, "out_features": 3})
    with pytest.raises(UserError, match="missing"):
        check_complete({"weight": sd["weight"]}, {"arch": "test_linear", "in_features": 2, "out_features": 3})


def test_export_has_no_short_w_for_weights(tiny, capsys):
    with pytest.raises(SystemExit) as done:  # -w is the fidelity in restore/serve/evaluate
        main(["export", "-w", str(tiny[2])])
    assert done.value.code == 2 and "one of the arguments --weights" in capsys.readouterr().err
