"""`mmrface restore --engine ray`: restore photo archives across machines on Ray Data.

    mmrface restore -i s3://archive/scans/ -o s3://archive/restored/ --results run.jsonl \\
        --engine ray --address auto --gpus-per-actor 0.5

Decode, detect and align run as CPU tasks, the network on GPU actors (CPU actors where the
cluster has no GPU), paste and write as CPU tasks; Ray's streaming executor provides the
backpressure. Every stage is a step of `Restorer.restore` (`mmrface.batch.stages`). A results
manifest (JSON Lines, `mmrface.batch.manifest`) gets one row per input, so a rerun does only what
is missing. Ray is an optional extra: `pip install 'mmrface[ray]'`.
"""

from __future__ import annotations

import argparse

from mmrface.errors import UserError

INSTALL_HINT = "--engine ray needs Ray Data, which is not installed here: pip install 'mmrface[ray]'"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `mmrface restore` that choose and steer the Ray engine (no Ray import)."""
    g = p.add_argument_group("batch across machines (--engine ray): -i may also be a quoted glob or a .txt list "
                             "of paths; -i and -o may be s3:// or gs:// URIs")
    g.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process (default); ray: a Ray cluster, resumable, one manifest row per input")
    g.add_argument("--address", default=None,
                   help="Ray cluster to join (auto, or the head's HOST:PORT); default: start Ray on this machine")
    g.add_argument("--results", default=None, metavar="FILE",
                   help="results manifest, JSON Lines (default OUTPUT/manifest.jsonl; required for a remote -o)")
    g.add_argument("--gpus-per-actor", type=float, default=None, metavar="G",
                   help="GPUs per network actor, fractions allowed (default 1 when the cluster has GPUs, else 0: CPU actors)")
    g.add_argument("--restore-actors", type=int, default=None, metavar="N",
                   help="network actors (default: cluster GPUs / --gpus-per-actor, or 1 without GPUs)")
    g.add_argument("--retry-errors", action="store_true", help="try the inputs that have an error row again")
    g.add_argument("--object-store-mb", type=int, default=None,
                   help="object store size of a Ray started here (default: Ray's, 30%% of memory)")


def require_ray() -> None:
    """UserError with the install line unless Ray Data and pyarrow import."""
    try:
        import pyarrow.fs  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        raise UserError(INSTALL_HINT) from None


def ray_installed() -> bool:
    """Whether Ray and pyarrow are installed, without importing them (a rerun with nothing to do
    never pays for importing Ray)."""
    import importlib.util

    try:
        return all(importlib.util.find_spec(m) is not None for m in ("ray", "pyarrow"))
    except (ImportError, ValueError):  # a module set to None in sys.modules
        return False


def run(args) -> int:
    if not ray_installed():
        raise UserError(INSTALL_HINT)
    from mmrface.batch.engine import run_batch

    return run_batch(args)
