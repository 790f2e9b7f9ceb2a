"""The three stages of a Ray Data batch run, each over a batch of rows (a dict of columns).

    prepare_batch  (CPU tasks)    read + decode, detect + align        -> `prepare_photo`
    RestoreActor   (GPU actors)   the network on the crops of B photos -> `Restorer.restore_crops`
    finish_batch   (CPU tasks)    decode + paste back, atomic write    -> `paste_photo`

They are the steps of `Restorer.restore`, called one by one (see `mmrface.pipeline.restorer`): no
second implementation of the pipeline. A photo that fails in any stage becomes a row with its
error and is passed through untouched by the later stages; only a dead worker makes Ray retry.
Between stages a row carries `state` (the pickled `PreparedPhoto` without its pixels: faces,
crops, affines, then the restored crops) and, for remote inputs, the file's bytes (`data`), so a
photo is fetched once and only its encoded bytes cross the network; local inputs are re-read.
"""

from __future__ import annotations

import os
import pickle
import socket
import time
from dataclasses import fields

import numpy as np

from mmrface.batch.files import is_remote, load_image, local_path, read_bytes, save_image
from mmrface.pipeline.detection import options_from_detector
from mmrface.pipeline.restorer import PreparedPhoto, Restorer, paste_photo, prepare_photo

#: columns every stage passes on; `data`, `state` are dropped by `finish_batch`
COLUMNS = ("input", "output", "error", "faces", "data", "state", "weights_sha256",
           "t_read", "t_detect_align", "t_restore", "t_decode_paste", "t_write",
           "w_prepare", "w_restore", "w_finish")


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def describe(exc: BaseException, path: str | None = None) -> str:
    """One line for a manifest's `error`: the UserError's message (without a leading `path: `),
    else `Type: first line`."""
    from mmrface.errors import UserError

    text = str(exc).splitlines()[0] if str(exc) else ""
    if not isinstance(exc, UserError):
        return f"{type(exc).__name__}: {text}".rstrip(": ")
    for prefix in (path, path and local_path(path)):
        if prefix and text.startswith(prefix + ": "):
            return text[len(prefix) + 2:]
    return text


def rows_of(batch: dict) -> list[dict]:
    """Numpy columns -> rows of plain Python values (a column that is all nulls reads back as NaN)."""
    def plain(k, v):
        v = v.item() if isinstance(v, np.generic) else v
        return None if isinstance(v, float) and not k.startswith("t_") and v != v else v

    n = len(batch["input"])
    return [{k: plain(k, v[i]) for k, v in batch.items()} for i in range(n)]


def _columns(rows: list[dict], names=COLUMNS) -> dict[str, np.ndarray]:
    """Rows -> numpy columns; bytes and strings as object arrays (a fixed-width `S` array would
    drop trailing NUL bytes of pickled data)."""
    out = {}
    for k in names:
        values = [r.get(k) for r in rows]
        if k.startswith("t_"):
            out[k] = np.array([float(v or 0.0) for v in values], np.float64)
        elif k == "faces":
            out[k] = np.array([int(v or 0) for v in values], np.int64)
        else:
            out[k] = np.array(values, dtype=object)
    return out


def prepare_batch(batch: dict, *, size: int, detector: str, upscale: float, aligned: bool = False,
                  only_center_face: bool = False, largest_face: bool = False, min_size: int = 0,
                  large_faces: str = "blend", paste_mask: str = "face") -> dict:
    """Read, decode, detect and align each photo (CPU)."""
    detection = options_from_detector(detector).replace(only_center=only_center_face, largest=largest_face,
                                                        min_size=min_size)  # backends cached per worker process
    rows = []
    for row in rows_of(batch):
        row.update(error=row.get("error") or None, w_prepare=worker_id())
        if row["error"] is None:
            try:
                t0 = time.perf_counter()
                data = read_bytes(row["input"]) if is_remote(row["input"]) else None
                img = load_image(row["input"], data)
                t1 = time.perf_counter()
                p = prepare_photo(img.pixels, size, detection, upscale, aligned, large_faces=large_faces,
                                  paste_mask=paste_mask)
                state = {f.name: getattr(p, f.name) for f in fields(p) if f.name != "rgb"}
                row.update(data=data, state=pickle.dumps(state, protocol=5), faces=len(p.crops),
                           t_read=t1 - t0, t_detect_align=time.perf_counter() - t1)
            except Exception as exc:  # a broken photo is a row with an error, never a failed job
                row["error"] = describe(exc, row["input"])
        rows.append(row)
    return _columns(rows)


class RestoreActor:
    """Holds one `Restorer` (the network on its GPU, or on CPU) and restores the crops of a batch."""

    def __init__(self, weights: str | None, device: str, fidelity: float | None, batch_size: int,
                 backend: str = "auto", onnx: str | None = None, noise: str = "stored"):
        self.restorer = Restorer(weights, device=device, fidelity=fidelity, batch_size=batch_size,
                                 backend=backend, onnx=onnx, noise=noise)
        meta = self.restorer.meta
        self.sha256 = str(meta.get("sha256") or meta.get("weights_sha256") or "unknown")
        self.worker = worker_id() + (f":{self.restorer.device}" if self.restorer.device.type != "cpu" else "")

    def __call__(self, batch: dict) -> dict:
        rows = rows_of(batch)
        todo = [r for r in rows if r["error"] is None]
        states = [pickle.loads(r["state"]) for r in todo]
        t0 = time.perf_counter()
        try:
            counts = [len(s["crops"]) for s in states]
            crops = [s["crops"] for s in states if len(s["crops"])]
            restored = self.restorer.restore_crops(np.concatenate(crops)) if crops else None
            parts = np.split(restored, np.cumsum(counts)[:-1]) if restored is not None else [None] * len(todo)
        except Exception:  # e.g. out of GPU memory on a batch: photo by photo, errors per photo
            parts = [self._one(s) for s in states]
        per_face = (time.perf_counter() - t0) / max(1, sum(len(s["crops"]) for s in states))
        for row, state, part in zip(todo, states, parts):
            if isinstance(part, Exception):
                row["error"], row["state"] = describe(part), None
                continue
            state["restored"] = part if part is not None else state["crops"][:0]
            row.update(state=pickle.dumps(state, protocol=5), t_restore=per_face * len(state["crops"]))
        for row in rows:
            row.update(weights_sha256=self.sha256, w_restore=self.worker)
        return _columns(rows)

    def _one(self, state: dict):
        try:
            return self.restorer.restore_crops(state["crops"])
        except Exception as exc:
            return exc


def finish_batch(batch: dict) -> dict:
    """Decode again, paste the restored faces back and write the output atomically (CPU)."""
    rows = []
    for row in rows_of(batch):
        row["w_finish"] = worker_id()
        if row["error"] is None:
            try:
                t0 = time.perf_counter()
                img = load_image(row["input"], row["data"])
                state = pickle.loads(row["state"])
                restored = state.pop("restored")
                result = paste_photo(PreparedPhoto(rgb=img.pixels, **state), restored, img.alpha)
                t1 = time.perf_counter()
                bit_depth = img.bit_depth if row["output"].lower().endswith(".png") else 8
                save_image(row["output"], result.image, result.alpha, bit_depth)
                row.update(t_decode_paste=t1 - t0, t_write=time.perf_counter() - t1)
            except Exception as exc:
                row["error"] = describe(exc, row["input"])
        rows.append(row)
    return _columns(rows, [c for c in COLUMNS if c not in ("data", "state")])
