"""`mmrface weights list | verify | import | info`: the weights registry and checkpoint converters."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmrface.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="registry entries: name, file, size, sha256, config, licence, training data")
    v = sub.add_parser("verify", help="recompute the sha256 of every registered file (or the named ones)")
    v.add_argument("names", nargs="*", help="entries to check (default: all)")
    i = sub.add_parser("import", help="convert a GFPGAN / BasicSR / rosinality / ArcFace checkpoint to safetensors")
    i.add_argument("src", help="checkpoint file (.pth / .pt)")
    i.add_argument("-o", "--output", required=True, help="destination .safetensors")
    i.add_argument("--format", default="auto",
                   choices=["auto", "gfpgan-clean", "gfpgan-v1clean", "basicsr", "rosinality", "arcface"],
                   help="source layout (default: detected from the keys)")
    n = sub.add_parser("info", help="what a weight file holds: format, config, tensors, metadata, sha256")
    n.add_argument("file", help="weight file (.safetensors, .pth, .pt) or registry name")


def _size(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**20:.1f} MiB"


def run(args) -> int:
    return {"list": _list, "verify": _verify, "import": _import, "info": _info}[args.action](args)


def _list(args) -> int:
    from mmrface.weights import registry, registry_files

    entries = registry()
    print("registries: " + ", ".join(str(f) for f in registry_files()))
    if not entries:
        print("no weights registered (add entries to ~/.config/mmrface/weights.yaml)")
        return 0
    for e in entries.values():
        state = "ok" if e.path.is_file() else "MISSING"
        print(f"{e.name}  [{state}]\n  file: {e.path}\n  size: {_size(e.size)}  sha256: {e.sha256}\n"
              f"  config: {e.config}\n  licence: {e.licence}\n  trained on: {e.trained_on}")
    return 0


def _verify(args) -> int:
    from mmrface.weights import registry, verify_file

    entries = registry()
    unknown = [n for n in args.names if n not in entries]
    if unknown:
        raise UserError(f"not in the registry: {', '.join(unknown)} (known: {', '.join(sorted(entries)) or 'none'})")
    failed = []
    for e in [entries[n] for n in args.names] or list(entries.values()):
        try:
            verify_file(e.path, e.sha256, e.size)
            print(f"ok      {e.name}  {e.path}")
        except UserError as exc:
            print(f"FAILED  {e.name}  {exc}")
            failed.append(str(e.path))
    if failed:
        raise UserError(f"{len(failed)} weight file(s) failed verification: {', '.join(failed)}")
    print(f"{len(entries) if not args.names else len(args.names)} file(s) verified")
    return 0


def _import(args) -> int:
    from mmrface.convert import convert_file
    from mmrface.weights import file_sha256, save_weights

    out = Path(args.output)
    if out.suffix != ".safetensors":
        raise UserError(f"output must end in .safetensors, got {out}")
    conv = convert_file(args.src, args.format)
    print(f"found: {conv.found}")
    for note in conv.notes:
        print(f"note: {note}")
    sha = save_weights(out, conv.state_dict, {"model": conv.config},
                       {"source_format": conv.source_format, "source_file": Path(args.src).name,
                        "source_sha256": file_sha256(args.src), "notes": conv.notes})
    print(f"wrote {out} ({_size(out.stat().st_size)}), sha256 {sha}")
    print(f"register it: add to ~/.config/mmrface/weights.yaml\n"
          f"  - {{name: {out.stem}, file: {out.resolve()}, size: {out.stat().st_size}, sha256: {sha}}}")
    return 0


def _info(args) -> int:
    from mmrface.weights import load_weights

    sd, meta = load_weights(args.file)
    n_params = sum(v.numel() for v in sd.values())
    print(f"file: {meta['path']}\nsha256: {meta['sha256']}")
    print(f"format: {meta.get('format', '?')}" + (f" (from {meta['source_format']})" if "source_format" in meta else ""))
    print(f"config: {json.dumps(meta['config'])}")
    print(f"tensors: {len(sd)}, elements: {n_params:,}")
    for key in ("source_file", "source_sha256", "notes"):
        if meta.get(key):
            print(f"{key}: {meta[key]}")
    return 0
