"""Files that ship inside the package (configs, registries, sample photos, aligned sample faces).

Found through `importlib.resources`, never by their position in a source checkout, so a wheel
installed anywhere has them: `package_file("configs", "512.yaml")`.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path


def package_file(*parts: str) -> Path:
    """Path of a file or folder shipped in the `mmrface` package (it may not exist)."""
    return Path(str(importlib.resources.files("mmrface").joinpath(*parts)))


CONFIG_DIR = package_file("configs")
SAMPLE_PHOTOS = package_file("assets", "photos")  # four licensed photos (assets/README.md)
SAMPLE_FACES = package_file("assets", "faces")  # their aligned faces with landmarks.json
