"""make-testset: byte-identical output per seed, replayable records, CLI and benchmark sets."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmrface.cli import main
from mmrface.data.datasets import PairedTestSet
from mmrface.data.degrade import Degradation
from mmrface.data.testset import BENCHMARK_SEEDS, make_benchmark, make_testset
from mmrface.errors import UserError
from mmrface.pipeline.imageio import read_pixels

DATA = Path(__file__).parent / "data"


@pytest.fixture
def hq_dir(tmp_path) -> Path:
    root = tmp_path / "hq_src"
    root.mkdir()
    face = Image.open(DATA / "face128.png")
    face.save(root / "face.png")
    face.transpose(Image.FLIP_LEFT_RIGHT).save(root / "mirror.jpg", quality=95)
    return root


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_other_seed_differs(hq_dir, tmp_path):
    runs = {}
    for tag, seed in (("a", 0), ("b", 0), ("c", 1)):
        make_testset(hq_dir, tmp_path / tag, preset="gfpgan", seed=seed, size=48, count=3)
        runs[tag] = _hashes(tmp_path / tag)
    assert set(runs["a"]) == {"params.json", *(f"{d}/{i:05d}.png" for d in ("lq", "hq")
                                               for i in range(3))}
    assert runs["a"] == runs["b"]
    lq_differs = [runs["a"][k] != runs["c"][k] for k in runs["a"] if k.startswith("lq/")]
    assert all(lq_differs)
    assert all(runs["a"][k] == runs["c"][k] for k in runs["a"] if k.startswith("hq/"))


def test_params_record_replays_the_written_lq(hq_dir, tmp_path):
    out = tmp_path / "set"
    make_testset(hq_dir, out, preset="heavy", seed=5, size=40, count=3)
    index = json.loads((out / "params.json").read_text())
    assert index["preset"] == "heavy" and index["seed"] == 5 and index["size"] == 40
    assert [it["source"] for it in index["items"]] == ["face.png", "mirror.jpg", "face.png"]
    for it in index["items"]:
        assert it["preset"] == "heavy" and it["seed"] == 5
        hq, lq = read_pixels(out / "hq" / it["name"]), read_pixels(out / "lq" / it["name"])
        assert hq.shape == lq.shape == (40, 40, 3)
        np.testing.assert_array_equal(Degradation.apply(hq, it["params"]), lq)
    ds = PairedTestSet(out)
    assert len(ds) == 3 and ds[2]["name"] == "00002.png"
    assert json.loads(ds[0]["params"]) == index["items"][0]["params"]
    assert ds[0]["lq"].shape == (3, 40, 40)


def test_refuses_non_empty_output_unless_overwrite(hq_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    with pytest.raises(UserError, match="not empty"):
        make_testset(hq_dir, out, size=32)
    make_testset(hq_dir, out, size=32, count=4, overwrite=True)
    make_testset(hq_dir, out, size=32, count=2, overwrite=True)
    assert sorted(p.name for p in (out / "lq").iterdir()) == ["00000.png", "00001.png"]
    assert (out / "keep.txt").read_text() == "user file"


def test_cli_and_errors(hq_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["make-testset", "-i", str(hq_dir), "-o", str(out), "--preset", "sr8",
                 "--seed", "2", "--size", "32"]) == 0
    assert "wrote 2 LQ/HQ pairs" in capsys.readouterr().out
    assert main(["make-testset", "-i", str(hq_dir), "-o", str(out)]) == 2  # not empty
    assert main(["make-testset", "-i", str(hq_dir), "-o", str(tmp_path / "x"),
                 "--preset", "nope"]) == 2
    assert main(["make-testset", "-i", str(tmp_path / "missing"), "-o", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "unknown degradation preset" in err and "missing" in err
    cfg = tmp_path / "deg.yaml"
    cfg.write_text("degradation:\n  preset: gfpgan\n  scale: [2, 2]\n  jpeg_prob: 0\n")
    assert main(["make-testset", "-i", str(hq_dir), "-o", str(tmp_path / "z"), "--preset",
                 str(cfg), "--size", "32"]) == 0
    items = json.loads((tmp_path / "z" / "params.json").read_text())["items"]
    assert all(it["params"]["down"]["scale"] == 2 and it["params"]["jpeg"] is None
               for it in items)


def test_benchmark_sets(hq_dir, tmp_path):
    out = tmp_path / "bench"
    assert main(["make-testset", "--benchmark", "-i", str(hq_dir), "-o", str(out),
                 "--size", "32", "--count", "2"]) == 0
    for name, seed in BENCHMARK_SEEDS.items():
        index = json.loads((out / name / "params.json").read_text())
        assert index["preset"] == name and index["seed"] == seed and len(index["items"]) == 2
    with pytest.raises(UserError, match="assets/faces"):
        make_benchmark(tmp_path / "b2", faces=tmp_path / "no_faces_here")
