"""One verified HTTP(S) download: streamed, resumable with HTTP Range, renamed only after its sha256 matches.

    download(url, dest, size=348632874, sha256="e2cd...", name="gfpgan-v1.4")

Bytes go to `dest.part`. A connection cut mid-file keeps `dest.part`, and the next call resumes it
with `Range: bytes=N-` (a server that ignores Range gets a fresh start). A wrong sha256 or size, a
full disk or a server that sends something else removes the partial file. Every failure is a
`FetchError` (a `UserError`): one line with the URL, what happened and the manual alternative.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

from mmrface.errors import UserError

CHUNK = 1 << 20
TIMEOUT_S = 30.0


class FetchError(UserError):
    """A download failed; `retry_elsewhere` is True when another mirror may do better."""

    def __init__(self, message: str, retry_elsewhere: bool = False):
        super().__init__(message)
        self.retry_elsewhere = retry_elsewhere


def _user_agent() -> str:
    from mmrface import __version__

    return f"mmrface/{__version__} (+weights fetch)"


def _hash_prefix(path: Path) -> tuple["hashlib._Hash", int]:
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
            n += len(chunk)
    return h, n


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _connect_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return "cannot resolve the host name (no network?)"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"no answer within {TIMEOUT_S:g} s"
    text = str(getattr(reason, "strerror", None) or reason) or type(reason).__name__
    return f"cannot connect ({text})"


def download(url: str, dest: str | Path, sha256: str, size: int | None = None, name: str | None = None,
             manual: str = "", progress: bool = True) -> Path:
    """Fetch `url` into `dest` (verified against `sha256` and `size`), resuming `dest.part` if present."""
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    where = f"cannot fetch {name or dest.name} from {url}"
    tail = f"; {manual}" if manual else ""

    def fail(what: str, retry: bool = False, drop: bool = False) -> FetchError:
        if drop:
            part.unlink(missing_ok=True)
        return FetchError(f"{where}: {what}{tail}", retry_elsewhere=retry)

    dest.parent.mkdir(parents=True, exist_ok=True)
    for _attempt in range(2):  # a second pass only when the server refuses to resume
        hasher, offset = _hash_prefix(part) if part.is_file() else (hashlib.sha256(), 0)
        if size is not None and offset > size:
            part.unlink()
            continue
        if size is not None and offset == size:
            break  # already complete: only the checks are left
        req = urllib.request.Request(url, headers={"User-Agent": _user_agent(),
                                                   **({"Range": f"bytes={offset}-"} if offset else {})})
        try:
            resp = urllib.request.urlopen(req, timeout=TIMEOUT_S)  # noqa: S310 (https/http URLs from the catalog)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:  # the partial file is longer than the remote one
                part.unlink()
                continue
            raise fail(f"HTTP {exc.code} {exc.reason}", retry=True) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise fail(_connect_reason(exc), retry=True) from None
        with resp:
            status = resp.status
            if offset and status == 200:  # Range ignored: start over
                part.unlink()
                hasher, offset = hashlib.sha256(), 0
            elif offset and not str(resp.headers.get("Content-Range", "")).startswith(f"bytes {offset}-"):
                raise fail(f"the server resumed at the wrong place ({resp.headers.get('Content-Range')!r})",
                           retry=True, drop=True)
            length = resp.headers.get("Content-Length")
            total = offset + int(length) if length is not None and length.isdigit() else None
            if size is not None and total is not None and total != size:
                raise fail(f"the server sends {total:,} bytes, the published file has {size:,} (a different "
                           f"file or an error page); nothing kept", retry=True, drop=True)
            offset = _stream(resp, part, hasher, offset, size, total, name or dest.name, progress, fail)
        break
    else:
        raise fail("the server does not serve the file from its start", retry=True, drop=True)

    have = part.stat().st_size if part.is_file() else 0
    if size is not None and have != size:
        raise fail(f"the connection closed after {_mib(have)} of {_mib(size)}; the partial download is kept "
                   f"in {part}: run the same command again to resume", retry=True)
    digest = _hash_prefix(part)[0].hexdigest() if offset != have else hasher.hexdigest()
    if digest != sha256.lower():
        raise fail(f"wrong sha256 (got {digest}, expected {sha256.lower()}): refused, nothing kept", drop=True)
    os.replace(part, dest)
    return dest


def _stream(resp, part: Path, hasher, offset: int, size: int | None, total: int | None, label: str,
            progress: bool, fail) -> int:
    """Append the response body to `part`; returns the bytes now in `part`."""
    from tqdm import tqdm

    bar = tqdm(total=size or total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
               file=sys.stderr, disable=not progress, leave=False)
    try:
        with open(part, "ab") as out:
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except (OSError, http.client.HTTPException) as exc:  # reset, timeout, incomplete read
                    out.flush()
                    kept = part.stat().st_size
                    raise fail(f"the connection was lost after {_mib(kept)}"
                               + (f" of {_mib(size)}" if size else "")
                               + f" ({type(exc).__name__}); the partial download is kept in {part}: run the same "
                               f"command again to resume", retry=True) from None
                if not chunk:
                    break
                if size is not None and offset + len(chunk) > size:
                    raise fail(f"the server sends more than the published {size:,} bytes; nothing kept", drop=True)
                try:
                    out.write(chunk)
                except OSError as exc:
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise fail(f"the disk is full (after {_mib(offset)} in {part.parent}); the partial file was "
                                   f"removed: free space or set MMRFACE_HOME to another disk", drop=True) from None
                    raise fail(f"cannot write {part} ({exc.strerror or exc})", drop=True) from None
                hasher.update(chunk)
                offset += len(chunk)
                bar.update(len(chunk))
            try:
                out.flush()
                os.fsync(out.fileno())
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise fail(f"the disk is full ({part.parent}); the partial file was removed: free space or "
                               f"set MMRFACE_HOME to another disk", drop=True) from None
                raise
    except OSError as exc:  # opening the file
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise fail(f"the disk is full ({part.parent}); free space or set MMRFACE_HOME to another disk",
                       drop=True) from None
        raise fail(f"cannot write {part} ({exc.strerror or exc})", drop=True) from None
    finally:
        bar.close()
    return offset
