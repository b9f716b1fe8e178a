"""An example custom XCom backend: typed JSON, zlib-compressed, with short listings.

Use it by making this module importable in every container that pushes, pulls,
materializes or renders XComs, and pointing every one of them at it:

    XCOMBUS_XCOM_BACKEND=example_backend.ZlibJsonXCom
    PYTHONPATH=/opt/xcombus-examples        # where this file is mounted or installed

See docs/containers.md.
"""

from __future__ import annotations

import zlib
from typing import Any, ClassVar

from xcombus import MsgspecXCom, XComRecord, XComSerializationError


class ZlibJsonXCom(MsgspecXCom):
    """Typed JSON (as the default backend) compressed with zlib.

    It writes its own codec, so a reader configured with another backend dead-letters
    these values instead of misreading them, and it still reads values written by the
    default backend (``readable_codecs``), so it can be switched on in a running system.
    """

    codec: ClassVar[str] = "example-zlib-json/1"
    readable_codecs: ClassVar[frozenset[str]] = frozenset({MsgspecXCom.codec})
    preview_chars: ClassVar[int] = 60

    @classmethod
    def serialize_value(cls, value: Any, **kwargs: Any) -> bytes:
        return zlib.compress(super().serialize_value(value, **kwargs), level=6)

    @classmethod
    def check_stored(cls, value: bytes, codec: str) -> None:
        """What the materializer checks before storing a push: zlib around valid JSON."""
        if codec == cls.codec:
            try:
                value = zlib.decompress(value)
            except zlib.error as exc:
                raise ValueError(f"not zlib data: {exc}") from None
        super().check_stored(value, MsgspecXCom.codec)

    @classmethod
    def _plain(cls, result: XComRecord) -> XComRecord:
        if result.codec != cls.codec:
            return result  # written by the default backend: plain typed JSON
        try:
            return result._replace(value=zlib.decompress(result.value), codec=MsgspecXCom.codec)
        except zlib.error as exc:
            raise XComSerializationError(f"XCom {result.key!r} is not zlib data: {exc}") from exc

    @classmethod
    def deserialize_value(cls, result: XComRecord) -> Any:
        # An unknown codec passes through unchanged, and the parent raises its clear error.
        return super().deserialize_value(cls._plain(result))

    @classmethod
    def orm_deserialize_value(cls, result: XComRecord) -> Any:
        """Listings show a short preview with the stored size, never the whole value."""
        text = repr(cls.deserialize_value(result))
        if len(text) > cls.preview_chars:
            text = text[: cls.preview_chars - 1] + "…"
        return f"{text} [{len(result.value)} bytes stored]"
