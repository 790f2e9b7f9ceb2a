"""Training throughput of a recipe on this machine, one variant per fresh process.

Each variant runs the real training path (`mmrface.train.Trainer.fit`: data loading, degradation,
forward, every loss term of the recipe, backward, clipping, Adam, EMA) for `--warmup` + `--steps`
steps on the recipe's own data and reports the median seconds per step of the timed steps and
paired samples per second (`data.batch_size` / s). Validation and checkpoints are off (they are not
per-sample work); nothing is written outside a temporary folder.

    python benchmarks/train_speed.py --config small                 # the default variant table
    python benchmarks/train_speed.py --config small --variants fp32:1,bf16+cl:2 --steps 20
    python benchmarks/train_speed.py --config small --variants fp32:1,bf16+cl+unfused:2 --curve 300 --val-every 50

`--curve N` checks that a variant learns the same per sample: each variant trains N steps from the
same seed with validation (EMA, w = 1, the config's val set) every `--val-every` steps, and the
table gives PSNR / LPIPS per validation step side by side.

A variant is `FLAGS:THREADS[:WORKERS]`, FLAGS joined by `+` from fp32 | bf16 (train.cpu_amp) |
cl (train.channels_last) | unfused (train.fused_modconv=false) | compile (torch.compile of the
generator's forward).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_VARIANTS = "fp32:1,fp32:2,bf16:2,fp32+cl:2,bf16+cl:2,bf16+cl+unfused:2,bf16+cl+unfused:2:1"
FLAGS = {"fp32", "bf16", "cl", "unfused", "compile"}


def parse_variant(text: str) -> dict:
    parts = text.split(":")
    if not 2 <= len(parts) <= 3:
        raise ValueError(f"variant {text!r}: expected FLAGS:THREADS[:WORKERS]")
    flags = set(parts[0].split("+"))
    if not flags <= FLAGS:
        raise ValueError(f"variant {text!r}: unknown flags {sorted(flags - FLAGS)} (known: {sorted(FLAGS)})")
    return {"name": text, "bf16": "bf16" in flags, "cl": "cl" in flags, "compile": "compile" in flags,
            "unfused": "unfused" in flags,
            "threads": int(parts[1]), "workers": int(parts[2]) if len(parts) == 3 else 0}


def variant_overrides(v: dict, steps: int, out_dir: str, val_every: int = 0) -> list[str]:
    """The config overrides one variant runs with (checkpoints off; validation off unless asked)."""
    return [f"train.cpu_amp={str(v['bf16']).lower()}", f"train.channels_last={str(v['cl']).lower()}",
            f"train.fused_modconv={str(not v['unfused']).lower()}",
            f"data.num_workers={v['workers']}", f"train.steps={steps}", f"train.val_every={val_every}",
            f"train.ckpt_every={steps + 1}", f"train.out_dir={out_dir}", "train.device=cpu"]


def _child(config: str, overrides: list[str], v: dict, steps: int, val_every: int, queue) -> None:
    import torch

    torch.set_num_threads(v["threads"])
    from mmrface.config import load_config
    from mmrface.train.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(config, overrides + variant_overrides(v, steps, tmp, val_every))
        trainer = Trainer(cfg, progress=False)
        if v["compile"]:
            G = trainer.G
            G.forward = torch.compile(G.forward)
        t0 = time.perf_counter()
        trainer.fit()
        ends = [t0] + trainer.step_ends
        val = Path(tmp) / "val.csv"
        curve = [line.split(",") for line in val.read_text().split()[1:]] if val.is_file() else []
        queue.put({"durations": [b - a for a, b in zip(ends, ends[1:])], "batch": cfg.data.batch_size,
                   "unpaired": cfg.data.unpaired_batch_size,
                   "curve": [(int(a), float(b), float(c)) for a, b, c in curve]})


def measure(config: str, overrides: list[str], v: dict, warmup: int, steps: int, val_every: int = 0) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(config, overrides, v, warmup + steps, val_every, queue))
    proc.start()
    while True:  # a child that fails (bad config, out of memory) must not leave us waiting
        try:
            result = queue.get(timeout=5)
            break
        except Exception:
            if not proc.is_alive():
                raise SystemExit(f"variant {v['name']}: the training process exited with code {proc.exitcode}")
    proc.join()
    timed = result["durations"][warmup:]
    s = statistics.median(timed)
    return {**v, "s_per_step": s, "samples_per_s": result["batch"] / s, "batch": result["batch"],
            "unpaired": result["unpaired"], "first_step_s": result["durations"][0], "curve": result["curve"]}


def table(rows: list[dict], command: str) -> str:
    base = rows[0]["samples_per_s"]
    out = [f"{time.strftime('%Y-%m-%d')}, `{command}`", "",
           "| variant | threads | precision | memory format | modulated convs | data workers | s / step | samples / s | vs first row |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        prec = "bf16 autocast" if r["bf16"] else "fp32"
        fmt = "channels_last" if r["cl"] else "contiguous"
        comp = " + torch.compile" if r["compile"] else ""
        mod = "unfused" if r["unfused"] else "fused"
        out.append(f"| {r['name']} | {r['threads']} | {prec}{comp} | {fmt} | {mod} | {r['workers']} | {r['s_per_step']:.3f} "
                   f"| {r['samples_per_s']:.2f} | {r['samples_per_s'] / base:.2f}x |")
    return "\n".join(out)


def curve_table(rows: list[dict], command: str) -> str:
    steps = sorted({c[0] for r in rows for c in r["curve"]})
    head = " | ".join(f"{r['name']} PSNR / LPIPS" for r in rows)
    out = [f"{time.strftime('%Y-%m-%d')}, `{command}`", "", f"| step | {head} |", "|---" * (len(rows) + 1) + "|"]
    for step in steps:
        cells = []
        for r in rows:
            got = [c for c in r["curve"] if c[0] == step]
            cells.append(f"{got[0][1]:.2f} dB / {got[0][2]:.4f}" if got else "-")
        out.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="small", help="recipe (name or YAML path)")
    p.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma-separated FLAGS:THREADS[:WORKERS] (default {DEFAULT_VARIANTS})")
    p.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--curve", type=int, default=0, metavar="N", help="train N steps per variant with validation "
                   "and print the val curves side by side (instead of timing)")
    p.add_argument("--val-every", type=int, default=50, help="with --curve: validate every this many steps")
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args(argv)
    try:
        variants = [parse_variant(t) for t in args.variants.split(",") if t]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = []
    for v in variants:
        if args.curve:
            row = measure(args.config, args.set, v, 0, args.curve, args.val_every)
        else:
            row = measure(args.config, args.set, v, args.warmup, args.steps)
        print(f"{v['name']}: {row['s_per_step']:.3f} s/step, {row['samples_per_s']:.2f} samples/s", file=sys.stderr, flush=True)
        rows.append(row)
    command = "python benchmarks/train_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(curve_table(rows, command.strip()) if args.curve else table(rows, command.strip()))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
