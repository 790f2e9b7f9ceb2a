"""benchmarks/gpu_train.py, at tiny size on the CPU: pack, a time-boxed run, the files it returns."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_train.py"


def _script():
    spec = importlib.util.spec_from_file_location("gpu_train", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_pack_then_a_time_boxed_run_returns_curve_log_and_weights(tmp_path):
    gpu = _script()
    faces = ROOT / "assets" / "faces"
    info = gpu.pack(faces, faces, tmp_path / "pack")
    assert info["train"] == info["val"] == len(list((tmp_path / "pack" / "train").glob("*.jpg"))) >= 4
    out = tmp_path / "out"
    summary = gpu.run(tmp_path / "pack", out, "tiny", 0.002, "cpu", ["train.steps=50"], 15.0, tmp_path / "work")
    assert summary["exit_code"] == 0
    assert 1 <= summary["last_val"]["step"] < 50  # the budget, not train.steps, ended the run
    assert (out / "val.csv").read_text().startswith("step,psnr,lpips")
    assert "train.max_minutes" in (out / "run.log").read_text()
    assert summary["weights"]["returned"].startswith("ema.safetensors") and (out / "ema.safetensors").stat().st_size > 0
    assert json.loads((out / "summary.json").read_text())["config"] == "tiny"
