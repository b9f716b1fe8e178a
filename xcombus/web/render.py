"""How values appear in responses: typed JSON, or a string as Airflow's ``stringify``."""

from __future__ import annotations

from typing import Any

from ..serde import Serde, SerdeError

__all__ = ["as_json", "as_text", "light_value"]

# Every class is "allowed" here: this only writes values out, it never rebuilds one.
_serde = Serde(["*"])


def as_json(value: Any) -> Any:
    """The value as a JSON tree: plain JSON stays as is, other types become typed JSON
    (``{"__type__": ..., "__value__": ...}``, see docs/semantics.md); a value even that
    cannot describe (an object of a class not importable by name) becomes its repr."""
    try:
        return _serde.to_builtins(value, "value")
    except SerdeError:
        return repr(value)


def as_text(value: Any) -> str:
    """The value as Airflow 2's ``stringify=true`` shows it: ``str(value)``."""
    return str(value)


def light_value(backend: Any, record: Any) -> Any:
    """A record's light form (``orm_deserialize_value``) as JSON; one unreadable row shows
    why instead of failing the whole listing."""
    try:
        return as_json(backend.orm_deserialize_value(record))
    except Exception as exc:  # a listing shows what it cannot decode instead of failing
        return f"<undecodable: {exc}>"
