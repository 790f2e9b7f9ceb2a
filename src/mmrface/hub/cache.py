"""Where fetched checkpoints live, and the index of the installed (converted) files.

    $MMRFACE_HOME/                     (default: the platform cache directory + /mmrface)
        downloads/<file>.part          a download in progress (kept after a network cut, for resume)
        downloads/<file>               a verified original kept with --keep-original, or used as is
        weights/<name>.safetensors     converted once, our format
        weights.yaml                   the index: a weights registry (name, file, size, sha256, ...)

The index has the format of `weights_registry.yaml`, so `mmrface weights list | verify | info`,
`load_weights` and the sha256 check on every load treat fetched files like bundled ones.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

INDEX_NAME = "weights.yaml"


def home() -> Path:
    """$MMRFACE_HOME, else the platform cache dir: ~/.cache/mmrface, ~/Library/Caches/mmrface, %LOCALAPPDATA%."""
    env = os.environ.get("MMRFACE_HOME")
    if env:
        return Path(env).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "mmrface"
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "mmrface" / "Cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mmrface"


def index_path() -> Path:
    return home() / INDEX_NAME


def downloads_dir() -> Path:
    return home() / "downloads"


def weights_dir() -> Path:
    return home() / "weights"


def read_index() -> list[dict[str, Any]]:
    """The index rows (empty when nothing was fetched)."""
    path = index_path()
    if not path.is_file():
        return []
    from mmrface.errors import UserError

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"cache index {path}: cannot read it ({str(exc).splitlines()[0]}); "
                        f"delete it and fetch again") from None
    rows = data.get("weights") if isinstance(data, dict) else None
    return [r for r in rows or [] if isinstance(r, dict)]


def installed(name: str) -> dict[str, Any] | None:
    """The index row of `name` if its converted file is present, else None."""
    row = next((r for r in read_index() if r.get("name") == name), None)
    if row is None or not (home() / str(row.get("file", ""))).is_file():
        return None
    return row


def record(row: dict[str, Any]) -> None:
    """Add or replace `row` (by name) in the index; written to a temp file and renamed (never half-written)."""
    rows = [r for r in read_index() if r.get("name") != row["name"]] + [row]
    header = ("# Checkpoints fetched by `mmrface weights fetch` (a weights registry; files relative to\n"
              "# this folder). Written by mmrface; `mmrface weights verify` re-checks every sha256.\n")
    text = header + yaml.safe_dump({"weights_dir": ".", "weights": rows}, sort_keys=False, allow_unicode=True)
    write_atomic(index_path(), text.encode())


def write_atomic(path: Path, data: bytes) -> None:
    """Write bytes to a temp file next to `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
