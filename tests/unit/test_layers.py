"""The house's structure, checked: data flows one way and no module imports "upward".

Every ``import`` in ``xcombus/`` counts, including the lazy ones inside functions and
under ``TYPE_CHECKING``: a lazy import is still a dependency a reader has to follow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[2] / "xcombus"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str) -> set[str]:
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.update(c for c in (target, *(f"{target}.{a.name}" for a in node.names))
                         if c in MODULES or c.split(".")[0] in {"consumers", "tests", "benchmarks"})
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names
                         if a.name in MODULES or a.name.split(".")[0] in {"consumers", "tests", "benchmarks"})
    found.discard(name)
    found.discard("xcombus")  # a submodule naming its package reaches a submodule, counted above
    return found


GRAPH = {name: _imports(name) for name in MODULES}


def _reaches(start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for dep in GRAPH.get(todo.pop(), ()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_no_module_is_part_of_an_import_cycle() -> None:
    cyclic = sorted(name for name in GRAPH if name in _reaches(name))
    assert not cyclic, f"import cycles through: {cyclic}"


def test_the_library_never_imports_the_checkout_scripts_or_tests() -> None:
    outside = {name: sorted(d for d in deps if d.split(".")[0] != "xcombus")
               for name, deps in GRAPH.items()}
    assert not any(outside.values()), {k: v for k, v in outside.items() if v}


#: What each step of the data path may depend on (task -> producer -> topic ->
#: materializer -> SQLite -> pull): never on a later step.
LATER_STEPS = {
    "xcombus.events": {"xcombus.producer", "xcombus.materialize", "xcombus.store", "xcombus.view",
                       "xcombus.bus", "xcombus.lookup"},
    "xcombus.producer": {"xcombus.materialize", "xcombus.fold", "xcombus.store", "xcombus.view",
                         "xcombus.writer", "xcombus.bus", "xcombus.lookup", "xcombus.consistency"},
    "xcombus.fold": {"xcombus.materialize", "xcombus.writer", "xcombus.view", "xcombus.bus",
                     "xcombus.lookup", "xcombus.producer"},
    "xcombus.store": {"xcombus.materialize", "xcombus.fold", "xcombus.view", "xcombus.bus",
                      "xcombus.lookup", "xcombus.producer", "xcombus.events"},
    "xcombus.materialize": {"xcombus.view", "xcombus.bus", "xcombus.lookup", "xcombus.consistency",
                            "xcombus.producer"},
    "xcombus.view": {"xcombus.bus", "xcombus.lookup", "xcombus.materialize", "xcombus.producer"},
}


@pytest.mark.parametrize("module", sorted(LATER_STEPS))
def test_a_step_of_the_data_path_never_depends_on_a_later_one(module: str) -> None:
    assert not _reaches(module) & LATER_STEPS[module], sorted(_reaches(module) & LATER_STEPS[module])


def test_the_store_and_the_writer_child_need_only_the_leaves() -> None:
    """The writer child loads store.py without running the package: it may import only the
    standard library, msgspec and the dependency-free leaves."""
    assert _reaches("xcombus.store") <= {"xcombus.errors", "xcombus.records"}
    assert _reaches("xcombus._writer_child") <= {"xcombus.store", "xcombus.errors", "xcombus.records"}


def test_pure_cores_import_no_io_library() -> None:
    for name in ("xcombus.fold", "xcombus.pull_rules", "xcombus.reference", "xcombus.store"):
        tree = ast.parse(MODULES[name].read_text())
        roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        roots |= {(n.module or "").split(".")[0] for n in ast.walk(tree)
                  if isinstance(n, ast.ImportFrom) and not n.level}
        assert not roots & {"aiokafka", "aiosqlite", "litestar", "asyncio", "socket"}, (name, roots)
