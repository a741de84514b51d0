"""A recipe's YAML: read with the line of every key, ``--set KEY=VALUE`` overrides applied over it, and the
text of the recipe as run (saved in the run folder).  Nothing here knows the recipe's sections."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Union

from ..errors import ConfigError

KeyPath = tuple[Union[str, int], ...]  # ("pairs", 0, "dev", "limit")


def dotted(path: KeyPath) -> str:
    """A key path as a recipe's problems name it: ``pairs[0].dev.limit``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _recipe_loader():
    """PyYAML's safe loader reading floats as YAML 1.2 does: ``5e-5`` and ``1e4`` are numbers (YAML 1.1,
    PyYAML's default, wants ``5.0e-5`` and reads ``5e-5`` as text)."""
    import yaml

    class RecipeLoader(yaml.SafeLoader):
        pass

    RecipeLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)[eE][-+]?\d+$"),
        list("-+0123456789."))
    return RecipeLoader


def _load_value(text: str) -> Any:
    import yaml

    return yaml.load(text, Loader=_recipe_loader())


def read_yaml(path: Path) -> tuple[Any, dict[KeyPath, int]]:
    """The document and the line (1-based) of every key and list item, by key path."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: recipe file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the recipe ({exc})") from None
    loader = _recipe_loader()(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    finally:
        loader.dispose()
    lines: dict[KeyPath, int] = {(): 1}
    duplicates: list[tuple[KeyPath, int]] = []
    if node is not None:
        _index_lines(node, (), lines, duplicates)
    if duplicates:
        where = "; ".join(f"{path}:{line}: {dotted(p)}" for p, line in duplicates)
        raise ConfigError(f"{path}: keys given twice (the later one would silently win): {where}")
    return data, lines


def _index_lines(node, prefix: KeyPath, lines: dict[KeyPath, int], duplicates: list) -> None:
    import yaml

    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = prefix + (key_node.value,)
            if key in lines:
                duplicates.append((key, key_node.start_mark.line + 1))
            lines[key] = key_node.start_mark.line + 1
            _index_lines(value_node, key, lines, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[prefix + (i,)] = item.start_mark.line + 1
            _index_lines(item, prefix + (i,), lines, duplicates)


def parse_overrides(items: list[str] | tuple[str, ...]) -> list[tuple[str, KeyPath, Any]]:
    """``KEY=VALUE`` -> (as given, key path, YAML value): ``pairs.0.dev.limit=8`` -> ('pairs', 0, 'dev', 'limit'), 8."""
    import yaml

    parsed = []
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: give KEY=VALUE, e.g. search.remove=4 or pairs.0.test.limit=96")
        try:
            value = _load_value(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item}: the value is not valid YAML ({exc})") from None
        path = tuple(int(part) if part.isdigit() else part for part in key.strip().split("."))
        parsed.append((item, path, value))
    return parsed


def apply_overrides(data: Any, overrides: list[tuple[str, KeyPath, Any]]) -> tuple[Any, dict[KeyPath, str]]:
    """A copy of the recipe's document with each override set (missing mappings are made), and
    which key paths were set by which ``--set``."""
    import copy

    data = copy.deepcopy(data) if data is not None else {}
    set_by: dict[KeyPath, str] = {}
    for given, path, value in overrides:
        node = data
        for i, part in enumerate(path[:-1]):
            node = _child(node, part, path[: i + 1], given)
        last = path[-1]
        if isinstance(node, list):
            if not isinstance(last, int) or not 0 <= last < len(node):
                raise ConfigError(f"--set {given}: {dotted(path[:-1])} has items 0..{len(node) - 1}")
            node[last] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"--set {given}: {dotted(path[:-1])} is not a mapping or a list")
        set_by[path] = f"--set {given}"
    return data, set_by


def _child(node: Any, part: Any, path: KeyPath, given: str) -> Any:
    if isinstance(node, list):
        if not isinstance(part, int) or not 0 <= part < len(node):
            raise ConfigError(f"--set {given}: {dotted(path[:-1])} is a list: give an item number 0..{len(node) - 1}")
        return node[part]
    if not isinstance(node, dict):
        raise ConfigError(f"--set {given}: {dotted(path[:-1])} is not a mapping or a list")
    if node.get(part) is None:
        node[part] = {}
    return node[part]


def effective_text(path: Path, data: Any, overrides: list[str] | tuple[str, ...]) -> str:
    """The recipe as run: the file's text, or with overrides the document with them applied."""
    import yaml

    text = path.read_text(encoding="utf-8")
    if not overrides:
        return text
    head = f"# {path} with " + " ".join(f"--set {o}" for o in overrides) + "\n"
    return head + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
