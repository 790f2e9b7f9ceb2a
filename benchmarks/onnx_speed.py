"""Eager torch vs ONNX Runtime network time per face, interleaved, for one config (random weights).

    python benchmarks/onnx_speed.py [--config 512] [--rounds 6] [--threads 2] [--batch 1]

`benchmarks/speed.py --backends torch,onnxruntime` gives the full table (pipeline, memory), but its
rows run one after another; on a shared machine the load changes between rows. Here each backend
lives in its own persistent process (no thread pools or caches shared) and the two are called
alternately, one at a time, `--rounds` times after a warm-up, so both see the same load. Reported:
median wall and CPU seconds per face, the eager/ORT ratio, and the load average before and after.
Backends: torch = the model as `Restorer` runs it (fused modconv, inference mode, const noise);
onnxruntime = `mmrface export` defaults (non-fused modconv, dynamic batch, const noise) run by
`OrtNetwork` (ORT_ENABLE_ALL, sequential, no spinning), both on `--threads` threads.
Prints one markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(backend: str, config: str, threads: int, batch: int, conn) -> None:
    """Build the network for `backend`, then time one call per message until told to stop."""
    import torch

    from mmrface.config import load_config
    from mmrface.models import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(load_config(config).model).eval()
    x = torch.rand(batch, 3, model.size, model.size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    if backend == "torch":
        def call():
            with torch.inference_mode():
                model(x, w=0.5, noise_mode="const")
    else:
        from mmrface.export.onnx import cached_export
        from mmrface.export.ort_backend import OrtNetwork

        path = cached_export(model, Path(tempfile.gettempdir()) / "mmrface-speed-onnx", dynamic_batch=True,
                             noise="const")
        net = OrtNetwork(path, threads=threads)
        del model

        def call():
            net(x, 0.5)
    conn.send("ready")
    while conn.recv() == "go":
        c0, t0 = time.process_time(), time.perf_counter()
        call()
        conn.send((time.perf_counter() - t0, time.process_time() - c0))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="512")
    ap.add_argument("--rounds", type=int, default=6, help="timed calls per backend (median)")
    ap.add_argument("--threads", type=int, default=None, help="threads for both (default: torch's default)")
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args(argv)
    import torch

    threads = args.threads or torch.get_num_threads()
    ctx = get_context("spawn")
    procs, conns = {}, {}
    for backend in ("torch", "onnxruntime"):
        parent, child = ctx.Pipe()
        procs[backend] = ctx.Process(target=worker, args=(backend, args.config, threads, args.batch, child))
        procs[backend].start()
        conns[backend] = parent
    for backend in conns:  # building / exporting takes a while: wait until both are ready
        assert conns[backend].recv() == "ready"
    load0 = os.getloadavg()
    times: dict[str, list[tuple[float, float]]] = {b: [] for b in conns}
    for r in range(args.rounds + 1):  # round 0 is the warm-up
        for backend, conn in conns.items():
            conn.send("go")
            wall, cpu = conn.recv()
            if r:
                times[backend].append((wall / args.batch, cpu / args.batch))
    load1 = os.getloadavg()
    for conn in conns.values():
        conn.send("stop")
    for p in procs.values():
        p.join()

    med = {b: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for b, v in times.items()}
    print(f"# onnx_speed.py: {Path(args.config).name}, batch {args.batch}, {threads} threads, {args.rounds} "
          f"interleaved rounds after 1 warm-up; {os.cpu_count()} CPUs; load average {load0[0]:.1f} before, "
          f"{load1[0]:.1f} after")
    print("| backend | wall s/face (median) | min | CPU s/face (median) | eager torch / this (wall) | (CPU) |")
    print("|---|---|---|---|---|---|")
    for b, (wall, cpu) in med.items():
        print(f"| {b} | {wall:.3f} | {min(w for w, _ in times[b]):.3f} | {cpu:.3f} | "
              f"{med['torch'][0] / wall:.2f}x | {med['torch'][1] / cpu:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
