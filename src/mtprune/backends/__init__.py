"""Translation backends, registered by name and imported on first use.

Every backend offers ``translate(sources) -> TranslationResult`` and ``describe()``.
"""
from __future__ import annotations

import importlib

from ..errors import ConfigError, unknown_choice

BACKENDS = {
    "hf": "mtprune.backends.hf:HFTranslator",
}


def backend_class(name: str):
    """The backend class registered as ``name`` (imports its module now)."""
    if name not in BACKENDS:
        raise ConfigError(unknown_choice("backend", name, BACKENDS))
    module, _, attr = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), attr)
