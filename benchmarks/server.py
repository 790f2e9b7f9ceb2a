"""The web server under valid and hostile load: latencies, statuses and the server's RSS.

    python benchmarks/server.py [--weights mmrface-small] [--api-only] [--concurrency 8]
                                [--big-side 6000] [--photo-side 2000]

Starts `mmrface serve` in a subprocess on 127.0.0.1 (a free port), drives it with bounded
concurrent requests, samples the server process's resident memory (VmRSS from /proc every 10 ms)
and prints one markdown table, one row per phase:

* start / warm: the idle server right after /v1/health answers, and after one restore and one
  face search (models loaded lazily: MTCNN, MMOD).
* valid: `--concurrency` concurrent restores of the degraded 256-px astronaut photo (they queue for
  the one restore slot), then 3 one after another: their median is a small restore's "own time".
* 36-MP restore: `--concurrency` concurrent `--big-side`² JPEG uploads to /v1/restore at the
  default upscale 2 (144 megapixels out, over the 100-MP limit): all must be refused (413).
* 36-MP faces: the same uploads to /v1/faces (accepted: under the 40-MP input limit; they queue).
* blocked (faces / restore): a `--photo-side` photo with no face in it (so the detector's fallback
  runs) is posted; once it holds the restore slot, a small restore is posted. "blocked s" is that
  small restore's latency minus its own time: how long another request's face search held it up.
* burst: 3 x `--concurrency` small restores at once against the queue limit (503s must carry
  Retry-After).
* tiny: 1x1, 4x4 and 8x8 PNGs on /v1/faces and /v1/restore: all must be 4xx (last: before the
  fix they could corrupt the server's heap).
* idle: the server 3 s after the last request.

Targets (issue 14): peak RSS under 1.5 GB during the 36-MP phases; blocked under 5 s.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "assets" / "photos"


class RssSampler:
    """Samples a process's VmRSS (MiB) every `interval` seconds; `peak()` since the last `reset()`,
    `cpu()` its CPU seconds (user + system) so far."""

    def __init__(self, pid: int, interval: float = 0.01):
        self.path, self.interval = f"/proc/{pid}/status", interval
        self.stat_path, self.tick = f"/proc/{pid}/stat", os.sysconf("SC_CLK_TCK")
        self._peak, self.cpu_mark = 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now(self) -> float:
        try:
            with open(self.path) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def cpu(self) -> float:
        try:
            with open(self.stat_path) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / self.tick  # utime, stime
        except (OSError, IndexError, ValueError):
            return 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self.now())
            time.sleep(self.interval)

    def reset(self) -> None:
        self._peak = self.now()
        self.cpu_mark = self.cpu()

    def peak(self) -> float:
        return max(self._peak, self.now())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def _png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    assert ok
    return buf.tobytes()


def make_inputs(big_side: int, photo_side: int) -> dict[str, bytes]:
    """small: degraded astronaut (256 px JPEG q40); big: astronaut enlarged to big_side² (JPEG q85);
    noface: a photo_side-wide landscape-like texture without a face (JPEG q90); tiny PNGs."""
    rgb = cv2.imread(str(PHOTOS / "astronaut.png"))[:, :, ::-1]
    small = cv2.resize(cv2.resize(rgb, (128, 128), interpolation=cv2.INTER_AREA), (256, 256),
                       interpolation=cv2.INTER_CUBIC)
    big = cv2.resize(rgb, (big_side, big_side), interpolation=cv2.INTER_LINEAR)
    rng = np.random.default_rng(0)
    h = photo_side * 3 // 4
    field = cv2.resize(rng.random((12, 16, 3)).astype(np.float32), (photo_side, h), interpolation=cv2.INTER_CUBIC)
    grain = rng.normal(0, 0.02, (h, photo_side, 3)).astype(np.float32)
    noface = (np.clip(field * 0.6 + 0.2 + grain, 0, 1) * 255).astype(np.uint8)
    out = {"small": _jpeg(small, 40), "big": _jpeg(big, 85), "noface": _jpeg(noface, 90)}
    for s in (1, 4, 8):
        out[f"tiny{s}"] = _png(np.full((s, s, 3), 128, np.uint8))
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`mmrface serve` in a subprocess on 127.0.0.1."""

    def __init__(self, weights: str, api_only: bool, extra: list[str]):
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", prefix="mmrface-bench-serve-", suffix=".log", delete=False)
        cmd = [sys.executable, "-m", "mmrface", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--weights", weights, "--device", "cpu", "--log-level", "warning", *extra]
        if api_only:
            cmd.append("--api-only")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=self.url, timeout=600)
        deadline = time.time() + 180
        while True:
            try:
                if self.client.get("/v1/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.log.seek(0)
                raise SystemExit("mmrface serve did not come up:\n" + self.log.read()[-3000:])
            time.sleep(0.2)
        self.rss = RssSampler(self.proc.pid)

    def pending(self) -> int:
        if self.proc.poll() is not None:
            return -1
        return int(self.client.get("/v1/health").json().get("pending", 0))

    def close(self) -> None:
        self.rss.stop()
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        os.unlink(self.log.name)


def post(url: str, endpoint: str, name: str, data: bytes, fields: dict | None = None) -> tuple[int | str, float, dict]:
    """One request on its own connection: (status, seconds, headers)."""
    import httpx

    t0 = time.perf_counter()
    try:
        with httpx.Client(base_url=url, timeout=600) as client:
            r = client.post(endpoint, files={"image": (name, data)}, data=fields or {})
    except httpx.HTTPError as exc:  # e.g. the server died: reported, not raised
        return type(exc).__name__, time.perf_counter() - t0, {}
    return r.status_code, time.perf_counter() - t0, dict(r.headers)


def concurrent(url: str, n: int, endpoint: str, name: str, data: bytes) -> list[tuple[int, float, dict]]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: post(url, endpoint, name, data), range(n)))


