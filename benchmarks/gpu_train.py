"""A short training run of a recipe (512.yaml by default) on one GPU, prepared to run unattended.

Two steps, because the GPU machine receives only a copy of the work tree (a few tens of MiB) and
gives back only a few files:

    # here: pack the training and val faces small enough to travel (JPEG, into an ignored folder)
    python benchmarks/gpu_train.py pack --train data/congress/train --val data/congress/val -o .gpu_pack
    # there: train for at most --minutes of wall time, then copy the results to --out
    python benchmarks/gpu_train.py run --pack .gpu_pack --minutes 10 --out "$OUT"

`run` builds a seeded val set at the recipe's size from the packed val faces (`mmrface
make-testset`, gfpgan preset, seed 7), trains with `train.max_minutes` (the run saves and validates
when the budget ends), and writes to --out: `val.csv` (the val curve), `run.log`, `summary.json`
(steps, s/step, device, the last val scores, the weight file's size and sha256) and the EMA weights
(`ema.safetensors`, fp16) when they fit under `--max-weight-mib` (the 512 recipe's 84 M parameters
do not fit a 64-MiB return: summary.json then says so and gives the sha256 of what stayed behind).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def pack(train: Path, val: Path, out: Path, quality: int = 92, max_mib: float = 60.0, val_count: int = 96) -> dict:
    """JPEG copies of the train faces and the first `val_count` val faces under out/{train,val}."""
    from PIL import Image

    sizes = {}
    for name, src, limit in (("val", val, val_count), ("train", train, None)):
        files = sorted(p for p in Path(src).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
        if not files:
            raise SystemExit(f"error: no images in {src}")
        dst = out / name
        dst.mkdir(parents=True, exist_ok=True)
        for f in files:
            Image.open(f).convert("RGB").save(dst / (f.stem + ".jpg"), quality=quality)
        sizes[name] = len(files)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    if total > max_mib:
        raise SystemExit(f"error: the pack is {total:.1f} MiB, over {max_mib} MiB: lower --quality or pack fewer faces")
    return {**sizes, "mib": round(total, 1)}


def run(pack_dir: Path, out: Path, config: str, minutes: float, device: str, overrides: list[str],
        max_weight_mib: float, work: Path) -> dict:
    import torch
    from safetensors.torch import load_file, save_file

    from mmrface.config import load_config

    size = load_config(config).model["size"]
    valset = work / f"valset{size}"
    if not valset.is_dir():
        subprocess.run([sys.executable, "-m", "mmrface", "make-testset", "-i", str(pack_dir / "val"), "-o", str(valset),
                        "--preset", "gfpgan", "--seed", "7", "--size", str(size)], check=True)
    run_dir = work / "run"
    sets = [f"data.train_root={pack_dir / 'train'}", f"data.val_root={valset}", "data.val_count=0",
            "data.unpaired_root=null", f"train.max_minutes={minutes}", f"train.device={device}",
            f"train.out_dir={run_dir}", "train.ckpt_every=100000", "train.val_every=250", *overrides]
    t0 = time.time()
    cmd = [sys.executable, "-m", "mmrface", "train", "--config", config]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd)
    wall = time.time() - t0
    out.mkdir(parents=True, exist_ok=True)
    summary = {"config": config, "minutes": minutes, "wall_s": round(wall, 1), "exit_code": proc.returncode,
               "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
    for name in ("val.csv", "run.log"):
        if (run_dir / name).is_file():
            (out / name).write_bytes((run_dir / name).read_bytes())
    log = (run_dir / "run.log").read_text() if (run_dir / "run.log").is_file() else ""
    steps = [line for line in log.splitlines() if " step " in line and "/" in line and "s/step" in line]
    if steps:
        summary["last_log_line"] = steps[-1].split(" ", 2)[-1]
    val = (run_dir / "val.csv").read_text().split() if (run_dir / "val.csv").is_file() else []
    if len(val) > 1:
        step, psnr, lpips = val[-1].split(",")
        summary["last_val"] = {"step": int(step), "psnr": float(psnr), "lpips": float(lpips)}
    ema = run_dir / "latest_ema.safetensors"
    if ema.is_file():
        half = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(ema)).items()}
        tmp = work / "ema_fp16.safetensors"
        save_file(half, str(tmp))
        mib = tmp.stat().st_size / 2**20
        summary["weights"] = {"fp16_mib": round(mib, 1), "sha256_fp32": hashlib.sha256(ema.read_bytes()).hexdigest()}
        if mib <= max_weight_mib:
            (out / "ema.safetensors").write_bytes(tmp.read_bytes())
            summary["weights"]["returned"] = "ema.safetensors (fp16)"
        else:
            summary["weights"]["returned"] = f"no: {mib:.0f} MiB in fp16 is over --max-weight-mib {max_weight_mib}"
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack", help="JPEG copies of the train / val faces, small enough to travel")
    a.add_argument("--train", type=Path, required=True)
    a.add_argument("--val", type=Path, required=True)
    a.add_argument("-o", "--out", type=Path, default=Path(".gpu_pack"))
    a.add_argument("--quality", type=int, default=92)
    a.add_argument("--max-mib", type=float, default=60.0)
    b = sub.add_parser("run", help="train on the pack for at most --minutes and copy the results out")
    b.add_argument("--pack", type=Path, default=Path(".gpu_pack"))
    b.add_argument("--config", default="512")
    b.add_argument("--minutes", type=float, default=10.0)
    b.add_argument("--device", default="auto")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--work", type=Path, default=Path("/tmp/mmrface-gpu"))
    b.add_argument("--max-weight-mib", type=float, default=15.0)
    args = p.parse_args(argv)
    if args.cmd == "pack":
        print(json.dumps(pack(args.train, args.val, args.out, args.quality, args.max_mib)))
        return 0
    summary = run(args.pack, args.out, args.config, args.minutes, args.device, args.set, args.max_weight_mib, args.work)
    print(json.dumps(summary, indent=1))
    return 0 if summary["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
