"""HTTP API of `mmrface serve` against a live uvicorn server on 127.0.0.1 (tiny random-weight model).

Good photo -> 200 PNG of the upscaled size, /v1/faces finds the face; non-image -> 415; too many
bytes / pixels -> 413; bad parameters -> 422; an unexpected error -> JSON 500 without traceback;
one restore at a time (503 when the queue is full); the server keeps answering after each.
"""

from __future__ import annotations

import importlib.util
import io
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from PIL import Image  # noqa: E402

from mmrface.config import load_config  # noqa: E402
from mmrface.models import build_model  # noqa: E402
from mmrface.pipeline.restorer import Restorer  # noqa: E402
from mmrface.weights import save_weights  # noqa: E402
from mmrface.web.app import create_app  # noqa: E402
from mmrface.web.limits import Limits  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HAVE_GRADIO = importlib.util.find_spec("gradio") is not None  # then test the full app, UI mounted


def degraded_astronaut() -> bytes:
    """The bundled astronaut photo, degraded: 512 -> 128 -> 256 px, then JPEG q40 (bytes)."""
    bgr = cv2.imread(str(ROOT / "assets/photos/astronaut.png"))
    small = cv2.resize(bgr, (128, 128), interpolation=cv2.INTER_AREA)
    lq = cv2.resize(small, (256, 256), interpolation=cv2.INTER_CUBIC)
    ok, buf = cv2.imencode(".jpg", lq, [cv2.IMWRITE_JPEG_QUALITY, 40])
    assert ok
    return buf.tobytes()


