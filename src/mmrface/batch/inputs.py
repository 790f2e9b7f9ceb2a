"""What a batch run reads, and the output name of each input.

`-i` is one of:
- a folder (local or `s3://bucket/photos/`): its photos, with `--recursive` those of sub-folders;
- a glob, quoted so the shell leaves it alone: `'scans/**/*.jpg'`, `'s3://bucket/2024-*/*.png'`
  (`*` and `?` stay within one folder, `**/` spans any number of them);
- a list file (`.txt` or `.lst`): one path or URI per line, `#` comments and blank lines skipped,
  relative paths taken from the list file's folder;
- one photo.
Hidden files and folders (names starting with ".") are skipped, so the temporary files of
atomic writes are never read as inputs. Output names mirror the inputs' paths below their common
folder (`commands.restore.output_path`, the single-process naming); an input whose output name
another input already has, or whose output would be the input itself, becomes an error row.
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import PurePosixPath

from mmrface.batch.files import IMAGE_EXTENSIONS, filesystem, fs_path, is_remote, local_path, read_bytes, to_uri
from mmrface.errors import UserError

LIST_EXTENSIONS = (".txt", ".lst")
_GLOB_CHARS = re.compile(r"[*?\[]")


def list_inputs(spec: str, recursive: bool = False) -> tuple[list[str], str | None]:
    """URIs of the photos that `spec` names, sorted, and the folder their output names start from
    (None when they lie on different filesystems: then outputs are named by file name alone)."""
    if _GLOB_CHARS.search(spec):
        return _glob(spec)
    from pyarrow import fs as pafs

    fs, path = filesystem(spec)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        sel = pafs.FileSelector(path, recursive=recursive)
        files = [to_uri(i.path, spec) for i in fs.get_file_info(sel)
                 if i.type == pafs.FileType.File and _is_photo(i.path, path)]
        if not files:
            raise UserError(f"no images found in {spec}" + ("" if recursive else " (try --recursive)"))
        return sorted(files), to_uri(path, spec)
    if info.type != pafs.FileType.File:
        raise UserError(f"input not found: {spec}")
    if posixpath.splitext(path)[1].lower() in LIST_EXTENSIONS:
        return _read_list(spec)
    uri = to_uri(path, spec)
    return [uri], to_uri(posixpath.dirname(path), spec)


def _is_photo(path: str, root: str) -> bool:
    rel = posixpath.relpath(path, root)
    return posixpath.splitext(path)[1].lower() in IMAGE_EXTENSIONS and not any(
        part.startswith(".") for part in rel.split("/"))


def glob_regex(pattern: str) -> re.Pattern:
    """Regex for a glob over '/'-separated paths: `*` `?` `[..]` within a name, `**/` any folders."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:[^/]*/)*")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and "]" in pattern[i + 2:]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1:end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def _glob(spec: str) -> tuple[list[str], str]:
    from pyarrow import fs as pafs

    fs, path = filesystem(spec)
    first = _GLOB_CHARS.search(path).start()
    root = path[:first].rsplit("/", 1)[0] or "/"  # the folder above the first glob character
    pattern = path[len(root.rstrip("/")) + 1:]
    regex = glob_regex(pattern)
    try:
        found = fs.get_file_info(pafs.FileSelector(root, recursive="/" in pattern or "**" in pattern))
    except FileNotFoundError:
        raise UserError(f"{spec}: folder {to_uri(root, spec)} not found") from None
    files = sorted(to_uri(i.path, spec) for i in found if i.type == pafs.FileType.File
                   and regex.match(posixpath.relpath(i.path, root)) and _is_photo(i.path, root))
    if not files:
        raise UserError(f"no images match {spec}")
    return files, to_uri(root, spec)


def _read_list(spec: str) -> tuple[list[str], str | None]:
    try:
        text = read_bytes(spec).decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{spec}: a list file must be UTF-8 text, one path or URI per line") from None
    base = posixpath.dirname(fs_path(spec))
    uris = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "://" in line:
            uris.append(line)
        elif is_remote(spec):
            uris.append(to_uri(posixpath.normpath(posixpath.join(base, line)), spec))
        else:
            uris.append(os.path.normpath(os.path.join(base, os.path.expanduser(line))))
    if not uris:
        raise UserError(f"{spec}: the list names no files")
    return uris, common_root(uris)


def common_root(uris: list[str]) -> str | None:
    """The deepest folder holding all `uris` (one filesystem and bucket), else None."""
    heads = {u.split("://", 1)[0] + "://" + u.split("://", 1)[1].split("/", 1)[0] if is_remote(u) else ""
             for u in uris}
    if len(heads) != 1:
        return None
    paths = [fs_path(u) for u in uris]
    root = posixpath.commonpath([posixpath.dirname(p) for p in paths]) if paths else ""
    return to_uri(root, uris[0])


def plan_outputs(inputs: list[str], root: str | None, out: str, ext: str, suffix: str
                 ) -> list[tuple[str, str, str | None]]:
    """(input, output URI, error or None) for each input, in order."""
    from mmrface.commands.restore import output_path

    out_path = fs_path(out)
    root_path = fs_path(root) if root is not None else None
    seen: dict[str, str] = {}
    plan = []
    for uri in inputs:
        src = PurePosixPath(fs_path(uri))
        dst = to_uri(str(output_path(src, PurePosixPath(root_path) if root_path else None,
                                     PurePosixPath(out_path), ext, suffix)), out)
        error = None
        if dst in seen:
            error = f"output {dst} is already the output of {seen[dst]}; use --suffix or separate runs"
        elif not is_remote(uri) and not is_remote(dst) and os.path.realpath(local_path(uri)) == os.path.realpath(local_path(dst)):
            error = "output would overwrite the input; choose another -o or --suffix"
        else:
            seen[dst] = uri
        plan.append((uri, dst, error))
    return plan
