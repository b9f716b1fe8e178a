"""The public API is exactly what xcombus/__init__.py lists, and it imports cleanly."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import xcombus
import xcombus.errors


def test_all_is_sorted_and_complete() -> None:
    assert xcombus.__all__ == sorted(xcombus.__all__)
    for name in xcombus.__all__:
        assert hasattr(xcombus, name), name
    tree = ast.parse(Path(xcombus.__file__).read_text())
    imported = {alias.asname or alias.name for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.level > 0 for alias in node.names}
    assert imported == set(xcombus.__all__)
    assert set(xcombus._LAZY) == set(xcombus.__all__)


def test_no_public_name_is_also_a_submodule() -> None:
    """Importing a submodule sets it as an attribute of the package: a lazy public name that
    is also a module's name (``task`` was) would turn into the module once it is imported."""
    modules = {p.stem for p in Path(xcombus.__file__).parent.glob("*.py")}
    modules |= {p.name for p in Path(xcombus.__file__).parent.iterdir() if p.is_dir()}
    assert not modules & set(xcombus.__all__)


def test_importing_xcombus_loads_nothing_heavy() -> None:
    """Every Airflow process imports xcombus.airflow: names load on first use, not before."""
    code = ("import sys, xcombus, xcombus.reference; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'aiokafka', 'aiosqlite', 'sqlite3', 'litestar', 'uvicorn', 'rich', 'click', "
            "'prometheus_client', 'fsspec'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    assert xcombus.XComBus.__module__ == "xcombus.bus"  # and the lazy names resolve


def test_errors_share_one_root() -> None:
    errors = [getattr(xcombus, n) for n in xcombus.__all__ if n.endswith("Error")]
    assert errors and all(issubclass(e, xcombus.XComBusError) for e in errors)


def test_every_exported_or_defined_error_derives_from_the_root() -> None:
    exported = [getattr(xcombus, n) for n in xcombus.__all__]
    defined = [getattr(xcombus.errors, n) for n in xcombus.errors.__all__]
    errors = [e for e in [*exported, *defined] if isinstance(e, type) and issubclass(e, BaseException)]
    assert len(errors) >= len(xcombus.errors.__all__)
    assert all(issubclass(e, xcombus.XComBusError) for e in errors), errors


def _public_signatures() -> Iterator[tuple[str, str]]:
    """(where, text) of every annotation a user of an exported name can see: the signatures of
    exported functions, and of the public methods, properties and fields of exported classes."""
    for name in xcombus.__all__:
        obj = getattr(xcombus, name)
        if inspect.isfunction(obj):
            yield name, str(inspect.signature(obj))
        if not isinstance(obj, type):
            continue
        for cls in obj.__mro__:
            if not cls.__module__.startswith("xcombus"):
                continue
            for field, annotation in inspect.get_annotations(cls).items():
                if not field.startswith("_"):
                    yield f"{name}.{field}", str(annotation)
            for attr, member in vars(cls).items():
                if attr.startswith("_") and attr != "__init__":
                    continue
                func: Any = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
                if inspect.isfunction(func):
                    yield f"{name}.{attr}", str(inspect.signature(func))


def test_no_public_signature_mentions_a_private_type() -> None:
    seen = list(_public_signatures())
    assert any("NotSet" in text for where, text in seen if where == "TaskInstance.xcom_pull")
    private = [(where, text) for where, text in seen if re.search(r"(?<![\w.])_[A-Za-z]\w*", text)]
    assert not private


def test_no_pickle_or_eval_in_the_package() -> None:
    root = Path(xcombus.__file__).parent
    for path in [*root.rglob("*.py"), *(root.parent / "consumers").rglob("*.py")]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(n.split(".")[0] in {"pickle", "dill", "cloudpickle", "marshal"}
                               for n in names), path
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in {"eval", "exec"}, path
