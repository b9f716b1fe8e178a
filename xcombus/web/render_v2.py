"""Values in ``/api/v2``: Airflow 3.3's ``stringify``/``deserialize`` forms, and the
reserved keys a written value may not contain.

* ``deserialize=false`` shows what the view stores, as JSON: the backend's light form as
  typed JSON (``{"__type__": "datetime", ...}``; an object-storage reference for
  ObjectStorageXCom), as Airflow 3 shows its raw JSON column.
* ``deserialize=true`` shows the value itself (the backend's ``deserialize_value``), made
  JSON as Airflow's ``XComResponseNative`` does: dict keys become strings, tuples lists,
  anything else not JSON its ``str()``.
* ``stringify=true`` is Python's ``str()`` of either form (``{'a': 1}``, ``True``), null
  staying null, as Airflow's ``XComResponseString``.
"""

from __future__ import annotations

import json
from typing import Any, Final

from ..serde import TAG

__all__ = ["RESERVED_KEYS", "as_native", "as_string", "reserved_keys_in"]

#: Airflow's FORBIDDEN_XCOM_KEYS (its serde envelope) and xcombus's typed-JSON tag: a value
#: written through the API may hold none of them, at any depth, so what a reader gets back
#: is never mistaken for an encoded object.
RESERVED_KEYS: Final = frozenset({"__classname__", "__version__", "__data__", "__id__", "__cache__",
                                  "__type", "__source", "__var", TAG})


def as_native(value: Any) -> Any:
    """Airflow's ``_stringify_if_needed``: JSON as is, dict keys as str, tuples as lists, the rest str()."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {str(k): as_native(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_native(v) for v in value]
    return str(value)


def as_string(value: Any) -> str | None:
    """Airflow's ``XComResponseString``: ``str(value)``, None stays None."""
    return None if value is None else str(value)


def reserved_keys_in(value: Any, path: str = "value") -> str | None:
    """Where ``value`` holds a reserved key (a message), or None. A string that is JSON for a
    dict or list is checked as that JSON, as Airflow 3.3 does."""
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except ValueError:
            return None
        return reserved_keys_in(decoded, path) if isinstance(decoded, dict | list) else None
    if isinstance(value, dict):
        found = RESERVED_KEYS & value.keys()
        if found:
            return (f"XCom {path} contains reserved serialization keys: {', '.join(sorted(found))}. "
                    "These keys are reserved for internal use.")
        for k, v in value.items():
            where = reserved_keys_in(v, f"{path}.{k}")
            if where:
                return where
    elif isinstance(value, list):
        for i, item in enumerate(value):
            where = reserved_keys_in(item, f"{path}[{i}]")
            if where:
                return where
    return None
