"""What every stage config shares: structured problems, and fields that carry their own help.

A stage config (``SearchConfig``, ``FinetuneConfig``, ...) says what is wrong with it as
``Problem(field, message)`` values: the field is the config's own name for the setting
(``remove``, ``learning_rate``; ``""`` for the config as a whole), the message names no command-line
flag and no recipe key.  Where a message must name another setting it writes ``{name}`` and lists
the name in ``also``.  Each surface renders the names its own way: the command line as ``--remove``
(``as_flags``), a recipe as ``search.remove`` with the line of the key (``pipeline/recipe_check``).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, MtpruneError


@dataclass(frozen=True)
class Problem:
    field: str  # the config's field ("remove"); "" for the config as a whole
    message: str  # what is wrong; other settings as {name}, each listed in `also`
    also: tuple[str, ...] = ()  # the other fields the message names

    def text(self, name: Callable[[str], str]) -> str:
        """The message with every ``{field}`` named as the surface names it."""
        out = self.message
        for other in self.also:
            out = out.replace("{" + other + "}", name(other))
        return out

    def render(self, name: Callable[[str], str]) -> str:
        """``NAME: message`` (just the message for the config as a whole)."""
        text = self.text(name)
        return f"{name(self.field)}: {text}" if self.field else text

    def within(self, prefix: str) -> Problem:
        """The same problem of a config nested as ``prefix`` (``stop`` -> ``stop.remove``)."""
        def nest(f: str) -> str:
            return f"{prefix}.{f}" if f else prefix
        message = self.message
        for other in self.also:
            message = message.replace("{" + other + "}", "{" + nest(other) + "}")
        return Problem(nest(self.field), message, tuple(nest(o) for o in self.also))


def flag(field: str, flags: Mapping[str, str] | None = None) -> str:
    """A config field as a command's flag: ``stop.target_layers`` -> ``--target-layers``."""
    if flags and field in flags:
        return flags[field]
    return "--" + field.rpartition(".")[2].replace("_", "-")


def as_flags(problems: Iterable[Problem], flags: Mapping[str, str] | None = None) -> list[str]:
    """The problems as the command line shows them (``--remove: must be at least 1, got 0``)."""
    return [p.render(lambda f: flag(f, flags)) for p in problems]


def raise_problems(problems: list[Problem], what: str, flags: Mapping[str, str] | None = None,
                   error_class: type[MtpruneError] = ConfigError) -> None:
    """One ConfigError (or ``error_class``) listing every problem with its flag (``problems`` kept on
    the exception)."""
    if problems:
        error = error_class(f"invalid {what}:\n  - " + "\n  - ".join(as_flags(problems, flags)))
        error.problems = list(problems)
        raise error


def at_least(field: str, value: Any, low: int | float) -> list[Problem]:
    """``field`` must be at least ``low`` (nothing to say where the value is None)."""
    if value is not None and value < low:
        return [Problem(field, f"must be at least {low}, got {value}")]
    return []


def one_of(field: str, value: Any, valid: Iterable[str], kind: str) -> list[Problem]:
    """``value`` must be one of ``valid`` (a did-you-mean otherwise)."""
    from .errors import unknown_choice

    valid = tuple(valid)
    return [] if value in valid else [Problem(field, unknown_choice(kind, str(value), valid))]


def setting(default: Any = dataclasses.MISSING, *, help: str, factory: Any = dataclasses.MISSING,
            choices: tuple[str, ...] | None = None) -> Any:
    """A config field with the help and allowed values that the generated references show
    (``scripts/gen_docs.py``); behaves as a plain ``field(default=...)``."""
    metadata = {"help": help, **({"choices": tuple(choices)} if choices else {})}
    return dataclasses.field(default=default, default_factory=factory, metadata=metadata)
