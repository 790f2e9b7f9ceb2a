"""`mmrface weights fetch` and `--weights auto` against a real HTTP server on 127.0.0.1 (no internet).

The server (http.server in a thread, Range support written here) serves fixture files made by the
tests; a catalog in $MMRFACE_CATALOG points rows at it. The checkpoint served as "gfpgan-v1.4" is
the tiny GFPGANv1Clean fixture, so a fetched file really converts and restores.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from mmrface.cli import main
from mmrface.errors import UserError
from mmrface.hub import cache
from mmrface.hub.catalog import catalog
from mmrface.hub.download import FetchError, download
from mmrface.hub.install import fetch

FIX = Path(__file__).parent / "fixtures"
GFPGAN_TINY = FIX / "gfpgan_v1clean_tiny64_ckpt.pth"


class Server:
    """Files by URL path; `cut_after` ends the next response after that many bytes (then clears itself)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[dict] = []
        self.cut_after: int | None = None
        self.ignore_range = False
        self.wrong_length: int | None = None
        self.redirects: dict[str, str] = {}  # path -> path (302), like GitHub release downloads
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                outer.requests.append({"path": self.path, "range": self.headers.get("Range")})
                if self.path in outer.redirects:
                    self.send_response(302)
                    self.send_header("Location", outer.url + outer.redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                start, status = 0, 200
                rng = self.headers.get("Range")
                if rng and not outer.ignore_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    status = 206
                self.send_response(status)
                length = outer.wrong_length if outer.wrong_length is not None else len(body) - start
                self.send_header("Content-Length", str(length))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                payload = body[start:]
                if outer.cut_after is not None:
                    payload, outer.cut_after = payload[:outer.cut_after], None
                    self.wfile.write(payload)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh, empty cache for each test."""
    monkeypatch.setenv("MMRFACE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MMRFACE_OFFLINE", raising=False)
    return tmp_path / "home"


def publish(tmp_path, monkeypatch, rows: list[dict]) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(rows))
    monkeypatch.setenv("MMRFACE_CATALOG", str(path))


def row(name, url, data: bytes, convert="gfpgan-v1clean", sha=None, size="exact", **extra) -> dict:
    urls = [url] if isinstance(url, str) else url
    return {"name": name, "file": urls[0].rsplit("/", 1)[-1], "urls": urls,
            "size": len(data) if size == "exact" else size, "sha256": sha or hashlib.sha256(data).hexdigest(),
            "sha256_source": "test fixture", "licence": "test", "purpose": "restore", "use": "test",
            "convert": convert, "description": f"{name}, a tiny test restorer", **extra}


@pytest.fixture
def gfpgan(server, tmp_path, monkeypatch, home):
    """The tiny GFPGANv1Clean checkpoint published as gfpgan-v1.4 (w = 1 by default, like the real row)."""
    data = GFPGAN_TINY.read_bytes()
    server.files["/GFPGANv1.4.pth"] = data
    publish(tmp_path, monkeypatch, [row("gfpgan-v1.4", server.url + "/GFPGANv1.4.pth", data, fidelity=1.0)])
    return data


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) if path.exists() else []


# ---- the downloader -----------------------------------------------------------------------------
def test_full_download_is_converted_once_and_indexed(gfpgan, server, home):
    entry = fetch("gfpgan-v1.4", progress=False, say=lambda m: None)
    final = home / entry["file"]
    assert final.suffix == ".safetensors" and final.is_file()
    assert entry["sha256"] == hashlib.sha256(final.read_bytes()).hexdigest()  # the converted file's own hash
    assert entry["source"]["sha256"] == hashlib.sha256(gfpgan).hexdigest()
    assert files_under(home) == ["weights.yaml", "weights/gfpgan-v1.4.safetensors"]  # original removed, no .part
    from mmrface.models import load_model

    model, meta = load_model("gfpgan-v1.4")  # through the registry: sha256 verified on load
    assert type(model).__name__ == "GFPGANv1Clean" and meta["default_fidelity"] == "1.0"
    n = len(server.requests)
    fetch("gfpgan-v1.4", progress=False, say=lambda m: None)  # already installed: no request
    assert len(server.requests) == n == 1
    assert main(["weights", "verify", "gfpgan-v1.4"]) == 0
    blob = bytearray(final.read_bytes())  # a damaged cache file is refused on load, not used
    blob[-1] ^= 1
    final.write_bytes(bytes(blob))
    with pytest.raises(UserError, match="sha256 mismatch"):
        load_model("gfpgan-v1.4")


def test_cut_off_download_resumes_with_range(gfpgan, server, home):
    server.cut_after = 50_000
    with pytest.raises(FetchError, match="resume") as err:
        fetch("gfpgan-v1.4", progress=False, say=lambda m: None)
    assert server.url in str(err.value) and "mmrface weights import" in str(err.value)
    part = home / "downloads" / "GFPGANv1.4.pth.part"
    assert part.stat().st_size == 50_000 and not cache.index_path().exists()
    fetch("gfpgan-v1.4", progress=False, say=lambda m: None)
    assert server.requests[-1]["range"] == "bytes=50000-"
    assert not part.exists() and cache.installed("gfpgan-v1.4") is not None


def test_resume_follows_a_redirect_with_its_range(server, tmp_path):
    data = os.urandom(200_000)
    server.files["/objects/f.bin"] = data
    server.redirects["/releases/f.bin"] = "/objects/f.bin"
    dest = tmp_path / "f.bin"
    dest.with_name("f.bin.part").write_bytes(data[:70_000])
    download(server.url + "/releases/f.bin", dest, hashlib.sha256(data).hexdigest(), len(data), progress=False)
    assert dest.read_bytes() == data
    assert server.requests[-1] == {"path": "/objects/f.bin", "range": "bytes=70000-"}


def test_server_that_ignores_range_gets_a_fresh_start(server, tmp_path):
    data = os.urandom(300_000)
    server.files["/f.bin"] = data
    dest = tmp_path / "f.bin"
    dest.with_name("f.bin.part").write_bytes(data[:1000])
    server.ignore_range = True
    download(server.url + "/f.bin", dest, hashlib.sha256(data).hexdigest(), len(data), progress=False)
    assert dest.read_bytes() == data


def test_wrong_hash_is_refused_and_nothing_is_cached(server, tmp_path, monkeypatch, home):
    data = GFPGAN_TINY.read_bytes()
    server.files["/GFPGANv1.4.pth"] = data
    publish(tmp_path, monkeypatch, [row("gfpgan-v1.4", server.url + "/GFPGANv1.4.pth", data, sha="0" * 64)])
    with pytest.raises(FetchError, match="wrong sha256") as err:
        fetch("gfpgan-v1.4", progress=False, say=lambda m: None)
    assert server.url in str(err.value) and "nothing kept" in str(err.value)
    assert files_under(home) == []


def test_http_404_is_one_line_with_url_and_manual_alternative(server, tmp_path, monkeypatch, home, capsys):
    publish(tmp_path, monkeypatch, [row("gfpgan-v1.4", server.url + "/missing.pth", b"x" * 10)])
    assert main(["weights", "fetch", "gfpgan-v1.4", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "HTTP 404" in err and server.url + "/missing.pth" in err
    assert "mmrface weights import" in err and files_under(home) == []


def test_connection_refused(tmp_path, monkeypatch, home, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/GFPGANv1.4.pth"
    publish(tmp_path, monkeypatch, [row("gfpgan-v1.4", url, b"x" * 10)])
    assert main(["weights", "fetch", "gfpgan-v1.4", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "connection refused" in err and url in err and "\n" not in err and files_under(home) == []


def test_second_url_is_tried_when_the_first_fails(server, tmp_path, monkeypatch, home):
    data = GFPGAN_TINY.read_bytes()
    server.files["/mirror/GFPGANv1.4.pth"] = data
    urls = [server.url + "/gone/GFPGANv1.4.pth", server.url + "/mirror/GFPGANv1.4.pth"]
    publish(tmp_path, monkeypatch, [row("gfpgan-v1.4", urls, data)])
    said = []
    fetch("gfpgan-v1.4", progress=False, say=said.append)
    assert [r["path"] for r in server.requests] == ["/gone/GFPGANv1.4.pth", "/mirror/GFPGANv1.4.pth"]
    assert any("trying mirror 2 of 2" in s for s in said)


def test_content_length_that_is_not_the_published_size_is_refused(server, tmp_path, monkeypatch, home):
    data = GFPGAN_TINY.read_bytes()
    server.files["/GFPGANv1.4.pth"] = data
    server.wrong_length = 1234  # e.g. an HTML page instead of the checkpoint
    publish(tmp_path, monkeypatch, [row("gfpgan-v1.4", server.url + "/GFPGANv1.4.pth", data)])
    with pytest.raises(FetchError, match="1,234 bytes"):
        fetch("gfpgan-v1.4", progress=False, say=lambda m: None)
    assert files_under(home) == []


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_full_disk_leaves_no_partial_file(server, tmp_path):
    data = os.urandom(3 << 20)
    server.files["/big.bin"] = data
    dest = tmp_path / "big.bin"
    part = dest.with_name("big.bin.part")
    part.symlink_to("/dev/full")  # every write fails with ENOSPC, as on a full disk
    with pytest.raises(FetchError, match="disk is full") as err:
        download(server.url + "/big.bin", dest, hashlib.sha256(data).hexdigest(), len(data), progress=False)
    assert server.url in str(err.value)
    assert not part.exists() and not part.is_symlink() and not dest.exists()


def test_row_without_public_hash_needs_sha256(server, tmp_path, monkeypatch, home):
    data = GFPGAN_TINY.read_bytes()
    server.files["/x.pth"] = data
    r = row("gfpgan-v1.4", server.url + "/x.pth", data)
    r["sha256"], r["sha256_source"] = None, "none found"
    publish(tmp_path, monkeypatch, [r])
    with pytest.raises(UserError, match="no public sha256.*--sha256"):
        fetch("gfpgan-v1.4", progress=False, say=lambda m: None)
    assert server.requests == []
    assert main(["weights", "fetch", "gfpgan-v1.4", "-q", "--sha256", hashlib.sha256(data).hexdigest()]) == 0
    assert cache.installed("gfpgan-v1.4") is not None


def test_used_as_downloaded_row(server, tmp_path, monkeypatch, home):
    data = os.urandom(5000)
    server.files["/pt_inception-x.pth"] = data
    publish(tmp_path, monkeypatch, [row("fid-test", server.url + "/pt_inception-x.pth", data, convert="none",
                                        purpose="FID")])
    entry = fetch("fid-test", progress=False, say=lambda m: None)
    assert (home / entry["file"]).read_bytes() == data and entry["sha256"] == hashlib.sha256(data).hexdigest()


# ---- --weights auto, fetch on first use, offline --------------------------------------------------
@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "in" / "photo.png"
    path.parent.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
    return path


def test_auto_without_and_with_a_fetched_gfpgan(gfpgan, photo, tmp_path, capsys):
    assert main(["restore", str(photo), "-o", str(tmp_path / "o1"), "-q"]) == 0
    err = capsys.readouterr().err
    assert "mmrface: weights: mmrface-small (auto: the bundled 128-px model" in err
    assert "fidelity w = 1 (these weights' default" in err  # the bundled file records w = 1
    assert "note:" not in err  # ... and was last trained at w = 1: no caution
    assert main(["weights", "fetch", "gfpgan-v1.4", "-q"]) == 0
    capsys.readouterr()
    assert main(["restore", str(photo), "-o", str(tmp_path / "o2"), "-q"]) == 0
    err = capsys.readouterr().err
    assert "mmrface: weights: gfpgan-v1.4 (auto: fetched" in err and "fidelity w = 1 (these weights' default" in err
    assert (tmp_path / "o2" / "photo.png").is_file()
    assert main(["restore", str(photo), "-o", str(tmp_path / "o3"), "-q", "-w", "0.3"]) == 0
    assert "weights: gfpgan-v1.4 (auto: fetched" in (err := capsys.readouterr().err) and "fidelity w = 0.3\n" in err


def test_published_name_is_fetched_on_first_use_after_saying_what(gfpgan, server, photo, tmp_path, capsys):
    assert main(["restore", "-i", str(photo), "-o", str(tmp_path / "o"), "--weights", "gfpgan-v1.4", "-q"]) == 0
    err = capsys.readouterr().err
    assert f"downloading GFPGANv1.4.pth ({len(gfpgan):,} bytes" in err and server.url in err
    assert "weights: gfpgan-v1.4 (fetched on first use)" in err and len(server.requests) == 1
    assert main(["restore", "-i", str(photo), "-o", str(tmp_path / "o"), "--weights", "gfpgan-v1.4", "-q",
                 "--overwrite"]) == 0
    assert len(server.requests) == 1  # installed now: no second download


def test_offline_mode_and_no_download(gfpgan, server, photo, tmp_path, monkeypatch, capsys):
    argv = ["restore", "-i", str(photo), "-o", str(tmp_path / "o"), "--weights", "gfpgan-v1.4", "-q"]
    assert main(argv + ["--no-download"]) == 2
    assert "downloads are off (--no-download)" in capsys.readouterr().err
    monkeypatch.setenv("MMRFACE_OFFLINE", "1")
    assert main(argv) == 2
    assert "downloads are off (MMRFACE_OFFLINE=1)" in capsys.readouterr().err
    assert main(["weights", "fetch", "gfpgan-v1.4", "-q"]) == 2
    assert "MMRFACE_OFFLINE" in capsys.readouterr().err
    assert main(["restore", "-i", str(photo), "-o", str(tmp_path / "o4"), "-q"]) == 0  # auto still works
    assert server.requests == []


# ---- the shipped catalog ------------------------------------------------------------------------
def test_shipped_catalog_rows(monkeypatch):
    monkeypatch.delenv("MMRFACE_CATALOG", raising=False)
    rows = catalog()
    need = {"gfpgan-v1.3", "gfpgan-v1.4", "gfpgan-stylegan2-512", "rosinality-ffhq-256", "gfpgan-arcface-resnet18",
            "pytorch-fid-inception"}
    assert need <= set(rows)
    for r in rows.values():
        assert all(u.startswith("https://") for u in r.urls) and r.licence and r.use and r.sha256_source
        if r.sha256 is None:
            assert r.sha256_source.startswith("none found")
        else:
            assert ":" in r.sha256_source  # "owner/repo: path"
    assert rows["gfpgan-v1.4"].fidelity == rows["gfpgan-v1.3"].fidelity == 1.0
    assert rows["pytorch-fid-inception"].sha256.startswith("6726825d")  # the prefix in its file name


def test_dry_run_prints_url_size_sha256_and_source_of_every_row(monkeypatch, home, capsys):
    monkeypatch.delenv("MMRFACE_CATALOG", raising=False)
    assert main(["weights", "fetch", "--all", "--dry-run"]) == 0
    out = capsys.readouterr().out
    for r in catalog().values():
        block = out.split(r.name + "  (", 1)[1].split("\n  use:", 1)[0]
        assert r.urls[0] in block and r.sha256_source in block
        assert (r.sha256 or "NONE PUBLISHED") in block and ("unknown size" if r.size is None else f"{r.size:,}") in block
    assert main(["weights", "list", "--remote"]) == 0
    assert capsys.readouterr().out == out
