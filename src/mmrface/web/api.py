"""The HTTP API (FastAPI; no Gradio needed):

    POST /v1/restore   multipart `image` (+ optional form fields `fidelity` in [0, 1], `upscale`
                       in [1, 4], `aligned`, `detector`, `only_center_face`, `largest_face`)
                       -> the restored photo as image/png; headers X-Faces (faces restored),
                       X-Fidelity, X-Upscale, X-Elapsed-Ms
    POST /v1/faces     multipart `image` (+ `detector`, `only_center_face`, `largest_face`)
                       -> JSON {width, height, faces: [{box, landmarks, score}]}
    GET  /v1/health    -> JSON {status, model, size, device, version, defaults, limits, ...}

    curl -F image=@photo.jpg -F fidelity=0.7 http://127.0.0.1:7860/v1/restore -o restored.png

Every error is JSON `{"error": message, "status": code}`: 413 too large (bytes, pixels, output
pixels), 415 not an image, 422 bad or unknown parameter or an image too small to hold a face, 503
queue full (with a `Retry-After` header); anything unexpected is a JSON 500 with a one-line
message (the traceback goes to the server log only). Uploads are checked from their bytes and
header before they queue and decoded from memory inside the service's single restore slot
(`web/service.py`); that work runs in a worker thread, so the event loop keeps answering
/v1/health. A 16-bit PNG/TIFF upload gives a 16-bit PNG.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from mmrface.errors import UserError
from mmrface.pipeline.imageio import encode_image
from mmrface.web.limits import BadParameter, Busy, NotAnImage, RequestError, TooLarge, safe_name
from mmrface.web.service import RestoreService, faces_to_json

log = logging.getLogger("mmrface.web")

RESTORE_FIELDS = ("image", "fidelity", "upscale", "aligned", "detector", "only_center_face", "largest_face")
FACES_FIELDS = ("image", "detector", "only_center_face", "largest_face")
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the small form fields around the image


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """JSON for every error: RequestError -> its status, UserError -> 422, HTTP errors keep theirs,
    anything else -> 500 with one line (`JSONServerErrors`; the traceback goes to the server log)."""

    async def on_request_error(request: Request, exc: Exception) -> JSONResponse:
        status = getattr(exc, "status", 422) if isinstance(exc, RequestError) else 422
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Busy) else None
        return error_response(status, str(exc), headers)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(exc.status_code, str(exc.detail))

    app.add_exception_handler(UserError, on_request_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_middleware(JSONServerErrors)


class JSONServerErrors:
    """ASGI middleware: an unexpected exception becomes a JSON 500 with one line (the traceback
    goes to the server log). Unlike Starlette's own 500 handler it does not re-raise, so the server
    keeps the connection alive and the next request on it is answered normally."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            if started:  # too late for a clean answer
                raise
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            await error_response(500, f"internal error ({type(exc).__name__}{': ' + first if first else ''})")(
                scope, receive, send)


def _limited_receive(receive: Callable[[], Awaitable[dict]], cap: int, limit_text: str):
    """Wrap an ASGI `receive` so that reading more than `cap` body bytes raises TooLarge."""
    seen = 0

    async def wrapped() -> dict:
        nonlocal seen
        message = await receive()
        if message.get("type") == "http.request":
            seen += len(message.get("body", b""))
            if seen > cap:
                raise TooLarge(f"request body over the upload limit of {limit_text}")
        return message

    return wrapped


async def read_upload(request: Request, service: RestoreService, allowed: tuple[str, ...]) -> tuple[bytes, str, dict[str, str]]:
    """(image bytes, file name, other form fields) of a multipart upload, checking its size first."""
    limit = service.limits.max_upload_bytes
    limit_text = f"{limit / 1024 / 1024:.1f} MB"
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise NotAnImage("send the photo as multipart/form-data with the file in the field 'image' "
                         "(curl -F image=@photo.jpg ...)")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + FORM_OVERHEAD:
        raise TooLarge(f"upload is {int(declared) / 1024 / 1024:.1f} MB, the limit is {limit_text}")
    limited = Request(request.scope, _limited_receive(request.receive, limit + FORM_OVERHEAD, limit_text))
    form = await limited.form(max_files=1, max_fields=len(allowed) + 2)
    try:
        unknown = sorted(set(form.keys()) - set(allowed))
        if unknown:
            raise BadParameter(f"unknown field(s) {', '.join(unknown)}; accepted: {', '.join(allowed)}")
        upload = form.get("image")
        if upload is None:
            raise BadParameter("missing the form field 'image' (the photo file)")
        if not isinstance(upload, UploadFile):
            raise BadParameter("the form field 'image' must be a file upload, not text")
        data = await upload.read(limit + 1)
        name = safe_name(upload.filename)
        fields = {k: v for k, v in form.items() if k != "image" and isinstance(v, str)}
    finally:
        await form.close()
    return data, name, fields


def add_api_routes(app: FastAPI, service: RestoreService) -> None:
    """Register /v1/restore, /v1/faces and /v1/health on `app`."""

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        return service.health()

    @app.post("/v1/restore", response_class=Response,
              responses={200: {"content": {"image/png": {}}, "description": "the restored photo"}})
    async def restore(request: Request) -> Response:
        data, name, fields = await read_upload(request, service, RESTORE_FIELDS)
        opts = service.options(**fields)
        t0 = time.perf_counter()

        def encode(image, result) -> tuple[bytes, int, tuple[int, int]]:  # inside the slot
            return encode_image(".png", result.image, result.alpha), len(result.faces), result.image.shape[:2]

        png, n_faces, (h, w) = await run_in_threadpool(service.restore_upload, data, name, opts, encode)
        elapsed = (time.perf_counter() - t0) * 1000
        headers = {"X-Faces": str(n_faces), "X-Fidelity": f"{opts.fidelity:g}", "X-Upscale": f"{opts.upscale:g}",
                   "X-Image-Size": f"{w}x{h}", "X-Elapsed-Ms": f"{elapsed:.0f}",
                   "Content-Disposition": f'inline; filename="{Path(name).stem}_restored.png"'}
        return Response(png, media_type="image/png", headers=headers)

    @app.post("/v1/faces")
    async def faces(request: Request) -> dict[str, Any]:
        data, name, fields = await read_upload(request, service, FACES_FIELDS)
        opts = service.options(**fields)

        found, (h, w) = await run_in_threadpool(service.faces_upload, data, name, opts)
        return {"name": name, "width": w, "height": h, "detector": opts.detector, "faces": faces_to_json(found)}

    known = {"restore": "POST", "faces": "POST", "health": "GET"}

    @app.api_route("/v1/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def not_found(rest: str) -> JSONResponse:  # keep /v1/* out of the UI mounted at "/"
        if rest in known:
            return error_response(405, f"/v1/{rest} takes {known[rest]}")
        return error_response(404, f"no endpoint /v1/{rest}; the API has "
                                   + ", ".join(f"{m} /v1/{p}" for p, m in known.items()))


def create_api_app(service: RestoreService, title: str = "mmrface") -> FastAPI:
    """A FastAPI app with only the HTTP API (the Gradio UI is mounted on it by `web.app`)."""
    from mmrface import __version__

    app = FastAPI(title=f"{title} HTTP API", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url="/v1/openapi.json",
                  description="Blind face restoration: POST a photo to /v1/restore, get the restored PNG back.")
    install_error_handlers(app)
    add_api_routes(app, service)
    app.state.service = service
    return app
