"""The catalog of published checkpoints (`catalog.yaml`, shipped with the package).

`$MMRFACE_CATALOG` may name a YAML file of further rows in the same format (a local mirror, a
checkpoint of your own); its rows override the shipped ones by name.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from importlib import resources

import yaml

from mmrface.errors import UserError

PURPOSES = ("restore", "prior init", "identity loss", "FID")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Row:
    """One published checkpoint: where it is, how to check it, what it is for, how it is converted."""

    name: str
    file: str
    urls: tuple[str, ...]
    size: int | None
    size_source: str
    sha256: str | None
    sha256_source: str
    licence: str
    purpose: str
    use: str
    convert: str  # a `weights import --format`, or "none" (used as downloaded)
    description: str
    fidelity: float | None = None  # default -w of a restorer
    extra: dict = field(default_factory=dict, compare=False)

    def size_text(self) -> str:
        return "unknown size" if self.size is None else f"{self.size:,} bytes ({self.size / 2**20:.1f} MiB)"

    def lines(self) -> list[str]:
        """What `weights list --remote` / `fetch --dry-run` print for this row."""
        return [f"{self.name}  ({self.purpose}) {self.description}",
                *(f"  url:     {u}" for u in self.urls),
                f"  size:    {self.size_text()}  [source: {self.size_source}]",
                f"  sha256:  {self.sha256 or 'NONE PUBLISHED (download refused without --sha256)'}",
                f"  source:  {self.sha256_source}",
                f"  licence: {self.licence}",
                f"  convert: {'used as downloaded' if self.convert == 'none' else self.convert + ' -> mmrface safetensors'}"
                + (f"; default fidelity w = {self.fidelity:g}" if self.fidelity is not None else ""),
                f"  use:     {self.use}"]


def parse_rows(data: object, where: str) -> dict[str, Row]:
    """Validate the YAML list of rows (UserError naming `where` and the row otherwise)."""
    if not isinstance(data, list):
        raise UserError(f"{where}: expected a list of checkpoints")
    rows: dict[str, Row] = {}
    for i, raw in enumerate(data):
        if not isinstance(raw, dict) or not raw.get("name") or not raw.get("file") or not raw.get("urls"):
            raise UserError(f"{where}: entry {i + 1} needs name, file and urls")
        name = str(raw["name"])
        sha = raw.get("sha256")
        if sha is not None and not _HEX64.fullmatch(str(sha).lower()):
            raise UserError(f"{where}: {name}: sha256 must be 64 hex digits or null, got {sha!r}")
        if str(raw.get("purpose")) not in PURPOSES:
            raise UserError(f"{where}: {name}: purpose must be one of {PURPOSES}, got {raw.get('purpose')!r}")
        known = {"name", "file", "urls", "size", "size_source", "sha256", "sha256_source", "licence", "purpose",
                 "use", "convert", "description", "fidelity"}
        rows[name] = Row(
            name=name, file=str(raw["file"]), urls=tuple(str(u) for u in raw["urls"]),
            size=int(raw["size"]) if raw.get("size") is not None else None,
            size_source=str(raw.get("size_source", "not stated")),
            sha256=str(sha).lower() if sha is not None else None,
            sha256_source=str(raw.get("sha256_source", "not stated")),
            licence=str(raw.get("licence", "unknown")), purpose=str(raw["purpose"]), use=str(raw.get("use", "")),
            convert=str(raw.get("convert", "none")), description=str(raw.get("description", "")),
            fidelity=float(raw["fidelity"]) if raw.get("fidelity") is not None else None,
            extra={k: v for k, v in raw.items() if k not in known})
    return rows


@lru_cache(maxsize=1)
def _shipped() -> dict[str, Row]:
    text = resources.files("mmrface.hub").joinpath("catalog.yaml").read_text()
    return parse_rows(yaml.safe_load(text), "mmrface/hub/catalog.yaml")


def catalog() -> dict[str, Row]:
    """All published rows by name: the shipped catalog, then the rows of $MMRFACE_CATALOG."""
    rows = dict(_shipped())
    extra = os.environ.get("MMRFACE_CATALOG")
    if extra:
        path = Path(extra).expanduser()
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise UserError(f"catalog {path} (from $MMRFACE_CATALOG): cannot read it "
                            f"({str(exc).splitlines()[0]})") from None
        rows.update(parse_rows(data, str(path)))
    return rows


def get_row(name: str) -> Row:
    rows = catalog()
    if name not in rows:
        raise UserError(f"{name!r} is not a published checkpoint; known: {', '.join(rows)}")
    return rows[name]
