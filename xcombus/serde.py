"""Typed JSON for XCom values: exact round trips of Python values, readable by any JSON tool.

JSON's own types are written as they are, so a plain value (numbers, strings, lists, dicts
with str keys) is plain JSON. Every other supported type becomes a tagged object
``{"__type__": NAME, "__value__": ...}``:

=================  ==========================================================
``datetime``       ISO 8601 (offset kept; a ``zoneinfo`` zone kept by name in ``tz``)
``date``/``time``  ISO 8601 (a time's offset kept)
``timedelta``      ``[days, seconds, microseconds]``
``uuid``           the canonical string
``decimal``        the exact string (``NaN`` and infinities included)
``float``          only ``nan``, ``inf`` and ``-inf``, which JSON lacks
``bytes``          base64 (``bytearray`` likewise)
``tuple``          a list
``set``            a list (``frozenset`` likewise)
``dict``           ``[[key, value], ...]`` when a key is not a str, or is ``__type__``
``dataclass``      ``{"cls": "module.Qualname", "__value__": {field: value}}``
``struct``         a msgspec Struct, as for dataclasses
``enum``           ``{"cls": ..., "__value__": member value}``
=================  ==========================================================

Classes (dataclasses, Structs, enums) are rebuilt only when importable and allowed by the
allow-list (glob patterns over ``module.Qualname``, like Airflow's
``allowed_deserialization_classes``). Nothing is ever pickled or evaluated.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import importlib
import math
import uuid
from collections.abc import Callable, Iterable
from fnmatch import fnmatchcase
from typing import Any, Final, TypeAlias
from zoneinfo import ZoneInfo

import msgspec

__all__ = ["SerdeError", "Serde"]

TAG: Final = "__type__"
VALUE: Final = "__value__"


class SerdeError(Exception):
    """A value cannot be encoded or decoded; the message names the type and where."""


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _import_class(path: str) -> type:
    # Nested qualnames ("Outer.Inner") are resolved attribute by attribute.
    for split in range(path.count("."), 0, -1):
        parts = path.split(".")
        module_name, attrs = ".".join(parts[:split]), parts[split:]
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError:
            continue
        try:
            for attr in attrs:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        if isinstance(obj, type):
            return obj
        break
    raise SerdeError(f"class {path!r} cannot be imported here")


#: Where a value sits inside the pushed value, for error messages: the root's name, or
#: ``(parent, format, item)``. Rendered only when an error is raised: formatting a path
#: string for every element costs more than serializing the element.
Location: TypeAlias = "str | tuple[Location, str, object]"


def render_location(loc: Location) -> str:
    """The readable path of a location (``value['rows'][3]``)."""
    parts = []
    while type(loc) is tuple:
        loc, fmt, item = loc
        parts.append(fmt.format(item))
    parts.append(str(loc))
    return "".join(reversed(parts))


def _plain_items(items: Iterable[Any]) -> bool:
    """True when every item is JSON as it is (None, str, bool, int, finite float)."""
    for v in items:
        kind = type(v)
        if kind is str or kind is int or kind is bool or v is None:
            continue
        if kind is float and math.isfinite(v):
            continue
        return False
    return True


def _leaves(items: Iterable[Any]) -> bool:
    """True when no decoded item is a list or an object (so none carries a type tag)."""
    for v in items:
        kind = type(v)
        if kind is list or kind is dict:
            return False
    return True


class Serde:
    """Encode values to typed JSON and back, with an allow-list for classes."""

    def __init__(self, allowed_classes: Iterable[str] = ()) -> None:
        self.allowed_classes = tuple(p for p in allowed_classes if p)
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder()
        self._class_cache: dict[str, type] = {}

    # -- encode ----------------------------------------------------------------------
    def dumps(self, value: Any) -> bytes:
        """Typed JSON bytes for a value; raise SerdeError naming the unsupported type."""
        return self._encoder.encode(self.to_builtins(value, "value"))

    def to_builtins(self, value: Any, path: Location) -> Any:
        """``value`` as JSON-ready builtins, tagged where JSON would lose its type;
        ``path`` locates it in the pushed value for error messages."""
        kind = type(value)
        if value is None or kind is str or kind is bool or kind is int:
            return value
        if kind is float:
            if math.isfinite(value):
                return value
            return {TAG: "float", VALUE: repr(value)}
        if kind is list:
            if _plain_items(value):  # the common case, checked without copying
                return value
            return [self.to_builtins(v, (path, "[{}]", i)) for i, v in enumerate(value)]
        if kind is dict:
            if all(type(k) is str for k in value) and TAG not in value:
                if _plain_items(value.values()):
                    return value
                return {k: self.to_builtins(v, (path, "[{!r}]", k)) for k, v in value.items()}
            return {TAG: "dict", VALUE: [[self.to_builtins(k, (path, ".key", None)),
                                          self.to_builtins(v, (path, "[{!r}]", k))]
                                         for k, v in value.items()]}
        encode = _ENCODERS.get(kind)
        if encode is not None:
            return encode(self, value, path)
        if isinstance(value, enum.Enum):
            self._check_class(kind, path)
            return {TAG: "enum", "cls": _qualname(kind),
                    VALUE: self.to_builtins(value.value, (path, ".value", None))}
        if isinstance(value, msgspec.Struct):
            self._check_class(kind, path)
            fields = {f: self.to_builtins(getattr(value, f), (path, ".{}", f))
                      for f in value.__struct_fields__}
            return {TAG: "struct", "cls": _qualname(kind), VALUE: fields}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            self._check_class(kind, path)
            fields = {f.name: self.to_builtins(getattr(value, f.name), (path, ".{}", f.name))
                      for f in dataclasses.fields(value)}
            return {TAG: "dataclass", "cls": _qualname(kind), VALUE: fields}
        raise SerdeError(f"type {_qualname(kind)} at {render_location(path)} is not supported")

    def _check_class(self, cls: type, path: Location) -> None:
        name = _qualname(cls)
        if not self.is_allowed(name):
            raise SerdeError(
                f"class {name} at {render_location(path)} is not in allowed_deserialization_classes "
                f"(XCOMBUS_ALLOWED_DESERIALIZATION_CLASSES); add a pattern such as '{cls.__module__}.*'")
        try:
            found = _import_class(name)
        except SerdeError:
            found = None
        if found is not cls:
            raise SerdeError(f"class {name} at {render_location(path)} is not importable by that name, so no "
                             "reader could rebuild it: define it at module level")

    def is_allowed(self, class_path: str) -> bool:
        """True when a class path matches one of the allow-list's glob patterns."""
        return any(fnmatchcase(class_path, pattern) for pattern in self.allowed_classes)

    # -- decode ----------------------------------------------------------------------
    def loads(self, data: bytes) -> Any:
        """The value for typed JSON bytes; raise SerdeError if it cannot be rebuilt."""
        try:
            tree = self._decoder.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise SerdeError(f"not valid JSON: {exc}") from None
        return self.from_builtins(tree)

    def from_builtins(self, tree: Any) -> Any:
        """The Python value a tree from :meth:`to_builtins` stands for (allow-listed classes only)."""
        kind = type(tree)
        if kind is list:
            if _leaves(tree):  # nothing tagged can hide inside: keep the decoded list
                return tree
            return [self.from_builtins(v) for v in tree]
        if kind is not dict:
            return tree
        tag = tree.get(TAG)
        if tag is None:
            if _leaves(tree.values()):
                return tree
            return {k: self.from_builtins(v) for k, v in tree.items()}
        decode = _DECODERS.get(tag)
        if decode is None:
            raise SerdeError(f"unknown type tag {tag!r}: written by a newer xcombus?")
        try:
            return decode(self, tree)
        except SerdeError:
            raise
        except (ValueError, TypeError, KeyError, decimal.InvalidOperation) as exc:
            raise SerdeError(f"malformed {tag!r} value: {exc}") from None

    def _load_class(self, tree: dict[str, Any], base: type | None = None) -> type:
        name = tree["cls"]
        if not isinstance(name, str) or not self.is_allowed(name):
            raise SerdeError(
                f"class {name!r} is not in allowed_deserialization_classes "
                "(XCOMBUS_ALLOWED_DESERIALIZATION_CLASSES): refusing to rebuild it")
        cls = self._class_cache.get(name)
        if cls is None:
            cls = self._class_cache[name] = _import_class(name)
        if base is not None and not issubclass(cls, base):
            raise SerdeError(f"{name} is not a {base.__name__}")
        return cls

    def _fields(self, tree: dict[str, Any]) -> dict[str, Any]:
        fields = tree[VALUE]
        if type(fields) is not dict:
            raise SerdeError("class fields must be an object")
        return {k: self.from_builtins(v) for k, v in fields.items()}


