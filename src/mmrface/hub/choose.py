"""Which weights a command uses: `--weights auto` (the default) and fetch-on-first-use of published names.

* `auto`: the best model installed: a fetched GFPGANv1.4 (then v1.3), otherwise the bundled
  `mmrface-small`; the command announces the choice and the reason in one line.
* a published name that is not installed yet (`--weights gfpgan-v1.4`): says what it downloads and
  how big it is, then fetches it once, unless `--no-download` or `MMRFACE_OFFLINE=1`.
* anything else (a file, a registered name) is used as given.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mmrface.errors import UserError

AUTO = "auto"
AUTO_ORDER = ("gfpgan-v1.4", "gfpgan-v1.3")  # best first; fetched checkpoints only
BUNDLED = "mmrface-small"


@dataclass(frozen=True)
class Choice:
    weights: str  # a registry name or a file path, ready for `Restorer` / `load_model`
    reason: str  # why these weights (for the one-line announcement)


WEIGHTS_HELP = ("auto (default: a fetched GFPGANv1.4, else the bundled mmrface-small), a registry or published "
                "name (fetched on first use, see `mmrface weights list --remote`), or a file")


def add_weights_arguments(p: argparse.ArgumentParser, weights: bool = True) -> None:
    """--weights (unless `weights` is False) / -w / --no-download, of restore, serve and evaluate."""
    if weights:
        p.add_argument("--weights", default=AUTO, help=WEIGHTS_HELP)
    p.add_argument("-w", "--fidelity", type=float, default=None,
                   help="0 = rely on the face prior, 1 = stay faithful to the input (default: the weights' own, "
                        "1 for GFPGAN weights as GFPGAN restores, else 0.5)")
    p.add_argument("--no-download", action="store_true",
                   help="never download weights (also MMRFACE_OFFLINE=1); a published name must be installed")


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def choose(weights: str | None, no_download: bool = False, progress: bool = True,
           say: Callable[[str], None] = _stderr) -> Choice:
    """Resolve a command's `--weights` value (see the module docstring); may download a published file."""
    from mmrface.hub import cache
    from mmrface.hub.catalog import catalog
    from mmrface.hub.install import OFFLINE_ENV, fetch, manual_hint, offline

    value = AUTO if weights in (None, "", AUTO) else str(weights)
    rows = catalog()
    if value == AUTO:
        for name in AUTO_ORDER:
            if cache.installed(name) is not None:
                return Choice(name, f"auto: fetched {rows[name].description.split(',')[0]}, the best installed model"
                              if name in rows else "auto: the best installed model")
        return Choice(BUNDLED, f"auto: the bundled 128-px model, trained on a CPU (faces above 128 px keep their own detail); "
                               f"for 512-px restorations run `mmrface weights fetch {AUTO_ORDER[0]}` once")
    if Path(value).expanduser().is_file():
        return Choice(value, "the file given")
    from mmrface.weights import registry

    entry = registry().get(value)
    if entry is not None and (entry.path.is_file() or value not in rows):
        return Choice(value, "as given" if value not in rows else "as given (installed earlier)")
    if value not in rows:
        return Choice(value, "as given")  # load_weights gives the error listing the known names
    row = rows[value]
    if no_download or offline():
        why = "--no-download" if no_download else f"{OFFLINE_ENV}=1"
        raise UserError(f"weights {value!r} are not installed and downloads are off ({why}): run "
                        f"`mmrface weights fetch {value}` where there is network, {manual_hint(row)}")
    say(f"mmrface: {value} is not installed: downloading {row.file} ({row.size_text()}) from {row.urls[0]} "
        f"once into {cache.home()}")
    fetch(value, progress=progress, say=say)
    return Choice(value, "fetched on first use")


def announce(choice: Choice, restorer, fidelity_given: bool, say: Callable[[str], None] = _stderr) -> None:
    """The one line every command prints about its weights (and the fidelity they run at)."""
    w = f"fidelity w = {restorer.fidelity:g}"
    if not fidelity_given:
        own = "default_fidelity" in restorer.meta
        w += " (" + ("these weights' default, recorded in the file" if own else "the default") + "; -w to change)"
    say(f"mmrface: weights: {choice.weights} ({choice.reason}); {w}")
    from mmrface.pipeline.restorer import fidelity_note

    note = fidelity_note(restorer.meta, restorer.fidelity)
    if note:
        say(f"mmrface: note: {note}")
