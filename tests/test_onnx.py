"""ONNX export and the ONNX Runtime backend: parity with eager torch, metadata, Restorer, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmrface.cli import main
from mmrface.config import load_config
from mmrface.convert import convert_file
from mmrface.errors import UserError
from mmrface.export.onnx import read_onnx_metadata
from mmrface.export.ort_backend import OrtNetwork
from mmrface.models import build_model, load_model
from mmrface.models.stylegan2 import StyleGAN2Generator, set_fused_modconv
from mmrface.pipeline.restorer import Restorer
from mmrface.weights import file_sha256, save_weights

FIX = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A random tiny (64 px) model saved as a weight file, exported with a fixed and a dynamic batch."""
    d = tmp_path_factory.mktemp("onnx")
    cfg = load_config("tiny")
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    with torch.no_grad():  # noise strengths start at 0: make the baked-in noise matter
        for m in model.modules():
            if hasattr(m, "noise_strength"):
                m.noise_strength.fill_(0.3)
    weights = d / "tiny.safetensors"
    save_weights(weights, model.state_dict(), cfg.to_dict())
    fixed, dynamic = d / "tiny_b1.onnx", d / "tiny_dyn.onnx"
    assert main(["export", "--weights", str(weights), "--format", "onnx", "-o", str(fixed), "--size", "64"]) == 0
    assert main(["export", "--weights", str(weights), "-o", str(dynamic), "--dynamic-batch"]) == 0
    torch_model, _ = load_model(weights)
    return {"weights": weights, "fixed": fixed, "dynamic": dynamic, "model": torch_model}


def lq_batch(n: int, seed: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@torch.no_grad()
def test_parity_two_fidelities_fixed_batch(exported):
    net, model = OrtNetwork(exported["fixed"], threads=1), exported["model"]
    assert net.size == 64 and net.batch == 1
    x = lq_batch(1)
    outs = []
    for w in (0.2, 0.9):
        ref = model(x, w=w, noise_mode="const")
        out = net(x, w)
        assert out.shape == (1, 3, 64, 64)
        assert (out - ref).abs().max().item() < 1e-4
        outs.append(out)
    assert (outs[0] - outs[1]).abs().max().item() > 1e-3  # w is a live input, not baked in
    # a fixed-batch graph still serves 3 faces (chunked) with the same numbers
    x3 = lq_batch(3, seed=4)
    assert (net(x3, 0.5) - model(x3, w=0.5, noise_mode="const")).abs().max().item() < 1e-4


@torch.no_grad()
def test_parity_dynamic_batch(exported, capsys):
    net, model = OrtNetwork(exported["dynamic"], threads=1), exported["model"]
    assert net.batch is None
    x = lq_batch(2, seed=5)
    for w in (0.0, 0.7):
        assert (net(x, w) - model(x, w=w, noise_mode="const")).abs().max().item() < 1e-4
    # per-face fidelity (N,) goes through too
    ws = np.array([0.1, 1.0], np.float32)
    ref = model(x, w=torch.from_numpy(ws), noise_mode="const")
    assert (net(x, ws) - ref).abs().max().item() < 1e-4
    assert (net(x[:1], 0.1) - ref[:1]).abs().max().item() < 1e-4  # batch 1 through the same graph


def test_metadata(exported):
    meta = read_onnx_metadata(exported["dynamic"])
    assert meta["weights_sha256"] == file_sha256(exported["weights"])
    assert meta["size"] == "64" and meta["noise"] == "const" and meta["opset"] == "17"
    assert meta["batch"] == "dynamic" and meta["modconv"] == "unfused" and meta["version"]
    assert OrtNetwork(exported["fixed"]).metadata["batch"] == "1"


def test_zero_noise_and_fused_export(exported, tmp_path, capsys):
    out = tmp_path / "zero.onnx"
    assert main(["export", "--weights", str(exported["weights"]), "-o", str(out), "--noise", "zero",
                 "--fused-modconv", "--batch", "2", "--opset", "16"]) == 0
    assert "max |onnxruntime - torch|" in capsys.readouterr().out
    net = OrtNetwork(out)
    assert net.noise == "zero" and net.batch == 2 and net.metadata["modconv"] == "fused"
    x = lq_batch(2, seed=6)
    with torch.no_grad():
        ref = exported["model"](x, w=0.6, noise_mode="zero")
        assert (net(x, 0.6) - ref).abs().max().item() < 1e-4
        assert (net(x, 0.6) - exported["model"](x, w=0.6, noise_mode="const")).abs().max().item() > 1e-3


def test_restorer_with_onnx_network(exported):
    rgb = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    rgb[20:70, 25:75] = (200, 160, 140)
    torch_res = Restorer(exported["weights"], device="cpu", upscale=1, fidelity=0.8).restore(rgb, aligned=True)
    for r in (Restorer(network=OrtNetwork(exported["fixed"]), device="cpu", upscale=1, fidelity=0.8),
              Restorer(onnx=exported["dynamic"], device="cpu", upscale=1, fidelity=0.8)):
        res = r.restore(rgb, aligned=True)
        assert res.image.shape == (96, 96, 3) and len(res.faces) == 1
        # same crops in, same network up to 1e-4: at most one uint8 level apart after rounding
        diff = np.abs(res.faces[0].crop_restored.astype(int) - torch_res.faces[0].crop_restored.astype(int))
        assert diff.max() <= 1
    assert Restorer(onnx=exported["dynamic"], device="cpu").meta["noise"] == "const"
    with pytest.raises(UserError, match="needs an ONNX file"):
        Restorer(exported["weights"], device="cpu", backend="onnx")
    with pytest.raises(UserError, match="backend torch"):
        Restorer(exported["weights"], device="cpu", backend="torch", onnx=exported["fixed"])


def test_bad_files_one_line_errors(exported, tmp_path, capsys):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf \x00\xff" * 10)
    for path, match in [(garbage, "not a loadable ONNX model"), (tmp_path / "absent.onnx", "does not exist")]:
        with pytest.raises(UserError, match=match) as info:
            OrtNetwork(path)
        assert "\n" not in str(info.value) and path.name in str(info.value)
    # an ONNX graph that is not a restorer
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), tmp_path / "relu.onnx")
    with pytest.raises(UserError, match="not an mmrface restorer graph"):
        OrtNetwork(tmp_path / "relu.onnx")
    with pytest.raises(UserError, match="expected input"):
        OrtNetwork(exported["dynamic"])(torch.zeros(1, 3, 32, 32), 0.5)
    # CLI: wrong --size, bad weights file
    capsys.readouterr()
    for argv, match in [(["export", "--weights", str(exported["weights"]), "--size", "128", "-o", str(tmp_path / "a.onnx")],
                         "does not match the model's size 64"),
                        (["export", "--weights", str(garbage), "-o", str(tmp_path / "b.onnx")], "garbage.onnx")]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("mmrface: error:") and "\n" not in err and match in err
    assert not (tmp_path / "a.onnx").exists()


