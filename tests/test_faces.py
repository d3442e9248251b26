"""The faces of the stage packages (runtime, convert, quantize, tune, check): an explicit literal
``__all__`` of explicitly imported names, and no ``Any`` in their public signatures."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

PACKAGES = ["edgekit.runtime", "edgekit.convert", "edgekit.quantize", "edgekit.tune",
            "edgekit.check"]


def _public_callables(obj: object, name: str) -> Iterator[tuple[str, Callable[..., object]]]:
    """``obj`` (a function) or the ``__init__`` and public methods/properties of a class."""
    if inspect.isfunction(obj):
        yield name, obj
    if not inspect.isclass(obj):
        return
    yield f"{name}.__init__", obj.__init__
    for key, value in vars(obj).items():
        if key.startswith("_"):
            continue
        func = value.__func__ if isinstance(value, classmethod | staticmethod) else value
        func = func.fget if isinstance(func, property) else func
        if inspect.isfunction(func):
            yield f"{name}.{key}", func


@pytest.mark.parametrize("package", PACKAGES)
def test_no_any_in_the_public_signatures(package: str) -> None:
    module = importlib.import_module(package)
    found = [f"{where} {param}: {annotation}"
             for name in module.__all__
             for where, func in _public_callables(getattr(module, name), name)
             for param, annotation in func.__annotations__.items()
             if re.search(r"\bAny\b", str(annotation))]
    assert found == []


@pytest.mark.parametrize("package", PACKAGES)
def test_the_face_is_an_explicit_literal_all(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__file__ is not None
    tree = ast.parse(Path(module.__file__).read_text())
    imported = {alias.asname or alias.name for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert "*" not in imported
    literal = next(ast.literal_eval(node.value) for node in tree.body
                   if isinstance(node, ast.Assign)
                   and any(getattr(t, "id", None) == "__all__" for t in node.targets))
    assert literal == list(module.__all__) and set(literal) <= imported
    assert len(set(literal)) == len(literal)
