"""The results manifest of a batch run: JSON Lines, one row per input.

    {"input": "scans/0001.jpg", "output": "out/0001.jpg", "status": "ok", "faces": 2, "error": null,
     "seconds": {"read": 0.02, "detect_align": 0.11, "restore": 0.05, "decode_paste": 0.03, "write": 0.01},
     "weights_sha256": "9f3c...", "workers": {"prepare": "host:pid", ...}, "finished": "2026-12-02T10:00:00.123Z"}

status: `ok` (written, faces restored), `no_face` (written: the photo upscaled, no face found),
`error` (nothing written; `error` says why), `exists` (the output was there before this manifest
knew it, so it was left alone; `--overwrite` redoes it).

The driver appends a row as each photo finishes and syncs it to disk, so a killed run loses at
most the row being written; a torn last line is ignored on reading. A rerun skips every input
that has a row (errors too: a broken file stays broken; `--retry-errors` tries them again). At the
end of a run the file is rewritten (atomically) with the latest row of each input, in order.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

from mmrface.batch.files import atomic_write_bytes

STATUSES = ("ok", "no_face", "error", "exists")
STAGES = ("read", "detect_align", "restore", "decode_paste", "write")


def make_row(input: str, output: str | None, status: str, faces: int | None = None, error: str | None = None,
             seconds: dict | None = None, weights_sha256: str | None = None, workers: dict | None = None) -> dict:
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    return {"input": input, "output": output, "status": status, "faces": faces, "error": error,
            "seconds": {k: round(float(v), 4) for k, v in (seconds or {}).items()},
            "weights_sha256": weights_sha256, "workers": workers or {},
            "finished": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")}


class ResultsManifest:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def rows(self) -> dict[str, dict]:
        """The latest row of each input (insertion order: first appearance)."""
        latest: dict[str, dict] = {}
        if not self.path.exists():
            return latest
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # the torn last line of a killed run
                    continue
                if isinstance(row, dict) and isinstance(row.get("input"), str) and row.get("status") in STATUSES:
                    latest[row["input"]] = row
        return latest

    def append(self, rows: list[dict]) -> None:
        """Append rows and sync them to disk (a torn last line is closed first)."""
        if not rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as f:
            prefix = b""
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                prefix = b"" if f.read(1) == b"\n" else b"\n"
            f.write(prefix + b"".join(json.dumps(r, sort_keys=True).encode() + b"\n" for r in rows))
            f.flush()
            os.fsync(f.fileno())

    def compact(self) -> int:
        """Rewrite the file with the latest row of each input; returns the number of rows."""
        rows = self.rows()
        atomic_write_bytes(self.path, b"".join(json.dumps(r, sort_keys=True).encode() + b"\n" for r in rows.values()))
        return len(rows)