def png_bytes(arr: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG")
    return out.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


class LiveServer:
    """uvicorn serving `app` in a thread on a free 127.0.0.1 port."""

    def __init__(self, app):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started:
            assert self.thread.is_alive() and time.time() < deadline, "server did not start"
            time.sleep(0.05)
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def close(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def assert_healthy(self) -> None:
        r = self.client.get("/v1/health")
        assert r.status_code == 200 and r.json()["status"] == "ok"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    cfg = load_config("tiny")
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_weights(path, build_model(cfg.model).state_dict(), cfg.to_dict())
    return path


LIMITS = Limits(max_upload_bytes=200_000, max_pixels=600 * 600, max_output_pixels=600_000, max_queue=4)


@pytest.fixture(scope="module")
def live(weights):
    restorer = Restorer(weights, device="cpu", upscale=2, fp16=False)
    server = LiveServer(create_app(restorer, limits=LIMITS, ui=HAVE_GRADIO))
    server.restorer = restorer
    yield server
    server.close()


@pytest.fixture(scope="module")
def photo() -> bytes:
    return degraded_astronaut()


def test_health_describes_the_model(live):
    info = live.client.get("/v1/health").json()
    assert info["status"] == "ok"
    assert info["model"] == "tiny" and info["size"] == 64 and info["device"] == "cpu"
    assert info["version"] and len(info["weights_sha256"]) == 64
    assert info["limits"]["max_upload_bytes"] == LIMITS.max_upload_bytes


def test_restore_returns_upscaled_png(live, photo):
    r = live.client.post("/v1/restore", files={"image": ("astronaut.jpg", photo, "image/jpeg")},
                         data={"fidelity": "0.7"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert r.headers["x-faces"] == "1" and r.headers["x-fidelity"] == "0.7"
    out = decode_png(r.content)
    assert out.shape == (512, 512, 3)  # 256 px input x default upscale 2
    # the face region changed (the network's output is pasted there), the far background did not much
    lq = cv2.resize(np.asarray(Image.open(io.BytesIO(photo)).convert("RGB")), (512, 512),
                    interpolation=cv2.INTER_LANCZOS4)
    assert np.abs(out[0:40, 400:512].astype(int) - lq[0:40, 400:512]).mean() < 3
    assert np.abs(out[80:160, 190:250].astype(int) - lq[80:160, 190:250]).mean() > 5
    live.assert_healthy()


def test_restore_options_are_wired_through(live, photo):
    def post(**fields):
        r = live.client.post("/v1/restore", files={"image": ("a.jpg", photo)}, data=fields)
        assert r.status_code == 200, r.text
        return decode_png(r.content)

    assert post(upscale="1").shape == (256, 256, 3)
    assert post(upscale="1.5").shape == (384, 384, 3)
    w0, w1 = post(fidelity="0").astype(int), post(fidelity="1").astype(int)
    assert (w0 != w1).sum() > 1000  # the fidelity knob reaches the network ...
    rgb = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB"))
    for w, got in [(0.0, w0), (1.0, w1)]:  # ... as the same call in-process gives
        assert np.abs(live.restorer.restore(rgb, fidelity=w).image.astype(int) - got).max() <= 1
    aligned = post(aligned="true", upscale="1")
    assert aligned.shape == (256, 256, 3)


def test_alpha_channel_is_kept(live, photo):
    rgb = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB"))
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:, :32] = 0
    r = live.client.post("/v1/restore", files={"image": ("rgba.png", png_bytes(np.dstack([rgb, alpha])))})
    assert r.status_code == 200, r.text
    out = decode_png(r.content)
    assert out.shape == (512, 512, 4)
    assert out[:, :56, 3].max() == 0 and out[:, 72:, 3].min() == 255  # edge at 64 px, Lanczos-blurred


def test_faces_endpoint_finds_the_face(live, photo):
    r = live.client.post("/v1/faces", files={"image": ("astronaut.jpg", photo)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["width"], body["height"]) == (256, 256)
    assert len(body["faces"]) == 1
    face = body["faces"][0]
    x0, y0, x1, y1 = face["box"]
    assert 0 <= x0 < x1 <= 256 and 0 <= y0 < y1 <= 256
    lm = np.array(face["landmarks"])
    assert lm.shape == (5, 2)
    assert lm[0, 0] < lm[1, 0] and lm[:2, 1].max() < lm[2, 1] < lm[3:, 1].min()  # eyes, nose, mouth
    assert 0 < face["score"] <= 1


def test_non_image_is_415(live):
    for name, data in [("notes.jpg", b"this is not a photo\n" * 20), ("empty.png", b""),
                       ("truncated.png", png_bytes(np.zeros((64, 64, 3), np.uint8))[:60])]:
        r = live.client.post("/v1/restore", files={"image": (name, data)})
        assert r.status_code == 415, (name, r.text)
        assert r.json()["status"] == 415 and name in r.json()["error"]
        live.assert_healthy()
    r = live.client.post("/v1/restore", content=b"\x89PNG...", headers={"content-type": "image/png"})
    assert r.status_code == 415 and "multipart" in r.json()["error"]
    live.assert_healthy()


def test_too_large_is_413(live, photo):
    noise = np.random.default_rng(0).integers(0, 256, (400, 400, 3), np.uint8)
    big_bytes = png_bytes(noise)
    assert len(big_bytes) > 2 * LIMITS.max_upload_bytes
    r = live.client.post("/v1/restore", files={"image": ("noise.png", big_bytes)})
    assert r.status_code == 413 and "limit" in r.json()["error"]
    live.assert_healthy()
    # the same without a Content-Length (chunked): refused while the body streams in
    boundary = "mmrface-test-boundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="noise.png"\r\n'
            f"Content-Type: image/png\r\n\r\n").encode() + big_bytes + f"\r\n--{boundary}--\r\n".encode()
    chunks = (body[i:i + 65536] for i in range(0, len(body), 65536))
    r = live.client.post("/v1/restore", content=chunks,
                         headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert "content-length" not in r.request.headers
    assert r.status_code == 413 and "limit" in r.json()["error"]
    live.assert_healthy()
    many_pixels = png_bytes(np.full((700, 700, 3), 128, np.uint8))  # 0.49 MP, small file
    assert len(many_pixels) < LIMITS.max_upload_bytes
    for endpoint in ("/v1/restore", "/v1/faces"):
        r = live.client.post(endpoint, files={"image": ("wide.png", many_pixels)})
        assert r.status_code == 413 and "megapixels" in r.json()["error"], r.text
        live.assert_healthy()
    r = live.client.post("/v1/restore", files={"image": ("a.jpg", photo)}, data={"upscale": "4"})  # 1 MP out
    assert r.status_code == 413 and "upscale" in r.json()["error"]
    live.assert_healthy()


@pytest.mark.parametrize("field,value", [("fidelity", "1.5"), ("fidelity", "-0.1"), ("fidelity", "abc"),
                                         ("fidelity", "nan"), ("upscale", "0.5"), ("upscale", "9"),
                                         ("aligned", "maybe"), ("detector", "opencv"), ("fidelty", "0.5")])
def test_bad_parameter_is_422(live, photo, field, value):
    r = live.client.post("/v1/restore", files={"image": ("a.jpg", photo)}, data={field: value})
    assert r.status_code == 422, r.text
    assert field in r.json()["error"]
    live.assert_healthy()


def test_missing_image_and_unknown_paths(live):
    r = live.client.post("/v1/restore", data={"fidelity": "0.5"}, files={"other": ("x", b"1")})
    assert r.status_code == 422
    r = live.client.get("/v1/restore")
    assert r.status_code == 405 and "POST" in r.json()["error"]
    r = live.client.get("/v1/nothing")
    assert r.status_code == 404 and "/v1/restore" in r.json()["error"]


class ControlledRestorer(Restorer):
    """The real tiny Restorer, plus a gate that holds restores open and a switch that makes them fail."""

    gate: threading.Event | None = None
    fail = False
    active = 0
    max_active = 0

    def restore(self, *args, **kwargs):
        cls = ControlledRestorer
        cls.active += 1
        cls.max_active = max(cls.max_active, cls.active)
        try:
            if cls.fail:
                raise RuntimeError("simulated failure\nsecond line of detail")
            if cls.gate is not None:
                assert cls.gate.wait(30)
            return super().restore(*args, **kwargs)
        finally:
            cls.active -= 1


@pytest.fixture
def controlled(weights):
    restorer = ControlledRestorer(weights, device="cpu", upscale=1, fp16=False)
    app = create_app(restorer, limits=Limits(max_queue=1), ui=False)
    server = LiveServer(app)
    server.service = app.state.service
    yield server
    ControlledRestorer.gate, ControlledRestorer.fail = None, False
    server.close()


def test_unexpected_error_is_json_500_without_traceback(controlled, photo):
    ControlledRestorer.fail = True
    r = controlled.client.post("/v1/restore", files={"image": ("a.jpg", photo)})
    assert r.status_code == 500
    body = r.json()
    assert "RuntimeError" in body["error"] and "simulated failure" in body["error"]
    assert "\n" not in body["error"] and "Traceback" not in r.text and "second line" not in r.text
    ControlledRestorer.fail = False
    controlled.assert_healthy()
    assert controlled.client.post("/v1/restore", files={"image": ("a.jpg", photo)}).status_code == 200


def test_one_restore_at_a_time_and_busy_is_503(controlled, photo):
    ControlledRestorer.gate, ControlledRestorer.max_active = threading.Event(), 0
    post = lambda: controlled.client.post("/v1/restore", files={"image": ("a.jpg", photo)})  # noqa: E731
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(post)
        deadline = time.time() + 20
        while controlled.service.pending < 1 and time.time() < deadline:
            time.sleep(0.02)
        second_waiting = pool.submit(post)  # max_queue=1: may wait
        while controlled.service.pending < 2 and time.time() < deadline:
            time.sleep(0.02)
        assert controlled.service.pending == 2
        controlled.assert_healthy()  # the event loop answers while a restore runs
        third = post()  # queue full
        assert third.status_code == 503 and "busy" in third.json()["error"]
        ControlledRestorer.gate.set()
        assert first.result().status_code == 200 and second_waiting.result().status_code == 200
    assert ControlledRestorer.max_active == 1
    controlled.assert_healthy()


def test_api_imports_without_gradio():
    code = ("import sys; import mmrface.web.api, mmrface.web.app, mmrface.commands.serve; "
            "assert 'gradio' not in sys.modules, 'gradio imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
