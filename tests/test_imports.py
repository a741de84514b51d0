"""The package's import graph, function-level imports included, has no cycles.

An import inside a function that closes a loop is still a loop: the shared piece belongs on a lower
floor, in the module that owns the concept.  The graph is read from the source with ``ast`` (nothing
is imported): every import statement wherever it stands, relative imports resolved, ``from . import x``
counted as an import of ``pkg.x`` when ``x`` is a module, the packages above an imported module that
Python runs first, registry strings ("mtprune.translate.backends.hf:HFTranslator") and ``cli.COMMAND_MODULES``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import mtprune

PACKAGE = "mtprune"
ROOT = Path(mtprune.__file__).resolve().parent


def package_modules(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted name -> file of every module of the package (``pkg.sub`` for ``pkg/sub/__init__.py``)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join([package, *parts])] = path
    return modules


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of ``from <level dots><name> import ...`` written in ``module``."""
    if level == 0:
        return name or ""
    base = module.split(".")
    base = base[: len(base) - level + (1 if is_package else 0)]
    return ".".join(base + ([name] if name else []))


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``module`` imports anywhere in its file (top level, functions, TYPE_CHECKING),
    with the packages above them that Python runs first, and registry strings ("pkg.mod:attr")."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node.level, node.module)
            # `from . import x` / `from .pkg import sub`: x is a module if the package has it
            names = [f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target
                     for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                node.value.partition(":")[0] in modules and node.value.count(":") <= 1:
            names = [node.value.partition(":")[0]]  # imported by name on first use (a registry)
        else:
            continue
        for name in names:
            while name and name not in modules:  # `from .a import f`: "mtprune.a.f" is f of mtprune.a
                name = name.rpartition(".")[0]
            found.update(_with_parents(name, module, modules))
    found.discard(module)
    return found


def _with_parents(name: str, importer: str, modules: dict[str, Path]) -> list[str]:
    """``name`` and the packages above it that are not above ``importer`` too (those ran before it)."""
    out = [name] if name else []
    while name := name.rpartition(".")[0]:
        if name in modules and not importer.startswith(name + "."):
            out.append(name)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    graph[f"{PACKAGE}.cli.main"] |= {f"{PACKAGE}.cli.commands.{name}" for name in _command_modules(modules[f"{PACKAGE}.cli.main"])}
    return graph


def _command_modules(cli: Path) -> tuple[str, ...]:
    """``COMMAND_MODULES`` of cli.py, which imports them by name."""
    for node in ast.walk(ast.parse(cli.read_text(encoding="utf-8"))):
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(t, ast.Name) and t.id == "COMMAND_MODULES" for t in targets):
                return ast.literal_eval(node.value)
    raise AssertionError(f"{cli}: no COMMAND_MODULES")


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path a -> ... -> a) for each strongly connected component with more than one
    module, or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan; the package is small enough for recursion
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(sorted(c), graph) for c in components]


def _cycle_in(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through the component's first module, found breadth-first inside it."""
    start, members = component[0], set(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    return component  # unreachable for a strongly connected component


def test_the_graph_reads_relative_and_function_level_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from . import b\n")
    (pkg / "b.py").write_text("from .sub.c import g\n")
    (pkg / "sub" / "__init__.py").write_text("from .. import a\n")
    (pkg / "sub" / "c.py").write_text("import pkg.a\n")
    (pkg / "e.py").write_text("from . import __version__\n")
    (pkg / "d.py").write_text("REGISTRY = {'c': 'pkg.sub.c:g', 'text': 'pkg.sub.c is not a name'}\n")
    modules = package_modules(pkg, "pkg")
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert graph["pkg.a"] == {"pkg.b"}
    assert graph["pkg.b"] == {"pkg.sub", "pkg.sub.c"}  # pkg/sub/__init__.py runs first
    assert graph["pkg.sub"] == {"pkg.a"}
    assert graph["pkg.sub.c"] == {"pkg.a"}  # not pkg.sub: it ran before c in any case
    assert graph["pkg.e"] == {"pkg"}  # `from . import __version__` runs pkg/__init__.py
    assert graph["pkg.d"] == {"pkg.sub", "pkg.sub.c"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub", "pkg.a"]]


def test_the_package_has_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 20 and f"{PACKAGE}.cli.commands.prune" in graph[f"{PACKAGE}.cli.main"]
    cycles = find_cycles(graph)
    assert not cycles, "import cycles (function-level imports included):\n" + "\n".join(
        "  " + " -> ".join(cycle) for cycle in cycles)


def test_every_command_module_is_registered_and_its_help_loads_no_torch():
    """Each module of commands/ (but the shared options and memory check) is a subcommand; none imports torch for --help."""
    import subprocess
    import sys

    from mtprune.cli.main import COMMAND_MODULES

    modules = {path.stem for path in (ROOT / "cli" / "commands").glob("*.py")} - {"__init__", "memory_check"}
    assert modules == set(COMMAND_MODULES)
    code = (
        "import argparse, contextlib, io, sys\nfrom mtprune.cli.main import build_parser, main\n"
        "sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))\n"
        "for name in sub.choices:\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "        main([name, '--help'])\n"
        "    assert out.getvalue().startswith(f'usage: mtprune {name}'), out.getvalue()\n"
        "print(len(sub.choices), sorted({'torch', 'transformers', 'datasets'} & set(sys.modules)))\n"
    )
    env = {"PYTHONPATH": str(ROOT.parent), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == f"{len(COMMAND_MODULES)} []", out.stdout + out.stderr


def test_nothing_below_the_cli_imports_argparse():
    """The library takes typed configs: only cli/ reads command lines (the sources read with ast)."""
    offenders = []
    for name, path in package_modules().items():
        if name.startswith(f"{PACKAGE}.cli.") or name == f"{PACKAGE}.cli":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            imported = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(m == "argparse" or m.startswith("argparse.") for m in imported):
                offenders.append(f"{name}:{node.lineno}")
    assert not offenders, f"argparse imported outside cli/: {offenders}"
