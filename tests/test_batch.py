"""`mmrface restore --engine ray` without a cluster: inputs, output names, the results manifest,
the stages run in this process (the same steps as `Restorer.restore`), and Ray missing.

The run on a real local Ray cluster with a killed worker is tests/test_batch_cluster.py (slow).
"""

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from mmrface.batch.inputs import glob_regex, list_inputs, plan_outputs
from mmrface.batch.manifest import ResultsManifest, make_row
from mmrface.cli import main
from mmrface.errors import UserError
from mmrface.pipeline.imageio import read_image
from mmrface.pipeline.restorer import Restorer, paste_photo

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "assets" / "photos"


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "in"
    for rel in ("a.jpg", "b.PNG", "notes.txt", ".hidden.jpg", "sub/c.jpg", "sub/deep/d.webp", ".cache/e.jpg"):
        _touch(root / rel)
    return root


def test_folder_lists_photos_skipping_hidden_and_other_files(tree):
    files, root = list_inputs(str(tree))
    assert [Path(f).name for f in files] == ["a.jpg", "b.PNG"] and root == str(tree)
    files, _ = list_inputs(str(tree), recursive=True)
    assert [str(Path(f).relative_to(tree)) for f in files] == ["a.jpg", "b.PNG", "sub/c.jpg", "sub/deep/d.webp"]


def test_glob_patterns(tree):
    rel = lambda files: [str(Path(f).relative_to(tree)) for f in files]  # noqa: E731
    assert rel(list_inputs(str(tree / "*.jpg"))[0]) == ["a.jpg"]
    assert rel(list_inputs(str(tree / "**/*.jpg"))[0]) == ["a.jpg", "sub/c.jpg"]  # never the hidden ones
    assert rel(list_inputs(str(tree / "sub/*/*"))[0]) == ["sub/deep/d.webp"]
    assert list_inputs(str(tree / "s?b/[a-c].jpg")) == ([str(tree / "sub/c.jpg")], str(tree))  # names below "in/"
    with pytest.raises(UserError, match="no images match"):
        list_inputs(str(tree / "*.tif"))
    r = glob_regex("x/**/y[!0-9]?.jpg")
    assert r.match("x/y_a.jpg") and r.match("x/1/2/ya1.jpg") and not r.match("x/y5a.jpg") and not r.match("x/ya.jpgz")


def test_list_file_relative_absolute_and_comments(tree, tmp_path):
    listing = _touch(tmp_path / "in" / "todo.txt",
                     f"# scans of 1950\n\na.jpg\n  sub/c.jpg  \n{tree / 'sub/deep/d.webp'}\n".encode())
    files, root = list_inputs(str(listing))
    assert files == [str(tree / "a.jpg"), str(tree / "sub/c.jpg"), str(tree / "sub/deep/d.webp")]
    assert root == str(tree)
    with pytest.raises(UserError, match="names no files"):
        list_inputs(str(_touch(tmp_path / "empty.lst", b"# nothing\n")))
    with pytest.raises(UserError, match="input not found"):
        list_inputs(str(tmp_path / "missing"))


def test_output_names_mirror_the_inputs_and_collisions_are_errors(tree, tmp_path):
    files = [str(tree / "a.jpg"), str(tree / "sub/c.jpg"), str(tree / "sub/c.png"), str(tree / "x.png")]
    plan = plan_outputs(files, str(tree), str(tmp_path / "out"), "png", "_r")
    out = tmp_path / "out"
    assert [(Path(d), e is None) for _, d, e in plan] == [
        (out / "a_r.png", True), (out / "sub/c_r.png", True), (out / "sub/c_r.png", False), (out / "x_r.png", True)]
    assert "already the output of" in plan[2][2]
    same = plan_outputs([str(tree / "a.jpg")], str(tree), str(tree), "auto", "")
    assert "overwrite the input" in same[0][2]
    # a list spanning filesystems: names by file name alone
    assert plan_outputs(["s3://bucket/k/p.jpg"], None, str(out), "auto", "")[0][1] == str(out / "p.jpg")


def test_manifest_keeps_the_latest_row_and_survives_a_torn_line(tmp_path):
    m = ResultsManifest(tmp_path / "m.jsonl")
    m.append([make_row("a", "A", "error", error="boom"), make_row("b", "B", "ok", faces=2)])
    with open(m.path, "ab") as f:  # a run killed while writing a row
        f.write(b'{"input": "c", "stat')
    m.append([make_row("a", "A", "ok", faces=1, seconds={"restore": 0.123456})])
    rows = m.rows()
    assert list(rows) == ["a", "b"] and rows["a"]["status"] == "ok" and rows["a"]["seconds"] == {"restore": 0.1235}
    assert m.compact() == 2
    lines = m.path.read_text().splitlines()
    assert [json.loads(x)["input"] for x in lines] == ["a", "b"]
    with pytest.raises(ValueError):
        make_row("a", "A", "done")


def _photo(tmp_path: Path, name: str, scale: float = 0.5) -> Path:
    rgb = read_image(PHOTOS / name).rgb
    small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    path = tmp_path / (Path(name).stem + ".png")
    cv2.imwrite(str(path), small[..., ::-1])
    return path


