"""What the wheel installs (read from pyproject.toml, no build needed) and the direction of
imports between the library and the consumers/ scripts."""

from __future__ import annotations

import ast
import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_wheel_installs_only_the_xcombus_package() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    include = setuptools["packages"]["find"]["include"]
    top_level = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    installed = {name for name in top_level if any(fnmatch.fnmatch(name, pattern) for pattern in include)}
    # consumers/, tests/, benchmarks/ stay in the repository: no generic top-level names in
    # a user's site-packages.
    assert installed == {"xcombus"}, installed
    # One root for every package: an editable install is then a plain .pth line.
    assert setuptools.get("package-dir") == {"": "."}


def test_consumers_are_shims_that_import_the_library_and_never_the_reverse() -> None:
    for script in sorted((ROOT / "consumers").glob("*.py")):
        imported = _imported_modules(script)
        assert all(not name.startswith("consumers") for name in imported), (script.name, imported)
    for module in sorted((ROOT / "xcombus").rglob("*.py")):
        imported = _imported_modules(module)
        assert all(not name.startswith("consumers") for name in imported), (module, imported)
