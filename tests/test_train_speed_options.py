"""The training speed levers (train.cpu_amp, train.channels_last) and colour-balanced sampling
(data.colour_share): real runs at tiny size, exact batch composition, resume of older checkpoints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from mmrface.config import load_config
from mmrface.train.run import cpu_has_bf16
from mmrface.train.trainer import Trainer, _with_defaults

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """Four faces: two in colour, two greyscale, with the colour field `mmrface prepare` writes."""
    root = tmp_path_factory.mktemp("faces")
    entries = {}
    for k, src in enumerate(("face128.png", "metrics_grace_hopper_face_128.png") * 2):
        name = f"f{k}.png"
        shutil.copy(DATA / src, root / name)
        entries[name] = {"5": [[40, 52], [88, 52], [64, 76], [46, 98], [82, 98]], "colour": 80.0 if k < 2 else 3.0}
    (root / "landmarks.json").write_text(json.dumps(entries))
    return root


def tiny(faces: Path, out: Path, *overrides: str):
    return load_config("tiny", ["model.size=32", f"data.train_root={faces}", f"train.out_dir={out}",
                                "train.device=cpu", "train.val_every=0", "train.log_every=1", *overrides])


def test_colour_share_sets_the_colour_faces_of_every_batch_exactly(faces):
    from mmrface.data.datasets import FaceFolderDataset
    from mmrface.train.data import StepBatches

    ds = FaceFolderDataset(faces, 32, None, augment=False, landmarks=None, seed=0)
    colour = ds.colour_flags()
    assert colour == [True, True, False, False]
    sb = StepBatches(ds, 4, seed=0, colour=colour, colour_share=0.75)
    counts = [sum(colour[i] for _, i in sb.keys(t)) for t in range(8)]
    assert counts == [3] * 8  # 0.75 x 4: three colour faces per batch, every batch
    half = StepBatches(ds, 3, seed=0, colour=colour, colour_share=0.5)
    counts = [sum(colour[i] for _, i in half.keys(t)) for t in range(10)]
    assert sum(counts) == 15 and set(counts) <= {1, 2}  # 1.5 per batch on average, exactly over 10 steps
    # a pure function of the step: a fresh sampler (a resumed run) gives the same keys
    again = StepBatches(ds, 3, seed=0, colour=colour, colour_share=0.5)
    assert [again.keys(t) for t in range(10)] == [half.keys(t) for t in range(10)]
    # every colour face comes round once per pass of the colour stream
    assert sorted(i for t in range(2) for _, i in sb.keys(t) if colour[i])[:6] == [0, 0, 0, 1, 1, 1]


def test_colour_share_without_colour_faces_is_one_line(faces, tmp_path):
    from mmrface.data.datasets import FaceFolderDataset
    from mmrface.errors import UserError
    from mmrface.train.data import StepBatches

    ds = FaceFolderDataset(faces, 32, None, augment=False, landmarks=None, seed=0)
    with pytest.raises(UserError, match="no colour face"):
        StepBatches(ds, 2, seed=0, colour=[False] * 4, colour_share=0.5)


def test_bf16_channels_last_colour_balanced_run_trains_and_says_so(faces, tmp_path):
    cfg = tiny(faces, tmp_path / "run", "train.steps=12", "train.ckpt_every=100", "data.augment=false",
               "data.degradation={preset: sr4}", "loss.selfsup.p_identity=0", "train.betas=[0.9, 0.99]",
               "train.cpu_amp=true", "train.channels_last=true", "data.colour_share=0.5")
    t = Trainer(cfg, progress=False)
    t.fit()
    totals = [h["total"] for h in t.history]
    assert all(torch.isfinite(torch.tensor(totals))) and sum(totals[-3:]) < sum(totals[:3])
    log = (tmp_path / "run" / "run.log").read_text()
    expected = "bf16 autocast (CPU)" if cpu_has_bf16() else "fp32 (train.cpu_amp: this CPU has no native bf16)"
    assert expected in log and "memory format: channels_last" in log
    assert "colour-balanced: 0.5 of each batch from the 2 colour faces" in log
    assert t.G.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert (tmp_path / "run" / "latest_ema.safetensors").stat().st_size > 0


def test_a_checkpoint_from_before_a_new_option_resumes_at_its_default(faces, tmp_path):
    cfg = tiny(faces, tmp_path / "run")
    record = json.loads(json.dumps(cfg.to_dict()))
    for section, key in (("train", "cpu_amp"), ("train", "channels_last"), ("data", "colour_share")):
        del record[section][key]  # as written before these keys existed
    filled = _with_defaults(record)
    assert filled["train"]["cpu_amp"] is False and filled["data"]["colour_share"] is None
    assert filled["data"]["degradation"] == record["data"]["degradation"]  # dict values are not merged
