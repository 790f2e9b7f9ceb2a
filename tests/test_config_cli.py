import ast
import subprocess
import sys
from pathlib import Path

import pytest

from mmrface.cli import main
from mmrface.config import load_config
from mmrface.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["tiny", "small", "small_resblock", "512", "512_resblock"])
def test_bundled_configs_load(name):
    cfg = load_config(name)
    assert cfg.model["size"] in (64, 128, 512)
    assert cfg.train.steps > 0


def test_base_and_overrides(tmp_path):
    cfg = load_config("512_resblock", ["train.steps=7", "model.codec.narrow=0.25", "data.train_root=/x"])
    assert cfg.model["codec"]["block"] == "resblock"
    assert cfg.model["prior"]["channel_multiplier"] == 1  # inherited from 512.yaml
    assert cfg.train.steps == 7 and cfg.model["codec"]["narrow"] == 0.25 and cfg.data.train_root == "/x"


def test_unknown_key_is_an_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {size: 64}\ntrain: {stepz: 3}\n")
    with pytest.raises(UserError, match="stepz"):
        load_config(bad)
    with pytest.raises(UserError, match="config not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(UserError, match="key=value"):
        load_config("tiny", ["train.steps"])


def test_info_prints_parts(capsys):
    assert main(["info", "--config", "tiny", "--no-time"]) == 0
    out = capsys.readouterr().out
    for part in ("encoder", "decoder", "prior", "discriminator", "GFLOPs"):
        assert part in out


def test_cli_errors_are_one_line(capsys):
    assert main(["info", "--config", "no-such-config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mmrface: error: config not found")


def test_no_torchvision_import_anywhere():
    offenders = []
    for path in (ROOT / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] == "torchvision" for n in names):
                offenders.append(str(path))
    assert offenders == []


def test_inference_imports_nothing_from_training():
    code = ("import sys, mmrface.pipeline.restorer, mmrface.models.mmrface_net, mmrface.cli; "
            "bad = [m for m in sys.modules if m.startswith(('mmrface.train', 'mmrface.losses', 'torchvision'))]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_package_cites_only_its_own_files_and_finds_them_as_package_data():
    """No comment points at files a user's clone does not have (the project's shared design notes),
    and no file is found by its position in the source tree (`parents[N]`): a wheel has no tree."""
    offenders = []
    for path in (ROOT / "src").rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if any(s in line for s in ("DESIGN.md", "STYLE.md", "../shared", "shared/layouts", "shared/fixtures",
                                       "parents[")):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []
