"""`mmrface weights list | verify | import | info | fetch`: the weights registry, converters and downloads."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmrface.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="registry entries: name, file, size, sha256, config, licence, training data")
    ls.add_argument("--remote", action="store_true",
                    help="the published checkpoints `fetch` knows instead: URL, size, sha256 and its public source")
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
    f = sub.add_parser("fetch", help="download published checkpoints (GFPGANv1.4, priors, ArcFace, FID Inception), "
                                     "verify their sha256 and convert them once into the cache")
    f.add_argument("names", nargs="*", metavar="NAME", help="published names (see `mmrface weights list --remote`)")
    f.add_argument("--all", action="store_true", help="every published checkpoint that has a public sha256")
    f.add_argument("--dry-run", action="store_true", help="print URL, size, sha256 and its source; download nothing")
    f.add_argument("--sha256", default=None, metavar="HEX",
                   help="expected sha256 for a checkpoint without a published one (one NAME only)")
    f.add_argument("--force", action="store_true", help="download and convert again even if installed")
    f.add_argument("--keep-original", action="store_true", help="keep the downloaded .pth next to the converted file")
    f.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def _size(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**20:.1f} MiB"


def run(args) -> int:
    actions = {"list": _list, "verify": _verify, "import": _import, "info": _info, "fetch": _fetch}
    return actions[args.action](args)


def _list(args) -> int:
    if args.remote:
        return _print_rows(None)
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


def _print_rows(names: list[str] | None) -> int:
    from mmrface.hub import cache
    from mmrface.hub.catalog import catalog, get_row

    rows = [get_row(n) for n in names] if names else list(catalog().values())
    print(f"published checkpoints (cache: {cache.home()}):")
    for row in rows:
        state = "installed" if cache.installed(row.name) else "not installed"
        lines = row.lines()
        print(f"{lines[0]}  [{state}]")
        print("\n".join(lines[1:]))
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
    from mmrface.convert import import_checkpoint

    out = Path(args.output)
    if out.suffix != ".safetensors":
        raise UserError(f"output must end in .safetensors, got {out}")
    conv, sha = import_checkpoint(args.src, out, args.format)
    print(f"found: {conv.found}")
    for note in conv.notes:
        print(f"note: {note}")
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
    for key in ("source_file", "source_sha256", "source_url", "default_fidelity", "notes"):
        if meta.get(key):
            print(f"{key}: {meta[key]}")
    return 0


def _fetch(args) -> int:
    from mmrface.hub.catalog import catalog

    if args.all and args.names:
        raise UserError("give NAME ... or --all, not both")
    if args.all:
        names = [r.name for r in catalog().values() if r.sha256 or args.dry_run]
        skipped = [r.name for r in catalog().values() if not r.sha256 and not args.dry_run]
        if skipped:
            print(f"skipped (no published sha256; fetch them one by one with --sha256 HEX): {', '.join(skipped)}")
    elif args.names:
        names = list(dict.fromkeys(args.names))
    else:
        raise UserError(f"name what to fetch (NAME ... or --all); published: {', '.join(catalog())}")
    if args.sha256 is not None and len(names) != 1:
        raise UserError("--sha256 applies to one NAME at a time")
    if args.dry_run:
        return _print_rows(names)
    from mmrface.hub.install import fetch

    for name in names:
        fetch(name, sha256=args.sha256, keep_original=args.keep_original, force=args.force,
              progress=not args.quiet)
    return 0
