"""`mmrface evaluate`: a 2-image test set, a random tiny model, an outputs folder, three report files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from mmrface.cli import main
from mmrface.data.testset import make_testset
from mmrface.errors import UserError
from mmrface.evaluation import BicubicBaseline, ModelMethod, OutputsMethod, evaluate
from mmrface.models import build_model
from mmrface.pipeline.imageio import read_pixels, write_image
from mmrface.weights import save_weights

DATA = Path(__file__).parent / "data"
TINY = {"arch": "mmrface", "size": 32, "style_dim": 16, "sft_half": True,
        "codec": {"block": "mmrb", "channel_multiplier": 1, "narrow": 0.03125, "max_channels": 8,
                  "enc_blocks": 1},
        "prior": {"n_mlp": 1, "channel_multiplier": 1, "narrow": 0.03125, "max_channels": 8}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("eval")
    faces = tmp / "faces"
    faces.mkdir()
    face = read_pixels(DATA / "face128.png")
    write_image(faces / "a.png", face)
    write_image(faces / "b.png", np.ascontiguousarray(face[:, ::-1]))
    make_testset(faces, tmp / "set", preset="sr4", seed=0, size=64)
    weights = tmp / "tiny_random.safetensors"
    save_weights(weights, build_model(TINY).state_dict(), {"name": "tiny-random", "model": TINY})
    outputs = tmp / "outs"  # "restored" outputs: the HQ slightly blurred, saved at 2x size as JPEG
    outputs.mkdir()
    for p in sorted((tmp / "set" / "hq").glob("*.png")):
        img = cv2.resize(cv2.GaussianBlur(read_pixels(p), (3, 3), 0.8), (128, 128), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(outputs / (p.stem + ".jpg")), img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    return {"set": tmp / "set", "weights": weights, "outputs": outputs, "tmp": tmp}


def test_cli_writes_three_report_files(setup, capsys):
    out = setup["tmp"] / "report"
    rc = main(["evaluate", "--testset", str(setup["set"]), "--weights", str(setup["weights"]),
               "--outputs", f"blurred={setup['outputs']}", "--metrics", "psnr,ssim,lpips",
               "--device", "cpu", "-o", str(out), "-q"])
    assert rc == 0
    assert {p.name for p in out.iterdir()} >= {"report.json", "report.md", "report.png"}
    report = json.loads((out / "report.json").read_text())
    by_name = {m["name"]: m for m in report["methods"]}
    assert list(by_name) == ["bicubic", "tiny_random", "blurred"]
    assert by_name["bicubic"]["kind"] == "baseline" and by_name["tiny_random"]["kind"] == "model"
    assert by_name["tiny_random"]["model_size"] == 32
    assert report["testset"]["pairs"] == 2 and report["testset"]["preset"] == "sr4"
    assert report["command"].startswith("mmrface evaluate --testset")
    assert report["machine"]["cpu_count"] >= 1 and report["date"]
    for meth in report["methods"]:
        s = meth["summary"]
        assert len(meth["per_image"]) == 2
        assert math.isfinite(s["psnr"]["mean"]) and s["psnr"]["n"] == 2
        assert 0 < s["ssim"]["mean"] <= 1 and 0 <= s["lpips"]["mean"] < 1.5
        vals = [r["psnr"] for r in meth["per_image"]]
        assert s["psnr"]["mean"] == pytest.approx(np.mean(vals))
        assert s["psnr"]["std"] == pytest.approx(np.std(vals))
    # a lightly blurred HQ is much closer to the HQ than the x4-downsampled LQ, and a random
    # network is far from both
    psnr = {n: m["summary"]["psnr"]["mean"] for n, m in by_name.items()}
    assert psnr["blurred"] > psnr["bicubic"] + 3 > psnr["tiny_random"] + 3
    md = (out / "report.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 3 and "PSNR ↑" in table[0] and "LPIPS (alex) ↓" in table[0]
    assert all(any(f"| {n} |" in line for line in table) for n in by_name)
    assert f"| **{psnr['blurred']:.2f} ± " in md  # best mean in bold
    png = cv2.imread(str(out / "report.png"))
    assert png is not None and png.shape[0] > 200 and png.shape[1] > 200
    printed = capsys.readouterr().out
    assert "| tiny_random |" in printed and "report.json" in printed


def test_baseline_is_the_lq_and_unavailable_metrics_are_na(setup):
    # FID without weights, and an outputs folder missing one image: n/a with reasons, no crash
    partial = setup["tmp"] / "partial"
    partial.mkdir()
    hq0 = read_pixels(setup["set"] / "hq" / "00000.png")
    write_image(partial / "00000.png", hq0)
    result = evaluate(setup["set"], [BicubicBaseline(), OutputsMethod("partial", folder=partial)],
                      metrics=["psnr", "fid"])
    base, part = result.report["methods"]
    lq = [read_pixels(setup["set"] / "lq" / n) for n in ("00000.png", "00001.png")]
    hq = [read_pixels(setup["set"] / "hq" / n) for n in ("00000.png", "00001.png")]
    mse = [np.mean((a.astype(float) - b.astype(float)) ** 2) for a, b in zip(lq, hq)]
    assert [r["psnr"] for r in base["per_image"]] == pytest.approx([10 * math.log10(255**2 / m) for m in mse])
    assert "fid-weights" in base["summary"]["fid"]["n/a"] and base["summary"]["fid"]["mean"] is None
    assert part["summary"]["psnr"]["n"] == 1 and part["summary"]["psnr"]["mean"] == math.inf  # identical
    assert part["per_image"][1]["psnr"] is None and "no output" in part["per_image"][1]["errors"]["all"]
    assert result.examples["partial"][1] is None


def test_model_method_follows_restore_aligned(setup):
    """The model row scores exactly what `Restorer.restore(lq, aligned=True)` returns."""
    from mmrface.pipeline.restorer import Restorer

    method = ModelMethod("m", weights=str(setup["weights"]), fidelity=0.7, device="cpu")
    result = evaluate(setup["set"], [method], metrics=["psnr"], n_examples=1)
    lq = read_pixels(setup["set"] / "lq" / "00000.png")
    hq = read_pixels(setup["set"] / "hq" / "00000.png")
    direct = Restorer(setup["weights"], device="cpu", upscale=1, fidelity=0.7).restore(lq, aligned=True).image
    assert direct.shape == hq.shape
    assert np.array_equal(result.examples["m"][0], direct)


def test_bad_inputs_give_one_line_errors(setup, tmp_path, capsys):
    with pytest.raises(UserError, match="not a test set"):
        evaluate(tmp_path, [BicubicBaseline()])
    rc = main(["evaluate", "--testset", str(tmp_path / "missing"), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "test set folder not found" in err
    rc = main(["evaluate", "--testset", str(setup["set"]), "--weights", "no-such-weights", "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "no-such-weights" in err
    rc = main(["evaluate", "--testset", str(setup["set"]), "--metrics", "psnr,bogus", "-q"])
    assert rc == 2 and "bogus" in capsys.readouterr().err
    empty = tmp_path / "empty_outs"
    empty.mkdir()
    (empty / "zzz.png").write_bytes((setup["set"] / "hq" / "00000.png").read_bytes())
    rc = main(["evaluate", "--testset", str(setup["set"]), "--outputs", str(empty), "-q"])
    assert rc == 2 and "matched by name" in capsys.readouterr().err


def test_outputs_saved_as_16bit_tif_are_scored(setup, tmp_path):
    """`restore --ext tif` writes .tif, 16-bit for 16-bit inputs: evaluate reads them, rounding each
    value to 8 bits (not truncating): an exact copy of the HQ scores PSNR inf."""
    outs = tmp_path / "tif_outputs"
    outs.mkdir()
    for p in sorted((setup["set"] / "hq").glob("*.png")):
        deep = read_pixels(p).astype(np.uint16) * 257 + 100  # rounds back to the HQ; truncating would not
        assert cv2.imwrite(str(outs / f"{p.stem}.tif"), deep[..., ::-1])
    result = evaluate(setup["set"], [OutputsMethod("tif", folder=outs)], metrics=["psnr"])
    summary = result.report["methods"][0]["summary"]["psnr"]
    assert summary["n"] == 2 and summary["mean"] == math.inf
