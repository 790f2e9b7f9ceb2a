"""A built wheel carries everything the package looks up at run time (configs, registries, sample
photos and faces, bundled weights): installed into a fresh virtualenv, it works outside the
source tree."""

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_finds_its_files(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(dist), str(ROOT)], check=True, cwd=tmp_path)
    wheel = next(dist.glob("mmrface-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    # the dependencies (torch, numpy, ...) come from this environment, the package from the wheel only
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", str(wheel)],
                   check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = lambda *args: subprocess.run([str(py), "-m", "mmrface", *args], cwd=elsewhere, capture_output=True,  # noqa: E731
                                       text=True, timeout=600)
    where = subprocess.run([str(py), "-c", "import mmrface; print(mmrface.__file__)"], cwd=elsewhere,
                           capture_output=True, text=True, check=True).stdout
    assert str(site) in where and str(ROOT) not in where  # the installed copy, not the checkout
    info = run("info", "--config", "512", "--no-time")
    assert info.returncode == 0, info.stderr
    assert "restorer" in info.stdout and "prior" in info.stdout
    listing = run("weights", "verify")
    assert listing.returncode == 0 and "mmrface-small" in listing.stdout + listing.stderr
    sets = run("make-testset", "--benchmark", "-o", "sets", "--size", "32")
    assert sets.returncode == 0, sets.stderr
    assert len(list((elsewhere / "sets" / "sr8" / "lq").glob("*.png"))) == 4  # from the packaged sample faces