def _statuses(results) -> str:
    return " ".join(f"{k}×{v}" for k, v in sorted(Counter(str(r[0]) for r in results).items()))


def _wait_for_slot(server: Server, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while server.pending() == 0 and time.time() < deadline:
        time.sleep(0.02)


def run(args: argparse.Namespace) -> list[list[str]]:
    inputs = make_inputs(args.big_side, args.photo_side)
    server = Server(args.weights, args.api_only, args.serve_args)
    rows: list[list[str]] = []
    server.rss.reset()

    def row(phase: str, results, peak: float, blocked: float | None = None, note: str = "") -> None:
        times = [r[1] for r in results]
        rows.append([phase, str(len(results)), _statuses(results) if results else "",
                     f"{statistics.median(times):.2f}" if times else "", f"{max(times):.2f}" if times else "",
                     "" if blocked is None else f"{blocked:.2f}", f"{server.rss.cpu() - server.rss.cpu_mark:.1f}",
                     f"{peak:.0f}", f"{server.rss.now():.0f}", note])

    try:
        url, n = server.url, args.concurrency
        rows.append(["start", "0", "", "", "", "", f"{server.rss.cpu():.1f}", f"{server.rss.now():.0f}",
                     f"{server.rss.now():.0f}", "CPU s: the start-up"])
        server.rss.reset()
        warm = [post(url, "/v1/restore", "small.jpg", inputs["small"]),
                post(url, "/v1/faces", "noface.jpg", inputs["noface"])]
        row("warm (1 restore, 1 no-face search)", warm, server.rss.peak())

        server.rss.reset()
        valid = concurrent(url, n, "/v1/restore", "small.jpg", inputs["small"])
        own = statistics.median(post(url, "/v1/restore", "small.jpg", inputs["small"])[1] for _ in range(3))
        row(f"valid restore 256 px ×{n}", valid, server.rss.peak(), note=f"alone: {own:.2f} s")

        mp = args.big_side ** 2 / 1e6
        server.rss.reset()
        big = concurrent(url, n, "/v1/restore", "big.jpg", inputs["big"])
        row(f"{mp:.0f}-MP restore ×{n} (must be refused)", big, server.rss.peak(),
            note=f"upload {len(inputs['big']) / 1e6:.1f} MB each")
        server.rss.reset()
        big_faces = concurrent(url, n, "/v1/faces", "big.jpg", inputs["big"])
        row(f"{mp:.0f}-MP faces ×{n}", big_faces, server.rss.peak())

        for endpoint in ("/v1/faces", "/v1/restore"):
            server.rss.reset()
            with ThreadPoolExecutor(1) as pool:
                fields = {"upscale": "1"} if endpoint == "/v1/restore" else None
                heavy = pool.submit(post, url, endpoint, "noface.jpg", inputs["noface"], fields)
                _wait_for_slot(server)
                time.sleep(0.2)  # the search is under way
                other = post(url, "/v1/restore", "small.jpg", inputs["small"])
                heavy_result = heavy.result()
            row(f"blocked: {args.photo_side}-px no-face photo on {endpoint.split('/')[-1]}, then a small restore",
                [heavy_result, other], server.rss.peak(), blocked=max(other[1] - own, 0.0),
                note=f"photo request {heavy_result[1]:.2f} s, small restore {other[1]:.2f} s")

        server.rss.reset()
        burst = concurrent(url, 3 * n, "/v1/restore", "small.jpg", inputs["small"])
        busy = [r for r in burst if r[0] == 503]
        row(f"burst ×{3 * n} small restores", burst, server.rss.peak(),
            note=f"Retry-After on {sum('retry-after' in r[2] for r in busy)} of {len(busy)} 503s")

        server.rss.reset()
        tiny = [post(url, ep, f"tiny{s}.png", inputs[f"tiny{s}"]) for ep in ("/v1/faces", "/v1/restore")
                for s in (1, 4, 8)]
        row("tiny 1/4/8 px on faces and restore", tiny, server.rss.peak(),
            note=" ".join(f"{ep.split('/')[-1]} {s}px {r[0]}" for (ep, s), r in
                          zip([(ep, s) for ep in ("/v1/faces", "/v1/restore") for s in (1, 4, 8)], tiny)))

        time.sleep(3)
        if server.proc.poll() is not None:
            rows.append(["(the server process exited)", "", "", "", "", "", "", "", "",
                         f"exit code {server.proc.returncode}"])
        rows.append(["idle (3 s after the last request)", "0", "", "", "", "", "", f"{server.rss.now():.0f}",
                     f"{server.rss.now():.0f}", ""])
    finally:
        server.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", default="mmrface-small", help="registry name or weight file for the server")
    p.add_argument("--api-only", action="store_true", help="serve without the Gradio UI")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--big-side", type=int, default=6000, help="side of the square hostile upload (default 6000)")
    p.add_argument("--photo-side", type=int, default=2000, help="width of the no-face photo (default 2000)")
    p.add_argument("serve_args", nargs="*", help="extra `mmrface serve` arguments (after --)")
    args = p.parse_args(argv)
    rows = run(args)
    from mmrface.evaluation.report import cpu_name, markdown_rows

    print(f"# server.py, {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"# machine: {cpu_name()}, {os.cpu_count()} cores, {platform.platform()}; load average at the end {load}")
    print(f"# command: python benchmarks/server.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print("# RSS of the server process (VmRSS sampled every 10 ms); 'blocked s' = the small restore's "
          "latency minus its own time alone; 'server CPU s' = the server's user + system CPU time in the phase")
    header = ["phase", "requests", "statuses", "median s", "max s", "blocked s", "server CPU s", "peak RSS MiB",
              "RSS after MiB", "note"]
    print(markdown_rows(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
