"""The recipe checker: every problem of a recipe with its line, and the checks of the sections every
recipe has (model, dtype, device, translation, backend, comet, pairs and their data, evaluate, bench).

A library config's ``problems()`` (``mtprune.config.Problem``) are shown at the section's key of the
problem's field, ``FILE:LINE: section.key: message`` with the line of the key; a problem about a field
the recipe sets itself is not the user's and is left out (``RecipeChecker.library``).
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Union

from ..config import Problem, at_least
from ..data.specs import DataSpec
from ..errors import ConfigError, MtpruneError, unknown_choice
from ..eval.comet import CometSettings
from ..translate.backends import BackendConfig
from ..translate.prompts import MODES
from ..translate.settings import TranslationSettings
from .recipe_sections import DATA_KEYS, PAIR_KEYS, ROLES, Bench, Evaluate, Pair, Recipe, config_keys
from .recipe_yaml import KeyPath, dotted


def matches(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a type hint (int is not bool; an integer fits a float)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint in (str, Path):
        return isinstance(value, str)
    if hint is list or origin in (list, tuple):
        return isinstance(value, list) and all(matches(v, args[0]) for v in value) if args else isinstance(value, list)
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    return False  # other classes (DataSpec, BackendConfig) are built by the recipe, not given


def describe_type(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(describe_type(a) for a in args)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "text", Path: "a path",
             type(None): "null", dict: "a mapping", list: "a list"}
    if hint in names:
        return names[hint]
    if origin in (list, tuple):
        return f"a list of {describe_type(args[0]).removeprefix('an ').removeprefix('a ')}s" if args else "a list"
    if origin is dict:
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def yaml_kind(value: Any) -> str:
    kinds = {bool: "true/false", int: "integer", float: "number", str: "text", list: "list", dict: "mapping",
             type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


class RecipeChecker:
    """Collects every problem of a recipe with the line of its key (or the ``--set`` that gave it)."""

    def __init__(self, path: Path, lines: dict[KeyPath, int], allow_missing_files: bool,
                 set_by: dict[KeyPath, str] | None = None):
        self.path = Path(path)
        self.base = self.path.resolve().parent
        self.lines = lines
        self.set_by = set_by or {}  # key paths given on the command line (--set KEY=VALUE)
        self.allow_missing_files = allow_missing_files
        self.problems: list[tuple[int, str]] = []
        self.missing: list[str] = []
        self.refused: set[KeyPath] = set()  # keys whose value had the wrong type
        self.written_as: dict[KeyPath, KeyPath] = {}  # a key under its config name -> as written (an alias)

    def where(self, path: KeyPath) -> str:
        for prefix in (path[:n] for n in range(len(path), 0, -1)):
            if prefix in self.set_by:
                return self.set_by[prefix]
            if prefix in self.lines:
                return f"{self.path}:{self.lines[prefix]}"
        return f"{self.path}:1"

    def line(self, path: KeyPath) -> int:
        """The line a problem is sorted by (0: given on the command line)."""
        where = self.where(path)
        return 0 if where.startswith("--set") else int(where.rsplit(":", 1)[1])

    def error(self, path: KeyPath, message: str) -> None:
        message = message.removeprefix(f"{dotted(path)}: ")
        problem = (self.line(path), f"{self.where(path)}: {dotted(path)}: {message}")
        if problem not in self.problems:  # data inherited by several roles is checked once per role
            self.problems.append(problem)

    def attempt(self, path: KeyPath, check, *args, **kwargs):
        """``check(*args)``, its MtpruneError (or ValueError/TypeError) recorded at ``path``; None then.
        A ConfigError that carries its problems has each shown at its own key of ``path``."""
        try:
            return check(*args, **kwargs)
        except (MtpruneError, ValueError, TypeError) as exc:
            if getattr(exc, "problems", None):
                self.library(path, exc.problems)
            else:
                self.error(path, str(exc))
            return None

    def mapping(self, value: Any, path: KeyPath, allowed: dict[str, Any], *, required: tuple[str, ...] = (),
                aliases: dict[str, str] | None = None) -> dict[str, Any]:
        """The keys of a mapping that exist and have the right type; every other one is a problem."""
        if value is None:
            value = {}
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping (key: value lines), got {yaml_kind(value)}")
            return {}
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = (aliases or {}).get(key, key)
            if name != key:
                self.written_as[path + (name,)] = path + (key,)
            if name not in allowed:
                self.error(path + (key,), unknown_choice("key", str(key), allowed))
            elif not matches(item, allowed[name]):
                self.refused.add(path + (key,))
                self.error(path + (key,), f"expected {describe_type(allowed[name])}, got {item!r} ({yaml_kind(item)})")
            else:
                out[name] = item
        for key in required:
            if key not in value:
                self.error(path, f"missing key {key!r}")
        return out

    def library(self, section: KeyPath, problems: Iterable[Problem], *, skip: Iterable[str] = (),
                flatten: tuple[str, ...] = (), keys: Mapping[str, KeyPath] | None = None) -> None:
        """A library config's problems at the keys of ``section``: a field's key is its name there
        (``keys`` names the others), a field of a part in ``flatten`` is a key of the section itself
        (``stop.remove`` is ``search.remove``).  A problem about a field in ``skip`` (set by the recipe
        itself, or checked in its own section) is left out, and so is one that names a key whose value
        was refused already (a mistyped ``remove`` would also be 'no stop rule')."""
        def key_of(name: str) -> KeyPath | None:
            if keys and name in keys:
                return keys[name]
            parts = name.split(".") if name else []
            while len(parts) > 1 and parts[0] in flatten:
                parts = parts[1:]
            if parts and parts[0] in skip:
                return None
            path = section + tuple(parts)
            return self.written_as.get(path, path)

        for problem in problems:
            path = key_of(problem.field)
            named = [key_of(name) for name in problem.also]
            if path is None or any(p in self.refused for p in [path, *named] if p is not None):
                continue
            # another section's setting (translation.max_new_tokens) by its own key
            self.error(path, problem.text(lambda name: dotted(key_of(name) or tuple(name.split(".")))))

    def local_path(self, text: str) -> str:
        """A path as written, relative to the recipe's folder; anything not on disk stays as it is."""
        candidate = Path(text).expanduser()
        if not candidate.is_absolute():
            candidate = self.base / candidate
        return str(candidate) if candidate.exists() else text

    def file(self, path: KeyPath, text: str, what: str) -> str:
        """A data file relative to the recipe: missing is a problem (a note in a dry run)."""
        resolved = Path(text).expanduser()
        resolved = resolved if resolved.is_absolute() else self.base / resolved
        if not resolved.exists():
            if self.allow_missing_files:
                self.missing.append(f"{self.where(path)}: {dotted(path)}: {what} {text} (not found: {resolved})")
            else:
                self.error(path, f"{what} {text}: no such file or folder ({resolved})")
        return str(resolved)

    def raise_if_any(self) -> None:
        if self.problems:
            n = len(self.problems)
            listed = "\n  ".join(msg for _, msg in sorted(self.problems, key=lambda p: p[0]))
            raise ConfigError(f"{self.path}: {n} problem{'s' if n > 1 else ''} (nothing was loaded or run):\n  {listed}")