def _enc_clock(s: Serde, v: dt.datetime | dt.time, path: Location) -> Any:
    out: dict[str, Any] = {TAG: type(v).__name__, VALUE: v.isoformat()}
    if isinstance(v.tzinfo, ZoneInfo):
        out["tz"] = v.tzinfo.key
    if v.fold:  # the second of two ambiguous wall-clock times (a DST change)
        out["fold"] = 1
    return out


def _dec_datetime(s: Serde, t: dict[str, Any]) -> dt.datetime:
    value = dt.datetime.fromisoformat(t[VALUE])
    if "tz" in t:
        value = value.astimezone(ZoneInfo(t["tz"]))
    return value.replace(fold=1) if t.get("fold") else value


def _dec_time(s: Serde, t: dict[str, Any]) -> dt.time:
    value = dt.time.fromisoformat(t[VALUE])
    return value.replace(fold=1) if t.get("fold") else value


_ENCODERS: dict[type, Callable[[Serde, Any, Location], Any]] = {
    dt.datetime: _enc_clock,
    dt.date: lambda s, v, p: {TAG: "date", VALUE: v.isoformat()},
    dt.time: _enc_clock,
    dt.timedelta: lambda s, v, p: {TAG: "timedelta", VALUE: [v.days, v.seconds, v.microseconds]},
    uuid.UUID: lambda s, v, p: {TAG: "uuid", VALUE: str(v)},
    decimal.Decimal: lambda s, v, p: {TAG: "decimal", VALUE: str(v)},
    bytes: lambda s, v, p: {TAG: "bytes", VALUE: base64.b64encode(v).decode()},
    bytearray: lambda s, v, p: {TAG: "bytearray", VALUE: base64.b64encode(v).decode()},
    tuple: lambda s, v, p: {TAG: "tuple", VALUE: [s.to_builtins(x, (p, "[{}]", i)) for i, x in enumerate(v)]},
    set: lambda s, v, p: {TAG: "set", VALUE: _set_items(s, v, p)},
    frozenset: lambda s, v, p: {TAG: "frozenset", VALUE: _set_items(s, v, p)},
}


