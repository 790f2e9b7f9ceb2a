"""`fetch(name)`: download a published checkpoint, verify it, convert it once, record it in the index."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

from mmrface.errors import UserError
from mmrface.hub import cache
from mmrface.hub.catalog import Row, get_row
from mmrface.hub.download import FetchError, download

OFFLINE_ENV = "MMRFACE_OFFLINE"


def offline() -> bool:
    """True when $MMRFACE_OFFLINE is set to anything but empty/0/false/no."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def expected_sha256(row: Row, override: str | None) -> str:
    """The hash the download must match: the published one, or the user's `--sha256` for a row without one."""
    if override is not None:
        override = override.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", override):
            raise UserError(f"--sha256 must be 64 hex digits, got {override!r}")
        if row.sha256 and override != row.sha256:
            raise UserError(f"--sha256 {override[:16]}... differs from the published {row.sha256[:16]}... of "
                            f"{row.name} ({row.sha256_source}); drop --sha256")
        return override
    if row.sha256 is None:
        raise UserError(f"{row.name}: no public sha256 is known ({row.sha256_source}); download refused. If you "
                        f"have the hash from a source you trust, pass --sha256 HEX, or download {row.file} "
                        f"yourself and run `mmrface weights import {row.file} -o {row.name}.safetensors`")
    return row.sha256


def manual_hint(row: Row) -> str:
    if row.convert == "none":
        return f"or download {row.file} yourself and pass that file (`{row.use}` with the file's path)"
    return (f"or download {row.file} yourself and run `mmrface weights import {row.file} -o {row.name}.safetensors`, "
            f"then use that file")


def fetch(name: str, sha256: str | None = None, keep_original: bool = False, force: bool = False,
          progress: bool = True, say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Install `name` (download, verify, convert once, index); returns its index row. Idempotent."""
    say = say or (lambda msg: print(msg, file=sys.stderr))
    row = get_row(name)
    expected = expected_sha256(row, sha256)
    done = cache.installed(name)
    if done is not None and not force:
        say(f"{name}: already installed ({cache.home() / done['file']})")
        return done
    if offline():
        raise UserError(f"{name}: downloads are off ({OFFLINE_ENV}={os.environ[OFFLINE_ENV]}); unset it to fetch, "
                        f"{manual_hint(row)}")
    original = cache.downloads_dir() / row.file
    if not (original.is_file() and _matches(original, expected)):
        _download_any(row, original, expected, progress, say)
    return _install(row, original, expected, keep_original, say)


def _matches(path: Path, sha256: str) -> bool:
    from mmrface.weights import file_sha256

    return file_sha256(path) == sha256


def _download_any(row: Row, dest: Path, sha256: str, progress: bool, say) -> None:
    """Try each URL of the row in turn (a mirror helps only with HTTP and connection errors)."""
    error: FetchError | None = None
    for i, url in enumerate(row.urls):
        if error is not None:
            say(f"{row.name}: {error}; trying mirror {i + 1} of {len(row.urls)}")
        try:
            download(url, dest, sha256, row.size, name=row.name, manual=manual_hint(row), progress=progress)
            return
        except FetchError as exc:
            if not exc.retry_elsewhere:
                raise
            error = exc
    assert error is not None
    raise error


def _install(row: Row, original: Path, sha256: str, keep_original: bool, say) -> dict[str, Any]:
    """Convert (or move) the verified original into weights/, then record it in the index."""
    from mmrface.weights import file_sha256

    cache.weights_dir().mkdir(parents=True, exist_ok=True)
    source = {"url": row.urls[0], "file": row.file, "sha256": sha256, "size": original.stat().st_size,
              "sha256_source": row.sha256_source}
    if row.convert == "none":
        final = cache.weights_dir() / row.file
        os.replace(original, final)
        sha = sha256
    else:
        from mmrface.convert import import_checkpoint

        final = cache.weights_dir() / f"{row.name}.safetensors"
        extra = {"source_url": row.urls[0], "catalog_name": row.name}
        if row.fidelity is not None:
            extra["default_fidelity"] = str(row.fidelity)
        try:
            conv, sha = import_checkpoint(original, final, row.convert, extra)
        except UserError as exc:
            raise UserError(f"{row.name}: downloaded and verified ({original}), but the conversion failed: {exc}") from None
        for note in conv.notes:
            say(f"{row.name}: note: {note}")
        if not keep_original:
            original.unlink()
        if sha != file_sha256(final):  # the file on disk is what the index vouches for
            final.unlink(missing_ok=True)
            raise UserError(f"{row.name}: the converted file changed while being written; fetch again")
    entry = {"name": row.name, "file": str(final.relative_to(cache.home())), "size": final.stat().st_size,
             "sha256": sha, "licence": row.licence, "trained_on": row.description, "purpose": row.purpose,
             "source": source}
    if row.fidelity is not None:
        entry["fidelity"] = row.fidelity
    cache.record(entry)
    say(f"installed {row.name}: {final} ({entry['size'] / 2**20:.1f} MiB, sha256 {sha})")
    return entry