# ----------------------------------------------------------------------------------------
# The sections every recipe has
# ----------------------------------------------------------------------------------------

def check_model(ck: RecipeChecker, spec: str | None) -> str:
    from ..model.load import resolve_source

    if spec is None:
        return ""
    spec = ck.local_path(spec)
    ck.attempt(("model",), resolve_source, spec)
    return spec


def num_layers(spec: str) -> int | None:
    from ..model.load import peek_num_layers, resolve_source

    try:
        return peek_num_layers(resolve_source(spec)) if spec else None
    except MtpruneError:
        return None  # reported at the model line already


def check_dtype(ck: RecipeChecker, value: str) -> str:
    from ..model.load import canonical_dtype

    return ck.attempt(("dtype",), canonical_dtype, value) or "auto"


def check_device(ck: RecipeChecker, value: str) -> str:
    from ..model.load import DEVICES

    if value not in DEVICES and not re.fullmatch(r"cuda:\d+", value):
        ck.error(("device",), unknown_choice("device", value, DEVICES))
    return value


def check_translation(ck: RecipeChecker, value: Any) -> TranslationSettings:
    """``translation:``: a template file and the few-shot data relative to the recipe's folder."""
    path = ("translation",)
    settings = TranslationSettings(**ck.mapping(value, path, config_keys(TranslationSettings)))
    if settings.prompt not in MODES:
        settings.prompt = ck.local_path(settings.prompt)
    if settings.shots_from and not settings.shots_from.startswith(("sample", "hf:")):
        settings.shots_from = ck.file(path + ("shots_from",), settings.shots_from, "few-shot data")
    ck.library(path, settings.problems())
    return settings


