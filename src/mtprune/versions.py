"""The software versions a record keeps: mtprune, torch, transformers, python, and the packages a stage
adds (the training packages of a recovery, compressed-tensors of a quantization, the run report's
metric and engine packages).  Read from the installed distributions: nothing is imported."""
from __future__ import annotations

import platform
from importlib import metadata

from . import __version__


def software_versions(*packages: str) -> dict[str, str]:
    """mtprune, torch, transformers and python, then each of ``packages`` that is installed (by its
    distribution name, e.g. "compressed-tensors")."""
    versions = {"mtprune": __version__}
    for name in ("torch", "transformers", "python", *packages):
        if name == "python":
            versions[name] = platform.python_version()
            continue
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
