"""The Gradio UI: upload one or several photos, set fidelity / upscale / detector / aligned, get
before and after side by side, every restored face, and the results to download.

All work goes through the shared `RestoreService` (same limits and single restore slot as the
HTTP API); Gradio's queue runs one restore event at a time on top of that. Gradio is imported
here only, so the HTTP API works without it.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry / version check calls
import gradio as gr  # noqa: E402

from mmrface.errors import UserError  # noqa: E402
from mmrface.pipeline.imageio import write_image  # noqa: E402
from mmrface.web.limits import DETECTOR_CHOICES, UPSCALE_RANGE, safe_name  # noqa: E402
from mmrface.web.service import RestoreService  # noqa: E402

KEEP_SECONDS = 3600  # result files older than this are deleted on the next request
# before and after fill the same box, so a small input is not shown smaller than its result
CSS = "#before img, #after img { width: 100%; height: 100%; object-fit: contain; }"

INTRO = """# mmrface — face restoration
Upload one or more photos, then press **Restore**. *Fidelity* trades the face prior (0) against
faithfulness to your photo (1). Model: **{model}** ({size}² faces, {device}).
The same server answers an HTTP API: `curl -F image=@photo.jpg http://HOST/v1/restore -o out.png`
(also `/v1/faces`, `/v1/health`)."""


@dataclass
class PhotoResult:
    """Files of one restored photo (all PNG paths under the session's output folder)."""

    name: str
    before: str
    after: str
    faces: list[tuple[str, str]] = field(default_factory=list)  # (path, caption)


def _prune(root: Path) -> None:
    now = time.time()
    for d in root.iterdir():
        try:
            if d.is_dir() and now - d.stat().st_mtime > KEEP_SECONDS:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass


def _restore_one(service: RestoreService, path: str, opts, out: Path) -> tuple[PhotoResult, str]:
    """Restore one uploaded file into `out`; returns its result and a one-line report."""
    t0 = time.perf_counter()
    name = safe_name(Path(path).name)
    stem = Path(name).stem
    before, after = out / f"{stem}_input.png", out / f"{stem}_restored.png"

    def save(image, result):  # inside the restore slot: one decoded photo at a time
        write_image(before, image.pixels, image.alpha)
        write_image(after, result.image, result.alpha)
        faces = []
        for i, f in enumerate(result.faces):
            lq, hq = out / f"{stem}_face{i}_input.png", out / f"{stem}_face{i}_restored.png"
            write_image(lq, f.crop_lq)
            write_image(hq, f.crop_restored)
            faces += [(str(lq), f"{stem} face {i + 1}: input"), (str(hq), f"{stem} face {i + 1}: restored")]
        return faces, image.rgb.shape[:2], result.image.shape[:2]

    faces, (h, w), (oh, ow) = service.restore_upload(Path(path).read_bytes(), name, opts, save)
    seconds = time.perf_counter() - t0
    if faces:
        line = f"**{name}**: {len(faces) // 2} face(s) restored, {w}×{h} → {ow}×{oh} ({seconds:.1f} s)"
    else:
        line = (f"**{name}**: no face found — the photo was only upscaled to {ow}×{oh}. "
                f"Try another detector, or tick *aligned input* for a cropped face.")
    return PhotoResult(name, str(before), str(after), faces), line


def build_ui(service: RestoreService, out_root: Path) -> gr.Blocks:
    """The Gradio Blocks of the web app; result files go under `out_root` (one folder per request)."""
    r = service.restorer
    out_root.mkdir(parents=True, exist_ok=True)

    def failed(message: str):
        """Clear the outputs and say what went wrong (status line and a toast)."""
        gr.Warning(message)
        return [], gr.update(choices=[], value=None, visible=False), None, None, [], None, f"**error**: {message}"

    def run(files, fidelity, upscale, detector, aligned):
        paths = [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in (files or [])]
        if not paths:
            return failed("upload at least one photo first")
        if len(paths) > service.limits.max_files:
            return failed(f"at most {service.limits.max_files} photos per request (got {len(paths)})")
        try:
            opts = service.options(fidelity, upscale, aligned, detector)
        except UserError as exc:
            return failed(str(exc))
        _prune(out_root)
        out = out_root / uuid.uuid4().hex[:12]
        out.mkdir()
        results, lines, errors = [], [], []
        for p in paths:
            try:
                res, line = _restore_one(service, p, opts, out)
                results.append(res)
                lines.append(line)
            except UserError as exc:
                errors.append(str(exc))
        if not results:
            return failed(" · ".join(errors))
        lines += [f"**error**: {e}" for e in errors]
        if any(not res.faces for res in results):
            gr.Warning("No face found in " + ", ".join(res.name for res in results if not res.faces))
        first = results[0]
        names = [res.name for res in results]
        return (results, gr.update(choices=names, value=names[0], visible=len(names) > 1),
                first.before, first.after, first.faces, [res.after for res in results], "\n\n".join(lines))

    def show(results, name):
        res = next((x for x in results or [] if x.name == name), None)
        if res is None:
            return None, None, []
        return res.before, res.after, res.faces

    with gr.Blocks(title="mmrface", analytics_enabled=False, delete_cache=(KEEP_SECONDS, KEEP_SECONDS)) as demo:
        gr.Markdown(INTRO.format(model=service.model_name, size=r.size, device=r.device))
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                files = gr.File(label="Photos", file_count="multiple", file_types=["image"], type="filepath",
                                elem_id="photos")
                fidelity = gr.Slider(0, 1, value=r.fidelity, step=0.05, label="Fidelity",
                                     info="0 = rely on the face prior, 1 = faithful to the input", elem_id="fidelity")
                upscale = gr.Slider(*UPSCALE_RANGE, value=min(r.upscale, UPSCALE_RANGE[1]), step=0.5,
                                    label="Upscale", elem_id="upscale")
                detector = gr.Dropdown(list(DETECTOR_CHOICES), value="auto", label="Face detector",
                                       info=f"auto = {r.detector_name}, with a fallback when it finds nothing")
                aligned = gr.Checkbox(False, label="Aligned input (an already-cropped, centred face)",
                                      elem_id="aligned")
                button = gr.Button("Restore", variant="primary", elem_id="restore")
                status = gr.Markdown(elem_id="status")
            with gr.Column(scale=2):
                which = gr.Dropdown([], label="Photo", visible=False, elem_id="which")
                with gr.Row(equal_height=True):
                    before = gr.Image(label="Before", format="png", interactive=False, elem_id="before")
                    after = gr.Image(label="After", format="png", interactive=False, elem_id="after")
                faces = gr.Gallery(label="Faces: input and restored", columns=4, fit_columns=False, height=260,
                                   format="png", interactive=False, elem_id="faces")
                download = gr.File(label="Download the restored photos", file_count="multiple",
                                   interactive=False, elem_id="download")
        results = gr.State([])
        button.click(run, [files, fidelity, upscale, detector, aligned],
                     [results, which, before, after, faces, download, status],
                     concurrency_limit=1, api_visibility="private")
        which.input(show, [results, which], [before, after, faces], api_visibility="private")
    demo.queue(default_concurrency_limit=1, max_size=service.limits.max_queue)
    return demo


def mount_ui(app, service: RestoreService, out_root: Path, path: str = "/"):
    """Mount the UI on a FastAPI app (after its own routes, which keep precedence)."""
    demo = build_ui(service, out_root)
    return gr.mount_gradio_app(app, demo, path=path, max_file_size=service.limits.max_upload_bytes,
                               allowed_paths=[str(out_root)], footer_links=[], run_history=False,
                               ssr_mode=False, mcp_server=False, css=CSS)