def check_backend(ck: RecipeChecker, value: Any) -> BackendConfig:
    """``backend:``: a name, or a mapping of BackendConfig's fields (the name is then its key ``name``)."""
    named = isinstance(value, str)
    backend = BackendConfig(**ck.mapping({"name": value} if named else value, ("backend",), config_keys(BackendConfig)))
    ck.library(("backend",), backend.problems(), keys={"name": ("backend",)} if named else None)
    return backend


def check_comet(ck: RecipeChecker, value: Any) -> CometSettings | None:
    """``comet:``: the COMET checkpoints (a folder relative to the recipe, or a hub id) and how they run."""
    from ..eval.comet.checkpoint import looks_like_hub_id

    if value is None:
        return None
    path = ("comet",)
    settings = CometSettings(**ck.mapping(value, path, config_keys(CometSettings)))
    for key in ("model", "qe_model"):
        given = getattr(settings, key)
        if given is None:
            continue
        local = Path(str(given)).expanduser()
        if (local if local.is_absolute() else ck.base / local).exists() or not looks_like_hub_id(str(given)):
            setattr(settings, key, ck.file(path + (key,), str(given), "COMET model"))
    ck.library(path, settings.problems())
    return settings


def check_pairs(ck: RecipeChecker, items: list, seed: int) -> list[Pair]:
    """``pairs:``: each pair's languages and the data of each role; a pair without its languages is
    reported and left out."""
    if not items:
        ck.error(("pairs",), "give at least one language pair (src, tgt and its data)")
    pairs = []
    for i, item in enumerate(items):
        pair = _pair(ck, ("pairs", i), item, seed)
        if pair is not None:
            pairs.append(pair)
    names = [p.name for p in pairs]
    for i, name in enumerate(names):
        if name in names[:i]:
            ck.error(("pairs", i), f"language pair {name} is given twice; give each pair once")
    return pairs


def _pair(ck: RecipeChecker, path: KeyPath, item: Any, seed: int) -> Pair | None:
    from ..data.langs import normalize_language

    keys = ck.mapping(item, path, PAIR_KEYS, required=("src", "tgt"))
    if "src" not in keys or "tgt" not in keys:
        return None
    for side in ("src", "tgt"):
        lang = ck.attempt(path + (side,), normalize_language, keys[side])
        keys[side] = lang.code if lang else keys[side]
    weight = float(keys.get("weight", 1.0))
    if not weight > 0:
        ck.error(path + ("weight",), f"must be positive, got {weight:g}")
    pair = Pair(src=keys["src"], tgt=keys["tgt"], weight=weight)
    default = _with_ref(ck, path, keys.get("data"), keys.get("ref"))
    for role in ROLES:
        given = keys.get(role)
        setattr(pair, role, data_ref(ck, path + ((role,) if given is not None else ("data",)),
                                     given, default, role, pair, seed))
    return pair


def _with_ref(ck: RecipeChecker, path: KeyPath, data: Any, ref: str | None) -> Any:
    """The pair's ``data`` with the pair's ``ref`` (the references of a plain-text source) in it."""
    if ref is None:
        return data
    if data is None:
        ck.error(path + ("ref",), "the references of the pair's 'data': give 'data' too")
        return None
    fields = {"data": data} if isinstance(data, str) else data
    if "ref" in fields:
        ck.error(path + ("ref",), "give 'ref' once: beside 'data' or in it")
    ck.written_as[path + ("data", "ref")] = path + ("ref",)
    return {**fields, "ref": ref}


