"""Distributed training: two gloo ranks on the CPU under torchrun end with identical weights."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).parent / "data"

WORKER = r'''
import hashlib, json, os, sys
from pathlib import Path
import torch
from mmrface.config import load_config
from mmrface.train.trainer import train

torch.set_num_threads(1)
sums_dir, overrides = Path(sys.argv[1]), sys.argv[2:]
trainer = train(load_config("tiny", overrides), progress=False)

def digest(module):
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode()); h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()

rank = int(os.environ["RANK"])
record = {"rank": rank, "world": trainer.ctx.world, "g": digest(trainer.G), "g_ema": digest(trainer.ema.model),
          "d": digest(trainer.D), "steps": len(trainer.history)}
(sums_dir / f"rank{rank}.json").write_text(json.dumps(record))
'''


def test_torchrun_two_ranks_gloo_identical_parameters(tmp_path):
    faces = tmp_path / "faces"
    faces.mkdir()
    for i, name in enumerate(("face128.png", "metrics_grace_hopper_face_128.png", "metrics_astronaut_face_128.png")):
        shutil.copy(DATA / name, faces / f"{i}.png")
    sums, out = tmp_path / "sums", tmp_path / "run"
    sums.mkdir()
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    overrides = ["model.size=32", f"data.train_root={faces}", f"train.out_dir={out}", "train.device=cpu",
                 "train.steps=3", "train.ckpt_every=2", "train.val_every=0", "train.log_every=1",
                 "loss.gan=0.1", "loss.r1_every=2", "loss.selfsup.p_identity=0.5", "train.fidelity_range=[0.5,1]"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(worker), str(sums), *overrides]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((sums / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2 and r0["steps"] == r1["steps"] == 3
    for key in ("g", "g_ema", "d"):
        assert r0[key] == r1[key], f"{key} differs between the ranks"
    # only rank 0 wrote: one log, one set of checkpoints
    log = (out / "run.log").read_text()
    assert "ranks: 2" in log and log.count("step 3/3") == 1
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        f"step_{s:08d}{ext}" for s in (2, 3) for ext in (".json", ".optim.safetensors", ".safetensors")]
    assert (out / "latest_ema.safetensors").is_file()


def test_ranks_read_disjoint_shards_and_batches_depend_only_on_the_step():
    from mmrface.train.data import StepBatches

    class Items:
        def __len__(self):
            return 5

        def set_epoch(self, e):
            pass

    world = 2
    shards = [StepBatches(Items(), 2, seed=0, rank=r, world=world) for r in range(world)]
    first_epoch = [set(i for _, i in s.keys(0) + s.keys(1)[:1]) for s in shards]  # 3 samples per rank
    assert first_epoch[0] | first_epoch[1] == set(range(5))
    assert all(s.keys(3) == StepBatches(Items(), 2, 0, r, world).keys(3) for r, s in enumerate(shards))
