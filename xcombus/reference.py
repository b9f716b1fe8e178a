"""References: what a system that stores XComs elsewhere (Airflow) keeps instead of the value.

A push through xcombus lands at ``(topic, partition, offset)``. When the caller has its own
XCom table (Airflow's ``xcom`` table, through :mod:`xcombus.airflow`), that table holds an
:class:`XComReference`: a small JSON object that names the XCom, says where its event is,
carries the size and SHA-256 of the stored bytes, and a bounded, human-readable preview.

    {"xcombus_ref": 1, "dag_id": "etl", "run_id": "manual__...", "task_id": "extract",
     "map_index": -1, "key": "return_value", "try_number": 1, "topic": "xcombus.xcom",
     "partition": 3, "offset": 17, "size": 31, "sha256": "9f...", "codec": "msgspec-json/1",
     "type": "dict", "preview": "{'rows': 42}"}

The reference describes itself: Airflow 3 hands a backend only the stored value (no dag,
run or task id), so everything needed to find and check the event is inside. A UI that
shows the stored value shows this object, whose ``xcombus_ref`` and ``preview`` fields say
it is a pointer and a preview, never the value.

This module is pure (no broker, no SQLite): building, parsing and checking references.
"""

from __future__ import annotations

import hashlib
import reprlib
from typing import Annotated, Any, Final

import msgspec

from .errors import XComNotFoundError, XComSerializationError
from .events import TaskInstanceKey
from .records import XComRecord

__all__ = ["REFERENCE_VERSION", "XComReference", "make_preview", "parse_reference"]

#: The value of the ``xcombus_ref`` marker: the reference format's version.
REFERENCE_VERSION: Final = 1
_MARKER: Final = "xcombus_ref"
#: What makes a stored dict a reference (beside the marker): a user value that merely has
#: an "xcombus_ref" key is not one, and passes through.
_SHAPE: Final = frozenset({_MARKER, "topic", "partition", "offset", "sha256"})
_NonNegative = Annotated[int, msgspec.Meta(ge=0)]


class XComReference(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """Where one pushed XCom version lives on the topic, and how to recognise it."""

    xcombus_ref: int = REFERENCE_VERSION
    dag_id: str
    run_id: str
    task_id: str
    map_index: Annotated[int, msgspec.Meta(ge=-1)]
    key: str
    try_number: _NonNegative
    topic: str
    partition: _NonNegative
    offset: _NonNegative
    #: Length of the stored (serialized) bytes carried by the event.
    size: _NonNegative
    #: Length of the serialized value itself: ``size`` unless the event carries only an
    #: object-storage reference to it.
    value_size: _NonNegative
    #: SHA-256 of those bytes, hex.
    sha256: str
    codec: str
    #: The Python type of the value, e.g. "dict".
    type: str
    #: A bounded repr of the value: for people (UIs, listings), never for tasks.
    preview: str

    @property
    def ti(self) -> TaskInstanceKey:
        """The task instance that pushed it."""
        return TaskInstanceKey(self.dag_id, self.run_id, self.task_id, self.map_index)

    @property
    def where(self) -> str:
        """A short description for error messages."""
        return (f"XCom {self.key!r} of {self.dag_id}/{self.run_id}/{self.task_id}"
                f"[{self.map_index}] (try {self.try_number}) at {self.topic} partition "
                f"{self.partition} offset {self.offset}")

    def to_builtins(self) -> dict[str, Any]:
        """The reference as a JSON-ready dict (what Airflow 3 stores)."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out

    def to_json(self) -> bytes:
        """The reference as JSON bytes (what Airflow 2 stores)."""
        return msgspec.json.encode(self)

    def label(self) -> str:
        """A one-line light form for listings: says it is a reference, shows the preview."""
        return (f"[xcombus reference: {self.type}, {self.value_size} bytes, try {self.try_number}, "
                f"{self.topic}[{self.partition}]@{self.offset}] {self.preview}")

    def check(self, record: XComRecord) -> None:
        """Raise XComNotFoundError unless ``record`` is exactly the version referenced."""
        if (record.dag_id, record.run_id, record.task_id, record.map_index, record.key) != (
                self.dag_id, self.run_id, self.task_id, self.map_index, self.key):
            raise XComNotFoundError(
                f"the event at {self.topic} partition {self.partition} offset {self.offset} is "
                f"not {self.where} (it is XCom {record.key!r} of {record.dag_id}/{record.run_id}/"
                f"{record.task_id}[{record.map_index}]): was the topic deleted and re-created?")
        if len(record.value) != self.size or hashlib.sha256(record.value).hexdigest() != self.sha256:
            raise XComSerializationError(
                f"the event of {self.where} does not match the reference's size and SHA-256: "
                "refusing to hand over a value that is not the one pushed")


_decoder = msgspec.json.Decoder(XComReference)
_REQUIRED = frozenset(f for f in XComReference.__struct_fields__ if f != _MARKER)


def parse_reference(stored: Any) -> XComReference | None:
    """The reference held in a stored value (a dict, or JSON bytes/str), or None when the
    value is not one (a plain value written by something else passes through)."""
    if isinstance(stored, bytes | bytearray | memoryview | str):
        text = bytes(stored) if not isinstance(stored, str) else stored.encode()
        if _MARKER.encode() not in text:  # cheap: most stored values are not references
            return None
        try:
            stored = msgspec.json.decode(text)
        except msgspec.DecodeError:
            return None
    if type(stored) is not dict or not stored.keys() >= _SHAPE:
        return None
    if stored[_MARKER] != REFERENCE_VERSION:
        raise XComSerializationError(
            f"a stored value is an xcombus reference of version {stored[_MARKER]!r}, and this "
            f"xcombus reads version {REFERENCE_VERSION}: upgrade xcombus where this runs")
    missing = sorted(_REQUIRED - stored.keys())
    if missing:
        raise XComSerializationError(f"a stored xcombus reference lacks {', '.join(missing)}")
    try:
        return msgspec.convert(stored, XComReference)
    except msgspec.ValidationError as exc:
        raise XComSerializationError(f"a stored xcombus reference is malformed: {exc}") from None


_repr = reprlib.Repr()
_repr.maxlevel = 4
_repr.maxdict = _repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxfrozenset = 10
_repr.maxstring = 160
_repr.maxlong = 60
_repr.maxother = 160


def make_preview(value: Any, limit: int) -> str:
    """A bounded repr of ``value``: at most ``limit`` bytes of UTF-8, marked when cut."""
    if limit <= 0:
        return ""
    try:
        text = _repr.repr(value)
    except Exception as exc:  # a user __repr__ that fails must not fail the push
        text = f"<{type(value).__qualname__}: repr failed ({type(exc).__name__})>"
    data = text.encode()
    if len(data) <= limit:
        return text
    if limit <= 3:  # no room for the marker
        return data[:limit].decode(errors="ignore")
    return data[: limit - 3].decode(errors="ignore") + "..."
