"""Speed and memory of the restorer: network per face, whole pipeline per photo, peak RSS.

    python benchmarks/speed.py --config 512 [--weights W] [--threads N] [--repeats 5]
                               [--batch 4] [--devices cpu,cuda] [--photos astronaut.png portrait_exif.jpg]

Prints one markdown table. Rows, per device (CPU, and CUDA when present):

* network, batch 1 and batch B: one call of the restorer's network (`Restorer.network`, the same
  callable `Restorer.restore` uses: fidelity 0.5, constant/zero noise, fp16 on CUDA) on random
  crops; time per face = batch time / B.
* the same for GFPGANv1Clean (`src/mmrface/configs/gfpgan_v1clean.yaml`, our implementation of its
  architecture, random weights) as the reference measured in the same run; "vs GFPGANv1Clean" is
  our time per face divided by its time per face at the same batch size.
* pipeline on each photo (`assets/photos/`): detect (default detector, with its fallback) /
  align / restore (network, batched) / paste (at `--upscale`), what `Restorer.restore` does,
  each timed; "vs GFPGANv1Clean" is the whole pipeline's time per face divided by GFPGANv1Clean's
  network alone at batch 1 (the target in docs/design.md: <= 0.5 on CPU).

Every row runs in a fresh process (spawned), so "peak RSS" (getrusage ru_maxrss, with torch
imported and the model built) is that row's own peak, not the benchmark's. Times are medians of
`--repeats` runs after `--warmup` runs. Weights are random unless `--weights` is given (the time of
a network does not depend on its weights). `--backends torch,onnxruntime` adds ONNX Runtime rows
(the network exported once per weights to a temp cache, dynamic batch; see `make_network`).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "assets" / "photos"
REFERENCE_CONFIG = "gfpgan_v1clean"
BACKENDS = ("torch", "onnxruntime")
ONNX_CACHE = Path(tempfile.gettempdir()) / "mmrface-speed-onnx"  # exported graphs, keyed by a weights hash


# -- backend hook ---------------------------------------------------------------------------------
def make_network(backend: str, model, model_cfg: dict, device: str):
    """The network callable for `Restorer(network=...)`, or None for the plain torch model.

    A backend returns an object with `__call__(x: Tensor[N, 3, S, S] in [-1, 1], w: float) ->
    Tensor[N, 3, S, S]` and a `size` attribute (S). HOOK (issue 8): add "onnxruntime" here, e.g.
    export `model` with `mmrface.export` and wrap an `onnxruntime.InferenceSession` on `device`.
    """
    if backend == "torch":
        return None
    if backend == "onnxruntime":  # dynamic-batch graph, const noise, ORT_ENABLE_ALL, torch's thread count
        import torch

        from mmrface.export.onnx import cached_export
        from mmrface.export.ort_backend import OrtNetwork, default_providers

        path = cached_export(model, ONNX_CACHE, dynamic_batch=True, noise="const")
        return OrtNetwork(path, threads=torch.get_num_threads(), providers=default_providers(device))
    raise SystemExit(f"speed.py: backend {backend!r} is not wired in yet (see make_network; "
                     "ONNX Runtime rows are issue 8)")


# -- measurements (each in its own process) ---------------------------------------------------
def _setup(spec: dict):
    import torch

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    return torch


def _build(spec: dict):
    """(model, model config, label) from --weights, or a config with random weights."""
    if spec.get("weights"):
        import torch

        from mmrface.models import RESTORERS, load_model

        model, meta = load_model(spec["weights"], arch=RESTORERS, device=torch.device("cpu"))
        return model, meta["config"]["model"], Path(str(spec["weights"])).stem
    from mmrface.models import build_model

    model_cfg, name = model_config(spec)
    return build_model(model_cfg).eval(), model_cfg, name


def model_config(spec: dict) -> tuple[dict, str]:
    """(model section, name) of --weights (its embedded config) or of --config; `size` overridable."""
    if spec.get("weights"):
        import json

        from mmrface.weights import read_metadata, resolve_weights

        path = resolve_weights(spec["weights"])
        model_cfg = dict(json.loads(read_metadata(path)["config"])["model"])
        name = str(spec["weights"]) if not Path(str(spec["weights"])).exists() else path.stem
    else:
        from mmrface.config import load_config

        cfg = load_config(spec["config"])
        model_cfg, name = dict(cfg.model), cfg.name
    if spec.get("size"):
        model_cfg["size"] = spec["size"]
    return model_cfg, name


def _restorer(spec: dict):
    from mmrface.pipeline.restorer import Restorer

    model, model_cfg, _ = _build(spec)
    network = make_network(spec["backend"], model, model_cfg, spec["device"])
    return Restorer(device=spec["device"], upscale=spec["upscale"], batch_size=spec["batch"],
                    model=None if network is not None else model, network=network)


def _peaks(torch) -> dict:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"rss_mib": rss / (1 << 20) if sys.platform == "darwin" else rss / 1024}
    if torch.cuda.is_available():
        out["cuda_mib"] = torch.cuda.max_memory_allocated() / (1 << 20)
    return out


def _sync(torch, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_network(spec: dict) -> dict:
    """Median seconds of one network call on `spec['batch']` random crops."""
    torch = _setup(spec)
    restorer = _restorer(spec)
    x = torch.rand(spec["batch"], 3, restorer.size, restorer.size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    times = []
    for i in range(spec["warmup"] + spec["repeats"]):
        _sync(torch, spec["device"])
        t0 = time.perf_counter()
        restorer.network(x, 0.5)
        _sync(torch, spec["device"])
        if i >= spec["warmup"]:
            times.append(time.perf_counter() - t0)
    return {"restore": statistics.median(times), "total": statistics.median(times), "faces": spec["batch"],
            "size": restorer.size, **_peaks(torch)}


def time_pipeline(spec: dict) -> dict:
    """Median seconds of detect / align / restore / paste on one photo."""
    from mmrface.pipeline.align import align_faces
    from mmrface.pipeline.imageio import read_image
    from mmrface.pipeline.paste import paste_faces

    torch = _setup(spec)
    restorer = _restorer(spec)
    rgb = read_image(spec["photo"]).rgb
    steps: dict[str, list[float]] = {k: [] for k in ("detect", "align", "restore", "paste", "total")}
    n_faces = 0
    for i in range(spec["warmup"] + spec["repeats"]):
        t = [time.perf_counter()]
        faces = restorer.find_faces(rgb)
        t.append(time.perf_counter())
        crops, affines = align_faces(rgb, faces, restorer.size)
        t.append(time.perf_counter())
        restored = restorer.restore_crops(crops)
        _sync(torch, spec["device"])
        t.append(time.perf_counter())
        paste_faces(rgb, restored, affines, upscale=restorer.upscale)
        t.append(time.perf_counter())
        n_faces = len(faces)
        if i >= spec["warmup"]:
            for k, a, b in zip(("detect", "align", "restore", "paste"), t, t[1:]):
                steps[k].append(b - a)
            steps["total"].append(t[-1] - t[0])
    h, w = rgb.shape[:2]
    return {**{k: statistics.median(v) for k, v in steps.items()}, "faces": n_faces, "photo": f"{w}x{h}",
            **_peaks(torch)}


def run_isolated(fn, spec: dict) -> dict:
    """`fn(spec)` in a freshly spawned process (own peak RSS, no shared warm caches)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, spec).result()


