"""The code base's shape: stage packages import only downwards, and functions stay short.

Layers (lowest first); a module may import its own package and anything in a lower layer:

0. shared: ``errors``, ``schema``, ``metadata``, ``contract``, ``agreement``, ``validate``,
   ``progress``, ``deprecation``, ``exported``, ``configs``, ``logs``, ``io/``, ``inputs/``,
   ``speed/`` (timing, the latency-ratio estimator, the machine's description)
1. ``runtime/`` (the device runtime: the build stages prove their files on it)
2. stages: ``convert/``, ``quantize/``, ``recipes/``
3. ``measure/``, ``packaging/``
4. workflows: ``tune/``, ``check/``, ``serve/``, ``doctor/``
5. ``cli/``
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgekit"
LAYERS = {
    "errors": 0, "schema": 0, "metadata": 0, "contract": 0, "agreement": 0, "validate": 0,
    "progress": 0, "deprecation": 0, "exported": 0, "configs": 0,
    "io": 0, "inputs": 0, "logs": 0, "__init__": 0,
    "speed": 0,  # timing and the machine's description: quantize's speed check times its files
    "runtime": 1,  # the device runtime: the build stages prove their files on it
    "convert": 2, "quantize": 2, "recipes": 2,
    "measure": 3, "packaging": 3,
    "tune": 4, "check": 4, "serve": 4, "doctor": 4,
    "cli": 5,
}
MAX_FUNCTION_LINES = 80


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _unit(path: Path) -> str:
    """The layer unit of a file: its top-level package or module name under edgekit/."""
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imported_units(path: Path) -> set[tuple[str, int]]:
    """(unit, line) of every ``edgekit.*`` import in the file, lazy ones included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != "edgekit" else [
                f"edgekit.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "edgekit" and len(parts) > 1:
                found.add((parts[1], node.lineno))
    return found


def test_every_unit_has_a_layer() -> None:
    units = {_unit(p) for p in _modules()}
    assert units <= set(LAYERS), f"add {sorted(units - set(LAYERS))} to LAYERS"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_down_only(path: Path) -> None:
    own = _unit(path)
    bad = [f"line {line}: edgekit.{unit} (layer {LAYERS.get(unit)})"
           for unit, line in sorted(_imported_units(path))
           if unit != own and unit in LAYERS and LAYERS[unit] >= LAYERS[own]
           and not (LAYERS[own] == 0 and LAYERS[unit] == 0)]
    assert not bad, f"{own} (layer {LAYERS[own]}) imports sideways or upwards: {bad}"


def test_no_function_is_longer_than_80_lines() -> None:
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({n})")
    assert not long, long


# -- modules by responsibility, one import direction, chosen package faces ----------------------
MAX_MODULE_LINES = 500


def _rel(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def test_no_module_is_longer_than_500_lines() -> None:
    long = [f"{_rel(p)} ({n} lines)" for p in _modules()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def _module_name(path: Path) -> str:
    """``edgekit.inputs.data`` for edgekit/inputs/data.py, ``edgekit.inputs`` for its
    ``__init__.py``."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, function-local ones included, except those under
    ``if TYPE_CHECKING:`` (their ``else:`` branch counts)."""
    found: list[ast.Import | ast.ImportFrom] = []
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return found


def _targets(node: ast.Import | ast.ImportFrom, here: str, is_package: bool,
             known: set[str]) -> set[str]:
    """The edgekit modules an import statement in module ``here`` loads by name: ``from P
    import N`` is module ``P.N`` when that is a module, else ``P`` itself."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in known}
    base = node.module or ""
    if node.level:
        anchor = here.split(".") if is_package else here.split(".")[:-1]
        anchor = anchor[:len(anchor) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
    out = set()
    for a in node.names:
        sub = f"{base}.{a.name}"
        out.add(sub if sub in known else base)
    return out & known


def _import_graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in _modules()}
    known = set(paths)
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        nodes = _import_nodes(ast.parse(path.read_text()))
        is_package = path.name == "__init__.py"
        graph[name] = set().union(*(_targets(n, name, is_package, known) for n in nodes)) - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``a -> b -> ... -> a``) through each strongly connected group of modules
    (:func:`_groups`)."""
    return [_cycle_in(graph, group) for group in _groups(graph)]


def _groups(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(v: str) -> None:  # edgekit's import depth is far below the recursion limit
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def _cycle_in(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """The shortest cycle through the first module (by name) of a strongly connected group."""
    start = min(group)
    paths = {start: [start]}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(graph[v] & group):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                todo.append(w)
    raise AssertionError(f"no cycle in {group}")  # pragma: no cover


def test_no_import_cycle() -> None:
    graph = _import_graph()
    cycles = [" -> ".join(_cycle_in(graph, g))
              + (f" ({', '.join(sorted(g))} are all in one circle)" if len(g) > 2 else "")
              for g in _groups(graph)]
    assert not cycles, "import cycles (function-local imports count):\n" + "\n".join(cycles)


def test_import_cycle_check_finds_one() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x\n"
                     "def f():\n    import y\n")
    assert sorted(a.name for n in _import_nodes(tree) for a in n.names) == ["TYPE_CHECKING", "y"]


def test_no_module_getattr() -> None:
    found = [f"{_rel(p)}:{node.lineno}" for p in _modules()
             for node in ast.parse(p.read_text()).body
             if isinstance(node, ast.FunctionDef) and node.name == "__getattr__"]
    assert not found, f"module-level __getattr__ (a compatibility shim): {found}"


def _face_faults(path: Path) -> list[str]:
    """What keeps a package ``__init__`` from an explicit face: star imports, and an
    ``__all__`` that is missing or not a literal list of strings."""
    tree = ast.parse(path.read_text())
    faults = [f"line {n.lineno}: from {n.module} import *" for n in ast.walk(tree)
              if isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names)]
    alls = [n.value for n in tree.body if isinstance(n, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)]
    if not alls:
        faults.append("no __all__")
    elif not (isinstance(alls[-1], ast.List) and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in alls[-1].elts)):
        faults.append(f"line {alls[-1].lineno}: __all__ is not a literal list of names")
    return faults


def test_every_package_has_a_literal_all() -> None:
    faults = [f"{_rel(p)}: {f}" for p in sorted(PACKAGE.rglob("__init__.py"))
              for f in _face_faults(p)]
    assert not faults, "package faces:\n" + "\n".join(faults)
