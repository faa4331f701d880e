"""Every module of more4d imports, and its subpackages depend on each other without cycles.

Dependencies are read from the source with `ast` (function-level imports included), so a lazy import cannot hide a
cycle. Layers: `models` (architectures, key tables) below `weights` (presets, loading, conversion).
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import more4d

ROOT = Path(more4d.__file__).parent
MODULES = sorted(m.name for m in pkgutil.walk_packages(more4d.__path__, "more4d.") if not m.name.endswith("__main__"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """The more4d modules `path` imports, anywhere in the file (relative imports resolved)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names)
    return {name for name in found if name == "more4d" or name.startswith("more4d.")}


def unit(module: str) -> str:
    """The dependency unit of a module: its subpackage (`more4d.models`) or, at the top, the module itself."""
    return ".".join(module.split(".")[:2])


def dependency_graph() -> dict[str, set[str]]:
    """unit -> the units it imports."""
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        source = unit(module_name(path))
        graph.setdefault(source, set()).update(unit(m) for m in imported_modules(path) if unit(m) != source)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.mark.parametrize("name", MODULES)
def test_every_module_imports(name):
    importlib.import_module(name)


def test_models_never_import_weights():
    offenders = {module_name(path): sorted(m for m in imported_modules(path) if m.startswith("more4d.weights"))
                 for path in (ROOT / "models").rglob("*.py")}
    assert not {k: v for k, v in offenders.items() if v}


def test_no_cycles_between_subpackages():
    graph = dependency_graph()
    assert "more4d.weights" in graph["more4d.pipelines"] and "more4d.models" in graph["more4d.weights"]  # sees edges
    assert cycles(graph) == []
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the check finds one