# -- table --------------------------------------------------------------------------------------
def _s(v) -> str:
    return "" if v is None else f"{v:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="512", help="model config: a bundled name or a file (random weights)")
    ap.add_argument("--weights", default=None, help="registry name or weight file (replaces --config)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per row (median)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    ap.add_argument("--batch", type=int, default=4, help="batch size of the batched network row")
    ap.add_argument("--upscale", type=float, default=2, help="pipeline output scale -s")
    ap.add_argument("--devices", default=None, help="comma-separated (default: cpu, and cuda when present)")
    ap.add_argument("--backends", default="torch", help=f"comma-separated network backends ({', '.join(BACKENDS)})")
    ap.add_argument("--photos", nargs="+", default=["astronaut.png", "portrait_exif.jpg"],
                    help="photos for the pipeline rows (names in assets/photos or paths)")
    ap.add_argument("--no-reference", action="store_true", help="skip the GFPGANv1Clean rows")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.batch < 1:
        ap.error("--repeats and --batch must be >= 1, --warmup >= 0")

    import torch

    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    photos = [Path(p) if Path(p).is_file() else PHOTOS / p for p in args.photos]
    for p in photos:
        if not p.is_file():
            ap.error(f"photo not found: {p}")
    base = {"config": args.config, "weights": args.weights, "threads": args.threads, "repeats": args.repeats,
            "warmup": args.warmup, "upscale": args.upscale}
    from mmrface.errors import UserError

    try:
        ours_cfg, ours_label = model_config(base)
    except (UserError, KeyError, ValueError) as exc:
        print(f"speed.py: error: {exc}", file=sys.stderr)
        return 2
    # the reference at our face size (GFPGANv1Clean's own size is 512)
    ref = {**base, "config": str(REFERENCE_CONFIG), "weights": None, "backend": "torch",
           "size": ours_cfg["size"]}
    rows, has_cuda = [], False
    for device in devices:
        reference: dict[int, float] = {}
        if not args.no_reference:
            for b in sorted({1, args.batch}):
                r = run_isolated(time_network, {**ref, "device": device, "batch": b})
                reference[b] = r["total"] / b
                rows.append((device, "torch", "GFPGANv1Clean (ours)", f"network, batch {b}", r, 1.0))
        for backend in backends:
            spec = {**base, "device": device, "backend": backend}
            for b in sorted({1, args.batch}):
                r = run_isolated(time_network, {**spec, "batch": b})
                ratio = r["total"] / b / reference[b] if b in reference else None
                rows.append((device, backend, ours_label, f"network, batch {b}", r, ratio))
            for photo in photos:
                r = run_isolated(time_pipeline, {**spec, "batch": args.batch, "photo": str(photo)})
                ratio = r["total"] / r["faces"] / reference[1] if r["faces"] and 1 in reference else None
                rows.append((device, backend, ours_label, f"pipeline {photo.name} ({r['photo']})", r, ratio))
        has_cuda |= device.startswith("cuda")

    header = ["device", "backend", "model", "measured", "faces", "detect s", "align s", "restore s", "paste s",
              "total s", "s/face", "faces/s", "vs GFPGANv1Clean", "peak RSS MiB"] + (["peak CUDA MiB"] if has_cuda else [])
    table = []
    for device, backend, model, what, r, ratio in rows:
        per_face = r["total"] / r["faces"] if r["faces"] else None
        cells = [device, backend, model, what, str(r["faces"]), _s(r.get("detect")), _s(r.get("align")),
                 _s(r["restore"]), _s(r.get("paste")), _s(r["total"]), _s(per_face),
                 f"{1 / per_face:.2f}" if per_face else "", f"{ratio:.2f}x" if ratio else "",
                 f"{r['rss_mib']:.0f}"] + ([f"{r.get('cuda_mib', 0):.0f}"] if has_cuda else [])
        table.append(cells)
    from mmrface.evaluation.report import cpu_name, markdown_rows

    threads = args.threads or torch.get_num_threads()
    print(f"# speed.py, {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"# machine: {cpu_name()}, {__import__('os').cpu_count()} cores, torch {torch.__version__} "
          f"on {threads} threads, {platform.platform()}")
    print(f"# command: python benchmarks/speed.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"# {ours_label}: {ours_cfg.get('arch', 'mmrface')} at {ours_cfg['size']} px; GFPGANv1Clean (ours) = our "
          f"re-implementation ({REFERENCE_CONFIG}), not GFPGAN's own code, at the same size")
    print(f"# medians of {args.repeats} runs after {args.warmup} warm-up; random weights unless --weights; "
          f"pipeline at -s {args.upscale:g}; each row in a fresh process")
    print(markdown_rows(header, table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
