"""The ASGI app of `mmrface serve`: the HTTP API under /v1 and the Gradio UI at /.

    from mmrface.web.app import create_app
    app = create_app(weights="mmrface-small")          # or create_app(restorer=my_restorer)
    uvicorn.run(app, host="127.0.0.1", port=7860)

The /v1 routes are registered before the UI is mounted at "/", so they always take precedence.
`ui=False` gives the API alone, which needs no Gradio.

Temporary files: the UI's result files and Gradio's copies of uploaded photos live in one
folder per process, `$TMPDIR/mmrface-web-XXXX` (`results/` and `uploads/`, the latter through
GRADIO_TEMP_DIR unless you set that yourself). `remove_temp_root` deletes it; it runs at
interpreter exit, and `mmrface serve` also runs it when stopped by SIGTERM or Ctrl-C. The HTTP API
writes no temporary files (uploads are decoded from memory).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from fastapi import FastAPI

from mmrface.pipeline.detection import SERVER_FALLBACK_MAX_SIDE
from mmrface.pipeline.restorer import Restorer
from mmrface.web.api import create_api_app
from mmrface.web.limits import Limits
from mmrface.web.service import RestoreService

_temp_root: Path | None = None
_OWNER = "MMRFACE_GRADIO_TEMP_DIR"  # the GRADIO_TEMP_DIR value mmrface set (inherited by child processes)


def temp_root() -> Path:
    """This process's folder for the UI's files (created once; see the module docstring)."""
    global _temp_root
    if _temp_root is None or not _temp_root.is_dir():
        _temp_root = Path(tempfile.mkdtemp(prefix="mmrface-web-"))
        atexit.register(remove_temp_root)
        current = os.environ.get("GRADIO_TEMP_DIR")
        if not current or current == os.environ.get(_OWNER):  # a user's own setting is kept
            os.environ["GRADIO_TEMP_DIR"] = os.environ[_OWNER] = str(_temp_root / "uploads")
    return _temp_root


def remove_temp_root() -> None:
    """Delete this process's temporary folder (results and uploaded photos), if there is one."""
    if _temp_root is not None:
        shutil.rmtree(_temp_root, ignore_errors=True)


def create_app(restorer: Restorer | None = None, *, weights: str | Path | None = None, device: str = "auto",
               upscale: float = 2, fidelity: float | None = None, detector: str = "auto", limits: Limits | None = None,
               ui: bool = True, model_name: str | None = None, out_dir: str | Path | None = None,
               fallback_max_side: int = SERVER_FALLBACK_MAX_SIDE) -> FastAPI:
    """Build the server app around a `Restorer` (given, or built from `weights` and the options).

    Args:
        restorer: an already built Restorer (tests inject a tiny random-weight one).
        weights, device, upscale, fidelity, detector: build the Restorer when none is given; upscale
            and fidelity are the defaults of requests that do not set them.
        limits: upload / pixel / queue limits.
        ui: mount the Gradio UI at "/" (needs the `web` extra: gradio).
        model_name: name shown in /v1/health and the UI (default: from the weights' config).
        out_dir: where the UI writes result files for download (default: `temp_root()/results`).
        fallback_max_side: long side of the copy the face-search fallback (MMOD) searches on this
            server; 0 turns the fallback off (see `pipeline/detection.py`).
    """
    if restorer is None:
        restorer = Restorer(weights, device=device, upscale=upscale, fidelity=fidelity, detector=detector)
    service = RestoreService(restorer, limits, model_name=model_name, fallback_max_side=fallback_max_side)
    app = create_api_app(service)
    if ui:
        root = temp_root()  # before Gradio is imported: it reads GRADIO_TEMP_DIR at import and at build
        try:
            from mmrface.web.ui import mount_ui
        except ModuleNotFoundError as exc:
            from mmrface.errors import UserError

            raise UserError(f"the web UI needs gradio (missing module {exc.name!r}): "
                            f"pip install 'mmrface[web]', or serve the HTTP API alone with --api-only") from None
        app = mount_ui(app, service, Path(out_dir) if out_dir is not None else root / "results")
    return app