@torch.no_grad()
def test_unfused_modconv_equals_fused():
    """The non-fused modulated conv (shared weight, demodulation by matmul) is the same function."""
    for upsample in ("bilinear", "blur"):
        torch.manual_seed(1)
        g = StyleGAN2Generator(32, style_dim=32, n_mlp=2, narrow=1 / 32, upsample=upsample).eval()
        z = torch.randn(3, 32)
        fused = g(z, noise_mode="const")[0]
        assert set_fused_modconv(g, False) == 11
        unfused = g(z, noise_mode="const")[0]
        assert (fused - unfused).abs().max().item() < 1e-5 * max(1.0, fused.abs().max().item())
    model = build_model(load_config("tiny").model).eval()
    x = lq_batch(2)
    ref = model(x, w=0.5, noise_mode="const")
    set_fused_modconv(model, False)
    assert (model(x, w=0.5, noise_mode="const") - ref).abs().max().item() < 1e-5


@torch.no_grad()
@pytest.mark.parametrize("name", ["rosinality_tiny64", "gfpgan_clean_stylegan2_tiny64"])
def test_reference_fixtures_unfused(name):
    """The reference-code fixtures (test_convert.py) also hold with the non-fused modconv."""
    ext = ".pt" if name.startswith("rosinality") else ".pth"
    conv = convert_file(FIX / f"{name}_ckpt{ext}")
    cfg = {k: v for k, v in conv.config.items() if k != "arch"}
    g = StyleGAN2Generator(**cfg).eval()
    g.load_state_dict(conv.state_dict, strict=True)
    set_fused_modconv(g, False)
    io = torch.load(FIX / f"{name}_io.pt", weights_only=True)
    assert (g([io["z"]], noise=io["noise"])[0] - io["img"]).abs().max().item() < 1e-4
    assert (g(io["w_plus"], input_is_latent=True, noise=io["noise"])[0] - io["img_wplus"]).abs().max().item() < 1e-4


def test_restore_cli_runs_through_onnxruntime(tmp_path, capsys):
    import shutil

    from mmrface.cli import main
    from mmrface.config import load_config
    from mmrface.models import build_model
    from mmrface.weights import save_weights

    cfg = load_config("tiny")
    weights = tmp_path / "tiny.safetensors"
    save_weights(weights, build_model(cfg.model).state_dict(), cfg.to_dict())
    onnx_path = tmp_path / "tiny.onnx"
    assert main(["export", "--weights", str(weights), "-o", str(onnx_path), "--dynamic-batch"]) == 0
    face = tmp_path / "face.png"
    shutil.copy(Path(__file__).parent / "data" / "face128.png", face)
    out = tmp_path / "out"
    assert main(["restore", "-i", str(face), "-o", str(out), "--aligned", "-s", "1", "--onnx", str(onnx_path),
                 "--backend", "onnx", "--device", "cpu"]) == 0
    assert (out / "face.png").is_file()
