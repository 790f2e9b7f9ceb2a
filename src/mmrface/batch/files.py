"""Files and URIs for the batch engine: the one place it touches `mmrface.pipeline.imageio`.

Inputs and outputs are local paths or URIs that pyarrow filesystems understand (`s3://bucket/key`,
`gs://bucket/key`, `file:///abs/path`). Local photos are decoded in place; remote ones are fetched
as bytes (carried from the detect stage to the paste stage, so they are fetched once) and decoded
from a temporary file. Outputs appear atomically: locally through `write_image` (temporary file
+ rename), remotely as one object upload that becomes visible only when it completes.
"""

from __future__ import annotations

import functools
import os
import tempfile

import numpy as np

from mmrface.errors import UserError
from mmrface.pipeline.imageio import IMAGE_EXTENSIONS, LoadedImage, atomic_write_bytes, read_image, write_image

__all__ = ["IMAGE_EXTENSIONS", "LoadedImage", "atomic_write_bytes", "filesystem", "fs_path", "is_remote", "load_image",
           "read_bytes", "save_image", "to_uri"]


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def local_path(uri: str) -> str:
    """Absolute local path of a plain path or `file://` URI."""
    path = uri[len("file://"):] if uri.startswith("file://") else uri
    return os.path.abspath(os.path.expanduser(path))


def to_uri(fs_path: str, like: str) -> str:
    """The URI of a pyarrow path on the same filesystem as the URI `like`."""
    return f"{like.split('://', 1)[0]}://{fs_path}" if is_remote(like) else fs_path


def fs_path(uri: str) -> str:
    """The path of `uri` on its filesystem (`bucket/key` for a remote one); no I/O."""
    return uri.split("://", 1)[1].rstrip("/") if is_remote(uri) else local_path(uri)


def filesystem(uri: str):
    """(pyarrow filesystem, path on it) for a local path or URI; remote filesystems are cached
    (creating one may ask the cloud for the bucket's region)."""
    from pyarrow import fs as pafs

    if not is_remote(uri):
        return pafs.LocalFileSystem(), local_path(uri)
    path = fs_path(uri)
    return _remote_fs(f"{uri.split('://', 1)[0]}://{path.split('/', 1)[0]}"), path


@functools.lru_cache(maxsize=16)
def _remote_fs(bucket_uri: str):
    from pyarrow import fs as pafs

    try:
        return pafs.FileSystem.from_uri(bucket_uri)[0]
    except (ValueError, OSError) as exc:
        raise UserError(f"{bucket_uri}: no filesystem for it ({str(exc).splitlines()[0]})") from None


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise UserError(f"{uri}: no such file") from None
    except OSError as exc:
        raise UserError(f"{uri}: cannot read ({str(exc).splitlines()[0]})") from None


def load_image(uri: str, data: bytes | None = None) -> LoadedImage:
    """Decode a photo: a local file in place, else `data` (or the fetched object) via a temporary file."""
    if data is None and not is_remote(uri):
        return read_image(local_path(uri))
    data = read_bytes(uri) if data is None else data
    with tempfile.TemporaryDirectory(prefix="mmrface-") as tmp:
        path = os.path.join(tmp, os.path.basename(uri) or "image")
        with open(path, "wb") as f:
            f.write(data)
        try:
            return read_image(path)
        except UserError as exc:  # name the input, not the temporary copy
            raise UserError(str(exc).replace(path, uri)) from None


def save_image(uri: str, rgb: np.ndarray, alpha: np.ndarray | None, bit_depth: int) -> None:
    """Write a restored photo atomically to a local path or a remote URI."""
    if not is_remote(uri):
        write_image(local_path(uri), rgb, alpha=alpha, bit_depth=bit_depth)
        return
    fs, path = filesystem(uri)
    with tempfile.TemporaryDirectory(prefix="mmrface-") as tmp:
        tmp_file = os.path.join(tmp, "out" + os.path.splitext(path)[1])
        write_image(tmp_file, rgb, alpha=alpha, bit_depth=bit_depth)
        with open(tmp_file, "rb") as f:
            data = f.read()
    try:
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as out:  # an object store publishes the object on close
            out.write(data)
    except OSError as exc:
        raise UserError(f"{uri}: cannot write ({str(exc).splitlines()[0]})") from None
