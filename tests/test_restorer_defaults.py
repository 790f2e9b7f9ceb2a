"""GFPGAN weights restore like GFPGAN unless told otherwise: w = 1 by default; the noise is a flag."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmrface.cli import main
from mmrface.config import load_config
from mmrface.errors import UserError
from mmrface.models import build_model
from mmrface.pipeline.restorer import DEFAULT_FIDELITY, Restorer
from mmrface.weights import read_metadata, save_weights

GFPGAN_TINY = Path(__file__).parent / "fixtures" / "gfpgan_v1clean_tiny64_ckpt.pth"


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gfpgan") / "gfpgan_tiny.safetensors"
    assert main(["weights", "import", str(GFPGAN_TINY), "-o", str(out)]) == 0
    return out


def test_imported_and_raw_gfpgan_files_default_to_full_fidelity(imported):
    assert read_metadata(imported)["default_fidelity"] == "1.0"
    assert Restorer(imported, device="cpu").fidelity == 1.0
    assert Restorer(GFPGAN_TINY, device="cpu").fidelity == 1.0  # a .pth converted on load: the same
    assert Restorer(imported, device="cpu", fidelity=0.3).fidelity == 0.3  # -w wins


def test_other_weights_keep_the_global_default(tmp_path):
    cfg = load_config("tiny")
    path = tmp_path / "tiny.safetensors"
    save_weights(path, build_model(cfg.model).state_dict(), cfg.to_dict())
    assert Restorer(path, device="cpu").fidelity == DEFAULT_FIDELITY == 0.5


def test_noise_choice_is_a_flag(imported):
    crops = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    stored = Restorer(imported, device="cpu")
    assert np.array_equal(stored.restore_crops(crops), stored.restore_crops(crops))  # repeatable
    rand = Restorer(imported, device="cpu", noise="random")
    assert not np.array_equal(rand.restore_crops(crops), rand.restore_crops(crops))  # GFPGAN's draw per call
    zero = Restorer(imported, device="cpu", noise="zero")
    assert not np.array_equal(zero.restore_crops(crops), stored.restore_crops(crops))
    with pytest.raises(UserError, match="noise must be one of"):
        Restorer(imported, device="cpu", noise="const")


def test_a_file_trained_at_one_fidelity_cautions_at_others(tmp_path, capsys):
    from mmrface.pipeline.restorer import fidelity_note

    assert fidelity_note({"fidelity_trained": "1.0"}, 1.0) is None
    assert fidelity_note({}, 0.5) is None and fidelity_note({"fidelity_trained": "x"}, 0.5) is None
    assert "last trained at w = 1 only and restore worse at w = 0.5" in fidelity_note({"fidelity_trained": "1"}, 0.5)
    cfg = load_config("tiny")
    path = tmp_path / "tiny.safetensors"
    save_weights(path, build_model(cfg.model).state_dict(), cfg.to_dict(),
                 {"default_fidelity": "1.0", "fidelity_trained": "1.0"})
    photo = tmp_path / "in.png"
    from PIL import Image

    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(photo)
    for extra, noted in (([], False), (["-w", "0.5"], True)):
        assert main(["restore", str(photo), "--aligned", "-o", str(tmp_path / f"o{len(extra)}"), "-q",
                     "--weights", str(path), *extra]) == 0
        err = capsys.readouterr().err
        assert ("mmrface: note: these weights were last trained at w = 1 only" in err) == noted, err
