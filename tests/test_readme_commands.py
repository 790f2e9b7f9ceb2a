"""Every `mmrface ...` command in README.md works as written, so the README cannot drift again.

Each command line of the README (code blocks and inline code) is parsed by mmrface's own parser
exactly as written; a bare `mmrface COMMAND [ACTION]` mention runs that command's --help; the
cheap ones (restore, weights list / verify / fetch --dry-run) also run for real in a scratch
folder, on a tiny photo created where the command expects its input.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmrface.cli import COMMANDS, build_parser, main

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[str]:
    """The `mmrface ...` command lines of README.md, with `a | b | c` alternatives and COMMAND expanded."""
    found: list[str] = []
    prose: list[str] = []
    fence = None  # the language of the code block we are in, or None in prose
    lines, text = [], README.read_text().splitlines()
    for line in text:  # a command continued with a trailing backslash is one command
        if lines and lines[-1].endswith("\\"):
            lines[-1] = lines[-1][:-1].rstrip() + " " + line.strip()
        else:
            lines.append(line)
    for line in lines:
        if line.startswith("```"):
            fence = None if fence is not None else (line[3:].strip() or "text")
            continue
        if fence is None:
            prose.append(line)
        elif fence in ("bash", "sh", "text") and "mmrface " in line:
            line = line.split(" #", 1)[0].strip()
            found.append(line[line.index("mmrface "):])
    found += [m.strip() for m in re.findall(r"`(mmrface [^`]+)`", "\n".join(prose))]
    out: list[str] = []
    for cmd in found:
        head, *alternatives = [c.strip() for c in cmd.split(" | ")]
        prefix = " ".join(head.split()[:2])
        for c in [head] + [f"{prefix} {alt}" for alt in alternatives]:
            out += [c.replace("COMMAND", name) for name in COMMANDS] if "COMMAND" in c else [c]
    return list(dict.fromkeys(out))


COMMAND_LINES = readme_commands()


def test_the_readme_has_the_commands_we_promise():
    assert "mmrface restore photos/ -o out/" in COMMAND_LINES
    assert "mmrface weights fetch gfpgan-v1.4" in COMMAND_LINES
    assert "mmrface weights fetch gfpgan-v1.4 --dry-run" in COMMAND_LINES
    assert len(COMMAND_LINES) > 20


@pytest.mark.parametrize("line", COMMAND_LINES)
def test_readme_command_parses_as_written(line, capsys):
    argv = shlex.split(line)[1:]
    bare = len(argv) <= 2 and all(not a.startswith("-") for a in argv) and argv[0] in COMMANDS
    if bare or "--help" in argv:
        with pytest.raises(SystemExit) as done:  # a bare mention: its --help must work
            main(argv + ([] if "--help" in argv else ["--help"]))
        assert done.value.code == 0, capsys.readouterr().err
        return
    try:
        build_parser(argv).parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"README line does not parse: {line}\n{capsys.readouterr().err}")
        raise exc


RUNNABLE = [c for c in COMMAND_LINES if "--help" not in c and (
    c.startswith(("mmrface restore ", "mmrface weights list", "mmrface weights verify")) or "--dry-run" in c)]


def _make_input(argv: list[str], cwd: Path) -> bool:
    """Create the photo (or folder with one photo) a restore line reads; False for a video, a
    remote or glob input (Ray engine: tests/test_batch*.py) or a mention without input."""
    args = build_parser(argv).parse_args(argv)
    if not (args.input or args.input_arg) or getattr(args, "engine", "local") == "ray":
        return False
    src = Path(args.input or args.input_arg)
    if src.suffix.lower() in (".mp4", ".mov", ".mkv", ".webm"):
        return False
    path = cwd / src if src.suffix else cwd / src / "face.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return True


@pytest.mark.parametrize("line", RUNNABLE)
def test_readme_command_runs(line, tmp_path, monkeypatch):
    argv = shlex.split(line)[1:]
    monkeypatch.chdir(tmp_path)
    if argv[0] == "restore":
        if not _make_input(argv, tmp_path):
            pytest.skip("a video, a Ray cluster or no input: parsed above; run by tests/test_video.py, test_batch*.py")
        argv += ["-q"]
    assert main(argv) == 0, line
