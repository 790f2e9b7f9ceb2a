"""`mmrface` command line: a thin dispatcher.

Every sub-command lives in `mmrface.commands.<name>` and provides `add_arguments(parser)` and
`run(args) -> int`. Modules are imported only when their command runs, so `mmrface restore`
never imports training code and a missing optional dependency breaks only its own command.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mmrface.errors import UserError

COMMANDS = {
    "restore": "restore faces in photos, folders or videos",
    "train": "train a model from a YAML config",
    "evaluate": "score restorers on a test set (PSNR, SSIM, LPIPS, NIQE, identity, ...)",
    "make-testset": "write a seeded degraded LQ/HQ test set from a folder of HQ faces",
    "prepare": "detect and align the faces of a photo folder into FFHQ-style crops",
    "export": "export the restorer network to ONNX",
    "serve": "web UI and HTTP API",
    "weights": "list, verify, import and inspect weight files",
    "info": "parameter counts, GFLOPs and forward time of a model config",
}


def _module_name(command: str) -> str:
    return "mmrface.commands." + command.replace("-", "_")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmrface", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:  # only import the module of the command that runs
            try:
                module = importlib.import_module(_module_name(name))
            except ModuleNotFoundError as exc:
                raise UserError(f"'{name}' is not available: missing module {exc.name!r}") from exc
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def _version() -> str:
    from mmrface import __version__

    return f"mmrface {__version__}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        if not getattr(args, "_run", None):
            parser.print_help()
            return 2
        return int(args._run(args) or 0)
    except UserError as exc:
        print(f"mmrface: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mmrface: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
