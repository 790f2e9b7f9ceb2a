"""Every config value is type- and range-checked: a bad one is one line naming key, value and rule."""

import numpy as np
import pytest

from mmrface.cli import main
from mmrface.config import load_config
from mmrface.errors import UserError

BAD = [
    ("train.lr_g=fast", r"config train.lr_g = 'fast': expected a number \(> 0, <= 1\)"),
    ("train.lr_g=-1", r"config train.lr_g = -1.0: expected a number \(> 0"),
    ("train.betas=0.9", r"config train.betas = 0.9: expected a list of two numbers"),
    ("train.seed=x", r"config train.seed = 'x': expected an integer \(>= 0\)"),
    ("train.ema_decay=abc", r"config train.ema_decay = 'abc': expected a number"),
    ("train.fidelity_range=0.5", r"config train.fidelity_range = 0.5: expected a list of two numbers"),
    ("train.fidelity_range=[0.8, 0.2]", r"fidelity_range = \[0.8, 0.2\]: low must be <= high"),
    ("train.steps=0", r"config train.steps = 0: expected an integer \(>= 1\)"),
    ("train.lr_schedule=linear", r"expected a string \(one of \['constant', 'cosine'\]\)"),
    ("train.amp=maybe", r"config train.amp = 'maybe': expected true or false"),
    ("loss.r1=abc", r"config loss.r1 = 'abc': expected a number \(>= 0\)"),
    ("loss.l1=-0.5", r"config loss.l1 = -0.5: expected a number \(>= 0\)"),
    ("loss.lpips_net=resnet", r"config loss.lpips_net = 'resnet'"),
    ("loss.selfsup.lowpass_scale=3", r"config loss.selfsup.lowpass_scale = 3: expected an integer \(one of"),
    ("loss.selfsup.p_identity=1.5", r"config loss.selfsup.p_identity = 1.5: expected a number \(>= 0, <= 1\)"),
    ("data.batch_size=0", r"config data.batch_size = 0"),
    ("data.num_workers=two", r"config data.num_workers = 'two'"),
    ("data.degradation.blur_prob=abc", r"data.degradation: degradation: blur_prob must be a number, got 'abc'"),
    ("data.degradation.sigma=[a, 2]", r"sigma must be a number or \[low, high\]"),
    ("data.degradation={mix: {gfpgan: 1, heavy: x}}", r"the weight of 'heavy' must be a number"),
    ("data=3", r"config section data must be a mapping"),
    ("train.lr=0.1", r"unknown config key\(s\) in train: \['lr'\]"),
]


@pytest.mark.parametrize("override, message", BAD)
def test_bad_value_is_one_clear_line(override, message):
    with pytest.raises(UserError, match=message) as err:
        load_config("tiny", [override])
    assert "\n" not in str(err.value)


def test_numbers_written_as_yaml_strings_are_accepted():
    cfg = load_config("small", ["train.lr_g=2e-4", "train.steps=10"])  # YAML reads 2e-4 as a string
    assert cfg.train.lr_g == pytest.approx(2e-4) and cfg.train.betas == (0.9, 0.99)


def test_cli_prints_one_line_and_exits_2(capsys):
    assert main(["train", "--config", "tiny", "--set", "train.ema_decay=abc"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["mmrface: error: config train.ema_decay = 'abc': expected a number (>= 0, <= 1)"]


def test_a_folder_where_nothing_decodes_is_one_line_even_with_workers(tmp_path, capsys):
    import cv2

    ok, png = cv2.imencode(".png", np.zeros((64, 64, 3), np.uint8))
    for k in range(3):  # valid headers, truncated data: they pass the index and fail to decode
        (tmp_path / f"b{k}.png").write_bytes(bytes(png)[:60] + b"\0" * 100)
    rc = main(["train", "--config", "tiny", "--out", str(tmp_path / "run"), "--set", f"data.train_root={tmp_path}",
               "--set", "data.num_workers=1", "--set", "train.val_every=0", "--no-progress"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("mmrface")]
    assert rc == 2 and err == [f"mmrface: error: none of the images in {tmp_path} can be decoded"]
    assert not (tmp_path / "run").exists()
