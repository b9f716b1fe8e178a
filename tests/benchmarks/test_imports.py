"""The benchmark suite is a package whose modules import one another without a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _imports() -> dict[str, set[str]]:
    """module -> the benchmarks modules it imports (at any depth of its code)."""
    modules = {}
    for path in BENCHMARKS.rglob("*.py"):
        parts = path.relative_to(BENCHMARKS.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        # A package's __init__ is not an edge: importing benchmarks.x runs it, and it imports nothing.
        graph[name] = {m for m in found if m in modules and m != name and m != "benchmarks"}
    return graph


def test_no_module_of_the_suite_imports_itself_back() -> None:
    graph = _imports()
    assert "benchmarks.suite" in graph and "benchmarks.figures" in graph
    cycles = []

    def walk(name: str, path: list[str], done: set[str]) -> None:
        if name in path:
            cycles.append([*path[path.index(name):], name])
            return
        if name in done:
            return
        done.add(name)
        for dep in sorted(graph[name]):
            walk(dep, [*path, name], done)

    done: set[str] = set()
    for name in sorted(graph):
        walk(name, [], done)
    assert cycles == []


def test_the_package_init_imports_nothing_of_the_suite() -> None:
    assert _imports()["benchmarks"] == set()


def test_every_name_the_suite_takes_from_xcombus_exists() -> None:
    """The benchmarks need extras the test install lacks (matplotlib...), so they are not
    imported here; what they take from xcombus is checked instead, so a library refactor
    cannot leave the suite broken until someone runs it."""
    import importlib

    missing = []
    for path in sorted(BENCHMARKS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "xcombus":
                module = importlib.import_module(node.module)
                missing += [f"{path.name}: {node.module}.{alias.name}" for alias in node.names
                            if not hasattr(module, alias.name)]
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "xcombus":
                        importlib.import_module(alias.name)
    assert not missing, missing