def test_stages_in_process_equal_restorer_restore(tmp_path):
    """prepare -> network actor -> finish, called as Ray calls them, give Restorer.restore's photo."""
    from mmrface.batch.stages import RestoreActor, finish_batch, prepare_batch, rows_of

    good = _photo(tmp_path, "astronaut.png")
    broken = _touch(tmp_path / "broken.jpg", b"\xff\xd8 not really a jpeg")
    nothing = tmp_path / "flat.png"
    cv2.imwrite(str(nothing), np.full((64, 80, 3), 128, np.uint8))
    inputs = [str(good), str(broken), str(nothing)]
    batch = {"input": np.array(inputs, object), "output": np.array([str(tmp_path / "out" / Path(p).name) for p in inputs], object)}
    actor = RestoreActor("mmrface-small", device="cpu", fidelity=0.5, batch_size=4)
    size = actor.restorer.size
    rows = rows_of(finish_batch(actor(prepare_batch(batch, size=size, detector="auto", upscale=1.5))))
    assert [r["error"] is None for r in rows] == [True, False, True]
    assert rows[1]["error"] == "not an image, or a format mmrface cannot read"  # read_image's words, no path
    assert rows[0]["faces"] == 1 and rows[2]["faces"] == 0
    assert all(r["weights_sha256"] == actor.sha256 != "unknown" for r in rows)

    restorer = Restorer("mmrface-small", device="cpu", upscale=1.5, fidelity=0.5)
    expected = restorer.restore(read_image(good).rgb)
    assert np.array_equal(read_image(tmp_path / "out" / good.name).rgb, expected.image)
    # the step-by-step API is the whole of restore()
    p = restorer.prepare(read_image(good).rgb)
    assert np.array_equal(paste_photo(p, restorer.restore_crops(p.crops)).image, expected.image)
    assert read_image(tmp_path / "out" / nothing.name).rgb.shape == (96, 120, 3)
    assert not (tmp_path / "out" / broken.name).exists()


def test_engine_ray_without_ray_says_how_to_install(monkeypatch, tmp_path, capsys):
    for name in ("ray", "ray.data"):
        monkeypatch.setitem(sys.modules, name, None)  # `import ray` raises ImportError
    rc = main(["restore", "-i", str(PHOTOS), "-o", str(tmp_path / "out"), "--engine", "ray"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert err == "mmrface: error: --engine ray needs Ray Data, which is not installed here: pip install 'mmrface[ray]'"
    assert not (tmp_path / "out").exists()


def test_flags_the_ray_engine_refuses(tmp_path, capsys):
    rc = main(["restore", "-i", str(PHOTOS), "-o", str(tmp_path), "--engine", "ray", "--compare"])
    assert rc == 2 and "--compare: not available with --engine ray" in capsys.readouterr().err
    rc = main(["restore", "-i", str(PHOTOS), "-o", "s3://bucket/out", "--engine", "ray"])
    assert rc == 2 and "name a local results manifest with --results" in capsys.readouterr().err


def test_remote_uris_through_a_pyarrow_filesystem(tmp_path, monkeypatch):
    """The s3:// code paths (listing, fetch once, decode from bytes, upload) on a local pyarrow
    filesystem standing in for the bucket: no network in tests."""
    from pyarrow import fs as pafs

    from mmrface.batch import files
    from mmrface.batch.stages import RestoreActor, finish_batch, prepare_batch, rows_of

    bucket = tmp_path / "store"
    monkeypatch.setattr(files, "_remote_fs", lambda uri: pafs.SubTreeFileSystem(str(bucket), pafs.LocalFileSystem()))
    (bucket / "arch" / "in").mkdir(parents=True)
    good = _photo(bucket / "arch" / "in", "grace_hopper.jpg")
    _touch(bucket / "arch/in/broken.png", b"\x89PNG\r\n\x1a\n truncated")
    inputs, root = list_inputs("s3://arch/in/")
    assert inputs == ["s3://arch/in/broken.png", "s3://arch/in/grace_hopper.png"] and root == "s3://arch/in"
    plan = plan_outputs(inputs, root, "s3://arch/out", "auto", "")
    assert [d for _, d, _ in plan] == ["s3://arch/out/broken.png", "s3://arch/out/grace_hopper.png"]
    batch = {"input": np.array(inputs, object), "output": np.array([d for _, d, _ in plan], object)}
    actor = RestoreActor("mmrface-small", device="cpu", fidelity=0.5, batch_size=4)
    prepared = prepare_batch(batch, size=actor.restorer.size, detector="auto", upscale=1)
    assert prepared["data"][1] == good.read_bytes()  # fetched once, carried to the paste stage
    rows = rows_of(finish_batch(actor(prepared)))
    assert rows[0]["error"].startswith("corrupt or truncated image") and rows[1]["error"] is None
    expected = Restorer("mmrface-small", device="cpu", upscale=1, fidelity=0.5).restore(read_image(good).rgb).image
    assert np.array_equal(read_image(bucket / "arch/out/grace_hopper.png").rgb, expected)
    assert sorted(p.name for p in (bucket / "arch/out").iterdir()) == ["grace_hopper.png"]
