"""Exceptions raised by the library; only cli/main.py turns them into exit codes."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class MtpruneError(Exception):
    """Base class: an error whose message is meant for the user as is."""


class ConfigError(MtpruneError):
    """Invalid options or a combination of options that cannot work."""


class DataError(MtpruneError):
    """Unreadable or malformed input data (says file and line where it can)."""


class ModelLoadError(MtpruneError):
    """A model could not be found or loaded."""


class ExportError(MtpruneError):
    """A pruned checkpoint could not be written or failed its reload check."""


def unknown_choice(kind: str, value: str, valid: Iterable[str]) -> str:
    """Message for an unknown name: lists valid names and suggests the closest."""
    valid = sorted(valid)
    close = difflib.get_close_matches(value, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {value!r}.{hint} Valid: {', '.join(valid)}."