def data_ref(ck: RecipeChecker, path: KeyPath, given: Any, default: Any, role: str, pair: Pair,
             seed: int) -> DataSpec | None:
    """A role's data: its own (part 'all' unless it says), or the pair's ``data`` with part = the role."""
    if given is None and default is None:
        return None
    if given is None:
        given, inherited = default, True
    else:
        inherited = isinstance(given, dict) and "data" not in given
        if inherited and default is None:
            ck.error(path, f"no 'data' here and no 'data' for the pair to take the {role} part of")
            return None
    fields = ck.mapping({"data": given} if isinstance(given, str) else given, path, DATA_KEYS)
    if inherited:
        base = ck.mapping({"data": default} if isinstance(default, str) else default, path, DATA_KEYS)
        fields = {**base, "part": role, **fields}
    fields.setdefault("seed", seed)
    if "data" not in fields:
        ck.error(path, "missing key 'data'")
        return None
    return _check_data(ck, path, DataSpec(spec=fields.pop("data"), src=pair.src, tgt=pair.tgt, **fields))


def _is_file_spec(spec: str) -> bool:
    return not (spec == "sample" or spec.startswith(("sample:", "hf:")))


def _check_data(ck: RecipeChecker, path: KeyPath, spec: DataSpec) -> DataSpec:
    """Files relative to the recipe, and the spec's own problems (part, limit, ref, split) once its
    data is there to say what kind it is."""
    if _is_file_spec(spec.spec):
        spec = dataclasses.replace(spec, spec=ck.file(path + ("data",), spec.spec, "data"))
    if spec.ref is not None:
        spec = dataclasses.replace(spec, ref=ck.file(path + ("ref",), spec.ref, "references"))
    if Path(spec.spec).exists() or not _is_file_spec(spec.spec):
        ck.library(path, spec.problems(), keys={"spec": path + ("data",)})
    return spec


def check_roles(ck: RecipeChecker, recipe: Recipe) -> None:
    """Every pair has the data its stages score on: dev for the search, test for evaluate."""
    needs = {"dev": recipe.search is not None, "test": True}
    for i, pair in enumerate(recipe.pairs):
        for role, needed in needs.items():
            if needed and getattr(pair, role) is None:
                use = "the search scores on it" if role == "dev" else "evaluate scores every model on it"
                ck.error(("pairs", i), f"{pair.name}: no {role} data ({use}): give 'data' or '{role}'")


def check_evaluate(ck: RecipeChecker, value: Any) -> Evaluate:
    from ..eval.metrics import canonical_metric

    ev = Evaluate(**ck.mapping(value, ("evaluate",), config_keys(Evaluate)))
    metrics = [ck.attempt(("evaluate", "metrics", i), canonical_metric, m) for i, m in enumerate(ev.metrics)]
    ev.metrics = list(dict.fromkeys(m for m in metrics if m))
    if not ev.metrics and None not in metrics:
        ck.error(("evaluate", "metrics"), "give at least one metric (chrf++, chrf, bleu, ter, comet, comet-qe)")
    return ev


def check_bench(ck: RecipeChecker, value: Any) -> Bench:
    """``bench:``: its keys are BenchConfig's (the backend and translation are checked in their sections)."""
    from ..bench.config import BenchConfig
    from ..eval.metrics import canonical_metric

    path = ("bench",)
    bench = Bench(**ck.mapping(value, path, config_keys(Bench)))
    bench.metric = ck.attempt(path + ("metric",), canonical_metric, bench.metric) or bench.metric
    cfg = BenchConfig(models=None, data=None, batch_sizes=tuple(bench.batch_sizes), warmup=bench.warmup,
                      runs=bench.runs, fixed_new_tokens=bench.fixed_new_tokens, order=bench.order, costs=bench.costs,
                      latency_segments=bench.latency_segments)
    ck.library(path, cfg.problems())
    ck.library(path, at_least("limit", bench.limit, 1))
    return bench
