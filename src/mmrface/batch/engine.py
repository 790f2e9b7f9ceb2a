"""Plan a batch run, build the Ray Data pipeline, stream its rows into the results manifest.

Exactly-once in effect: the driver decides what to do from the manifest (a rerun skips every
input with a row); a stage that dies is re-run by Ray (tasks up to `TASK_RETRIES` times, actors
restarted), and since an output appears only by an atomic rename or a completed upload, a re-run
rewrites the same file instead of leaving half of one. Rows reach the manifest only on the driver,
one per input per run. An input whose worker died on every attempt gets an error row.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import warnings

from mmrface.batch.files import filesystem, fs_path, is_remote, local_path
from mmrface.batch.inputs import list_inputs, plan_outputs
from mmrface.batch.manifest import STAGES, ResultsManifest, make_row
from mmrface.batch.stages import describe
from mmrface.errors import UserError

TASK_RETRIES = 3  # a worker that dies (killed, out of memory) is retried; a poison input is not retried forever
ROWS_PER_BLOCK = 4  # inputs per Ray block: the unit of scheduling and of retry


def run_batch(args) -> int:
    from mmrface.pipeline.restorer import Restorer

    _check_flags(args)
    inputs, root = list_inputs(args.input, args.recursive)
    plan = plan_outputs(inputs, root, args.output, args.ext, args.suffix)
    manifest = ResultsManifest(_results_path(args))
    known = {} if args.overwrite else manifest.rows()
    existing = set() if args.overwrite else _existing_files(args.output)
    todo, early, done_before = [], [], 0
    for uri, dst, error in plan:
        old = known.get(uri)
        if old is not None and not (old["status"] == "error" and args.retry_errors):
            done_before += 1
        elif error is not None:
            early.append(make_row(uri, dst, "error", error=error))
        elif fs_path(dst) in existing:
            early.append(make_row(uri, dst, "exists",
                                  error="the output existed before this run and was left alone (--overwrite redoes it)"))
        else:
            todo.append({"input": uri, "output": dst})
    size = None
    if todo:  # built once here on CPU: checks weights, detector, -s and -w before the cluster is used
        from mmrface.hub.choose import announce, choose

        choice = None
        if args.onnx is None and args.backend != "onnx":  # --weights auto / a published name, as restore does
            choice = choose(args.weights, no_download=args.no_download, progress=not args.quiet)
            args.weights = choice.weights
        probe = Restorer(args.weights, device="cpu", upscale=args.upscale, detector=args.detector,
                         fidelity=args.fidelity, batch_size=args.batch_size, backend=args.backend, onnx=args.onnx,
                         noise=args.noise, paste_mask=args.paste_mask, large_faces=_large_faces(args))
        if choice is not None:
            announce(choice, probe, args.fidelity is not None)
        size = probe.size
        del probe
    manifest.append(early)
    t0 = time.perf_counter()
    rows = _execute(todo, args, size, manifest) if todo else []
    if todo or early:
        manifest.compact()
    rows += early
    written = sum(r["status"] in ("ok", "no_face") for r in rows)
    errors = [r for r in rows if r["status"] == "error"]
    print(f"{len(plan)} input(s): {written} written ({sum(r['faces'] or 0 for r in rows)} face(s)), "
          f"{len(errors)} failed, {sum(r['status'] == 'exists' for r in rows)} left alone (output existed), "
          f"{done_before} done before; {time.perf_counter() - t0:.1f} s; results manifest: {manifest.path}",
          file=sys.stderr)
    for r in errors[:10]:
        print(f"mmrface: error: {r['input']}: {r['error']}", file=sys.stderr)
    if len(errors) > 10:
        print(f"... and {len(errors) - 10} more error rows in {manifest.path}", file=sys.stderr)
    return 1 if errors else 0


def _check_flags(args) -> None:
    unsupported = [flag for flag, on in (("--save-faces", args.save_faces), ("--compare", args.compare)) if on]
    if unsupported:
        raise UserError(f"{', '.join(unsupported)}: not available with --engine ray (run without it, or without --engine ray)")
    if args.ext in ("mp4", "mkv", "mov", "webm"):
        raise UserError("--engine ray restores photos; restore videos without --engine ray")
    if is_remote(args.output) and not args.results:
        raise UserError(f"-o {args.output} is remote: name a local results manifest with --results FILE")
    if args.gpus_per_actor is not None and args.gpus_per_actor < 0:
        raise UserError("--gpus-per-actor must be >= 0")
    if args.restore_actors is not None and args.restore_actors < 1:
        raise UserError("--restore-actors must be >= 1")


def _results_path(args) -> str:
    return local_path(args.results) if args.results else os.path.join(local_path(args.output), "manifest.jsonl")


def _existing_files(out: str) -> set[str]:
    """Paths of the files already under the output folder (one listing, not one request per file)."""
    from pyarrow import fs as pafs

    fs, path = filesystem(out)
    try:
        return {i.path for i in fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
                if i.type == pafs.FileType.File}
    except OSError as exc:
        raise UserError(f"{out}: cannot list the output folder ({str(exc).splitlines()[0]})") from None


def _abs_if_file(path: str | None) -> str | None:
    return os.path.abspath(os.path.expanduser(path)) if path and os.path.exists(os.path.expanduser(path)) else path


def _execute(todo: list[dict], args, size: int, manifest: ResultsManifest) -> list[dict]:
    from mmrface.batch import require_ray

    require_ray()
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        logging.getLogger("ray").setLevel(logging.WARNING)
        ray.init(address=args.address, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False, object_store_memory=None if args.object_store_mb is None
                 else args.object_store_mb * 1024 * 1024)
    try:
        rows = _stream(_pipeline(todo, args, size), manifest, len(todo), args.quiet)
    except UserError:
        raise
    except Exception as exc:  # e.g. every network actor failed to start (weights missing on a node)
        raise UserError(f"the Ray job failed: {describe(exc)}") from None
    finally:
        if started_here:
            ray.shutdown()
    returned = {r["input"] for r in rows}
    lost = [make_row(t["input"], t["output"], "error", weights_sha256=None,
                     error=f"no result: its worker died on all {TASK_RETRIES + 1} attempts")
            for t in todo if t["input"] not in returned]
    manifest.append(lost)
    return rows + lost


def _pipeline(todo: list[dict], args, size: int):
    """The Ray Data dataset: CPU prepare tasks -> network actors -> CPU finish tasks."""
    import ray
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    for handler in logging.getLogger("ray.data").handlers:  # Ray Data's INFO lines go to its log file only
        if isinstance(handler, logging.StreamHandler):
            handler.setLevel(logging.WARNING)
            handler.addFilter(lambda record: "Progress bars disabled" not in record.getMessage())  # ours: tqdm
    ctx.max_errored_blocks = -1  # a block whose worker died on every retry costs its rows, not the job
    gpus = float(ray.cluster_resources().get("GPU", 0))
    per_actor = args.gpus_per_actor if args.gpus_per_actor is not None else (1.0 if gpus else 0.0)
    if per_actor > gpus:
        raise UserError(f"--gpus-per-actor {per_actor:g}: the cluster has {gpus:g} GPU(s)")
    actors = args.restore_actors or (max(1, int(gpus // per_actor)) if per_actor else 1)
    device = args.device if per_actor else ("cpu" if args.device == "auto" else args.device)
    gpu_args = {"num_gpus": per_actor} if per_actor else {}

    ds = ray.data.from_items(todo, override_num_blocks=max(1, math.ceil(len(todo) / ROWS_PER_BLOCK)))
    with warnings.catch_warnings():
        # Ray 2.60 (pinned) takes retry limits only as `**ray_remote_args`, which it marks deprecated
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        return _stages(ds, args, size, actors, device, gpu_args)


def _large_faces(args) -> str:
    return "restore" if args.force_restore else args.large_faces


def _stages(ds, args, size: int, actors: int, device: str, gpu_args: dict):
    import ray.data

    from mmrface.batch.stages import RestoreActor, finish_batch, prepare_batch

    # the differing remote args keep Ray from fusing the CPU stages into the network actors
    ds = ds.map_batches(prepare_batch, batch_size=None, num_cpus=1, max_retries=TASK_RETRIES,
                        fn_kwargs=dict(size=size, detector=args.detector, upscale=args.upscale, aligned=args.aligned,
                                       only_center_face=args.only_center_face, largest_face=args.largest_face,
                                       min_size=args.min_face_size, large_faces=_large_faces(args),
                                       paste_mask=args.paste_mask))
    ds = ds.map_batches(RestoreActor, batch_size=args.batch_size, compute=ray.data.ActorPoolStrategy(size=actors),
                        num_cpus=1, max_restarts=-1, max_task_retries=TASK_RETRIES, **gpu_args,
                        fn_constructor_kwargs=dict(weights=_abs_if_file(args.weights), device=device,
                                                   fidelity=args.fidelity, batch_size=args.batch_size,
                                                   backend=args.backend, onnx=_abs_if_file(args.onnx),
                                                   noise=args.noise))
    return ds.map_batches(finish_batch, batch_size=None, num_cpus=1, max_retries=TASK_RETRIES)


def _stream(ds, manifest: ResultsManifest, total: int, quiet: bool) -> list[dict]:
    from mmrface.batch.stages import rows_of

    progress = None if quiet else _progress(total)
    rows = []
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        new = [_manifest_row(r) for r in rows_of(batch)]
        manifest.append(new)
        rows += new
        if progress is not None:
            progress.update(len(new))
    if progress is not None:
        progress.close()
    return rows


def _manifest_row(r: dict) -> dict:
    if r["error"] is not None:
        status = "error"
    else:
        status = "ok" if r["faces"] else "no_face"
    return make_row(r["input"], r["output"], status, faces=None if status == "error" else r["faces"],
                    error=r["error"], seconds={s: r[f"t_{s}"] for s in STAGES if r.get(f"t_{s}")},
                    weights_sha256=r["weights_sha256"],
                    workers={k: r[f"w_{k}"] for k in ("prepare", "restore", "finish") if r.get(f"w_{k}")})


def _progress(total: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="photo", desc="restore (ray)", file=sys.stderr)
