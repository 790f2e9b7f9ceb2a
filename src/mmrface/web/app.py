"""The ASGI app of `mmrface serve`: the HTTP API under /v1 and the Gradio UI at /.

    from mmrface.web.app import create_app
    app = create_app(weights="mmrface-small")          # or create_app(restorer=my_restorer)
    uvicorn.run(app, host="127.0.0.1", port=7860)

The /v1 routes are registered before the UI is mounted at "/", so they always take precedence.
`ui=False` gives the API alone, which needs no Gradio.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from fastapi import FastAPI

from mmrface.pipeline.restorer import Restorer
from mmrface.web.api import create_api_app
from mmrface.web.limits import Limits
from mmrface.web.service import RestoreService


def create_app(restorer: Restorer | None = None, *, weights: str | Path | None = None, device: str = "auto",
               upscale: float = 2, fidelity: float = 0.5, detector: str = "auto", limits: Limits | None = None,
               ui: bool = True, model_name: str | None = None, out_dir: str | Path | None = None) -> FastAPI:
    """Build the server app around a `Restorer` (given, or built from `weights` and the options).

    Args:
        restorer: an already built Restorer (tests inject a tiny random-weight one).
        weights, device, upscale, fidelity, detector: build the Restorer when none is given; upscale
            and fidelity are the defaults of requests that do not set them.
        limits: upload / pixel / queue limits.
        ui: mount the Gradio UI at "/" (needs the `web` extra: gradio).
        model_name: name shown in /v1/health and the UI (default: from the weights' config).
        out_dir: where the UI writes result files for download (default: a temp folder removed at exit).
    """
    if restorer is None:
        restorer = Restorer(weights, device=device, upscale=upscale, fidelity=fidelity, detector=detector)
    service = RestoreService(restorer, limits, model_name=model_name)
    app = create_api_app(service)
    if ui:
        try:
            from mmrface.web.ui import mount_ui
        except ModuleNotFoundError as exc:
            from mmrface.errors import UserError

            raise UserError(f"the web UI needs gradio (missing module {exc.name!r}): "
                            f"pip install 'mmrface[web]', or serve the HTTP API alone with --api-only") from None
        if out_dir is None:
            out_dir = tempfile.mkdtemp(prefix="mmrface-web-")
            atexit.register(shutil.rmtree, out_dir, True)
        app = mount_ui(app, service, Path(out_dir))
    return app