def _set_items(s: Serde, items: Any, path: Location) -> list[Any]:
    try:
        ordered = sorted(items)  # deterministic bytes for equal sets, when sortable
    except TypeError:
        ordered = list(items)
    return [s.to_builtins(x, (path, "{{}}", None)) for x in ordered]


def _dec_float(s: Serde, t: dict[str, Any]) -> float:
    if t[VALUE] not in ("nan", "inf", "-inf"):
        raise SerdeError(f"float tag only carries nan/inf/-inf, not {t[VALUE]!r}")
    return float(t[VALUE])


def _dec_struct(s: Serde, t: dict[str, Any]) -> Any:
    cls = s._load_class(t, msgspec.Struct)
    return cls(**s._fields(t))


def _dec_dataclass(s: Serde, t: dict[str, Any]) -> Any:
    cls = s._load_class(t)
    if not dataclasses.is_dataclass(cls):
        raise SerdeError(f"{t['cls']} is not a dataclass")
    fields = s._fields(t)
    init = {k: v for k, v in fields.items() if k in {f.name for f in dataclasses.fields(cls) if f.init}}
    obj = cls(**init)
    for k, v in fields.items():  # fields with init=False
        if k not in init:
            object.__setattr__(obj, k, v)
    return obj


def _dec_enum(s: Serde, t: dict[str, Any]) -> Any:
    cls = s._load_class(t, enum.Enum)
    return cls(s.from_builtins(t[VALUE]))


_DECODERS: dict[str, Callable[[Serde, dict[str, Any]], Any]] = {
    "datetime": _dec_datetime,
    "date": lambda s, t: dt.date.fromisoformat(t[VALUE]),
    "time": _dec_time,
    "timedelta": lambda s, t: dt.timedelta(days=t[VALUE][0], seconds=t[VALUE][1],
                                           microseconds=t[VALUE][2]),
    "uuid": lambda s, t: uuid.UUID(t[VALUE]),
    "decimal": lambda s, t: decimal.Decimal(t[VALUE]),
    "float": _dec_float,
    "bytes": lambda s, t: base64.b64decode(t[VALUE], validate=True),
    "bytearray": lambda s, t: bytearray(base64.b64decode(t[VALUE], validate=True)),
    "tuple": lambda s, t: tuple(s.from_builtins(v) for v in t[VALUE]),
    "set": lambda s, t: {s.from_builtins(v) for v in t[VALUE]},
    "frozenset": lambda s, t: frozenset(s.from_builtins(v) for v in t[VALUE]),
    "dict": lambda s, t: {s.from_builtins(k): s.from_builtins(v) for k, v in t[VALUE]},
    "dataclass": _dec_dataclass,
    "struct": _dec_struct,
    "enum": _dec_enum,
}
