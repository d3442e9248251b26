"""The code base's shape: stage packages import only downwards, and functions stay short.

Layers (lowest first); a module may import its own package and anything in a lower layer:

0. shared: ``errors``, ``schema``, ``metadata``, ``contract``, ``agreement``, ``validate``,
   ``progress``, ``io/``, ``inputs/``
1. stages: ``runtime/``, ``convert/``, ``quantize/``
2. ``measure/``, ``recipes/``, ``packaging/``
3. workflows: ``tune/``, ``check/``, ``serve/``, ``doctor/``
4. ``cli/``
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgekit"
LAYERS = {
    "errors": 0, "schema": 0, "metadata": 0, "contract": 0, "agreement": 0, "validate": 0,
    "progress": 0,
    "io": 0, "inputs": 0, "logs": 0, "__init__": 0,
    "runtime": 1, "convert": 1, "quantize": 1,
    "measure": 2, "recipes": 2, "packaging": 2,
    "tune": 3, "check": 3, "serve": 3, "doctor": 3,
    "cli": 4,
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
