"""XCom backends: how a value becomes the bytes carried by a push event, and back.

As in Airflow, a backend is a subclass of :class:`BaseXCom` that overrides
``serialize_value`` / ``deserialize_value`` (and ``orm_deserialize_value`` for light
listings). The class is chosen with the ``xcom_backend`` setting (a dotted path) and
resolved once per process by :func:`resolve_backend`, so every component uses the same one.
"""

from __future__ import annotations

import importlib
import math
from functools import cache
from typing import Any, ClassVar

import msgspec

from .errors import XComConfigError, XComSerializationError
from .records import XComRecord

__all__ = ["BaseXCom", "MsgspecXCom", "resolve_backend"]


class BaseXCom:
    """Base class of XCom backends; subclass it and override the ``*_value`` methods.

    ``codec`` names the format a backend writes; it travels with every push so a reader
    refuses bytes written by a backend it does not know instead of misreading them.
    """

    codec: ClassVar[str] = "msgspec-json/1"
    #: Codecs this backend can read (its own by default).
    readable_codecs: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def can_read(cls, codec: str) -> bool:
        """True when ``deserialize_value`` understands values written with ``codec``."""
        return codec == cls.codec or codec in cls.readable_codecs

    @classmethod
    def serialize_value(
        cls,
        value: Any,
        *,
        key: str | None = None,
        task_id: str | None = None,
        dag_id: str | None = None,
        run_id: str | None = None,
        map_index: int | None = None,
    ) -> bytes:
        """Turn a value into the bytes stored in the event; raise XComSerializationError."""
        raise NotImplementedError

    @classmethod
    def deserialize_value(cls, result: XComRecord) -> Any:
        """Turn a stored record back into the value."""
        raise NotImplementedError

    @classmethod
    def orm_deserialize_value(cls, result: XComRecord) -> Any:
        """A light form for listings and UIs; must not fetch remote payloads."""
        return cls.deserialize_value(result)

    @classmethod
    def purge(cls, result: XComRecord) -> None:
        """Remove externally stored data of a record that was cleared or replaced."""


_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder()


def _check_json(value: Any, path: str) -> None:
    """Refuse anything the JSON form would not give back unchanged."""
    kind = type(value)
    if value is None or kind in (str, int, bool):
        return
    if kind is float:
        if not math.isfinite(value):
            raise XComSerializationError(f"non-finite float {value!r} at {path}")
        return
    if kind is list:
        for i, item in enumerate(value):
            _check_json(item, f"{path}[{i}]")
        return
    if kind is dict:
        for k, item in value.items():
            if type(k) is not str:
                raise XComSerializationError(
                    f"dict key {k!r} of type {type(k).__name__} at {path} (keys must be str)"
                )
            _check_json(item, f"{path}[{k!r}]")
        return
    raise XComSerializationError(
        f"type {kind.__module__}.{kind.__qualname__} at {path} is not supported"
    )


class MsgspecXCom(BaseXCom):
    """The default backend: JSON written by msgspec, readable by any JSON tool.

    It accepts JSON's own types (None, bool, int, float, str, list, dict with str keys)
    and refuses anything else at push time, naming the key and the type.
    """

    codec: ClassVar[str] = "msgspec-json/1"

    @classmethod
    def serialize_value(cls, value: Any, *, key: str | None = None, **_: Any) -> bytes:
        try:
            _check_json(value, "value")
        except XComSerializationError as exc:
            raise XComSerializationError(
                f"cannot serialize XCom {key!r} with {cls.__name__}: {exc}"
            ) from None
        return _json_encoder.encode(value)

    @classmethod
    def deserialize_value(cls, result: XComRecord) -> Any:
        if not cls.can_read(result.codec):
            raise XComSerializationError(
                f"XCom {result.key!r} was written with codec {result.codec!r}, which "
                f"{cls.__name__} cannot read: configure the backend that wrote it"
            )
        try:
            return _json_decoder.decode(result.value)
        except msgspec.DecodeError as exc:
            raise XComSerializationError(f"XCom {result.key!r} is not valid JSON: {exc}") from exc


@cache
def resolve_backend(dotted_path: str) -> type[BaseXCom]:
    """Import the backend class named by a dotted path; fail clearly at start-up."""
    module_name, _, attr = dotted_path.rpartition(".")
    if not module_name or not attr:
        raise XComConfigError(
            f"xcom_backend {dotted_path!r} is not a dotted path like 'package.module.Class'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise XComConfigError(
            f"xcom_backend {dotted_path!r}: module {module_name!r} cannot be imported ({exc}); "
            "install it in every image that pushes, pulls or materializes"
        ) from exc
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseXCom)):
        raise XComConfigError(
            f"xcom_backend {dotted_path!r} is not a subclass of xcombus.BaseXCom"
        )
    return cls
