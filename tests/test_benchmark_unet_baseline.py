"""benchmarks/unet_baseline.py: the plain U-Net reference trains and scores against the bicubic floor."""

import importlib.util
import json
import math
from pathlib import Path

import torch

from mmrface.data.testset import bundled_faces_dir, make_benchmark

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "unet_baseline.py"


def _module():
    spec = importlib.util.spec_from_file_location("unet_baseline", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_unet_starts_at_the_input_and_learns():
    mod = _module()
    net = mod.UNet()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(net(x), x)  # zero-initialised residual: exactly the bicubic floor
    net(x).sub(x.flip(-1)).abs().mean().backward()
    assert net.conv_out.weight.grad.abs().sum() > 0


def test_unet_baseline_reports_gains_over_the_floor(tmp_path, capsys):
    mod = _module()
    make_benchmark(tmp_path / "sets", size=64, count=2)
    out = tmp_path / "report.json"
    argv = ["--train", str(bundled_faces_dir()), "--sets", str(tmp_path / "sets"), "--size", "64",
            "--max-steps", "3", "--eval-every", "1", "--batch", "2", "--count", "2", "--threads", "1",
            "--degradation", "{mix: {gfpgan: 0.5, sr8: 0.5}}", "-o", str(out)]
    assert mod.main(argv) == 0
    history = json.loads(out.read_text())["history"]
    assert [row["step"] for row in history] == [1, 2, 3]
    for row in history:
        assert set(row["sets"]) == {"gfpgan", "heavy", "sr8"}
        for s in row["sets"].values():
            assert math.isfinite(s["unet"]) and 10 < s["floor"] < 40
            assert abs(s["unet"] - s["floor"] - s["gain"]) < 2e-3
    assert abs(history[0]["sets"]["sr8"]["gain"]) < 0.5  # one step from the floor
    assert "PSNR gain over bicubic" in capsys.readouterr().out
    assert mod.main(["--train", str(tmp_path / "missing"), "--sets", str(tmp_path / "sets")]) == 2
