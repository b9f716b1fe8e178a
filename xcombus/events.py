"""The event schema on the topic, and the task-instance key that orders it.

A message's **key** is the task instance ``(dag_id, run_id, task_id, map_index)`` as a
compact JSON array; Kafka's default murmur2 partitioner maps it to a partition, so all
events of one task instance are ordered in one partition and anyone can compute that
partition from the partition count alone (:func:`partition_for`).

A message's **value** is one event, a tagged msgspec Struct in MessagePack:

- :class:`Push` sets one XCom key of the task instance to a serialized value;
- :class:`Clear` deletes every XCom of the task instance (sent before a new try);
- :class:`Override` records a manual change of one XCom (set or delete) with who made it
  and why; it applies in log order like a push and is never fenced (docs/semantics.md).

Why MessagePack and not JSON: events are smaller and encode and decode faster
(``python -m benchmarks.experiments.encoding``; figures in benchmarks/analysis.md). The value
is opaque bytes written by the XCom backend; JSON would have to base64 it (+33 %), MessagePack carries it
as is. Both are far below the cost of a SQLite upsert, so the size decides. Maps (not
arrays) keep events readable by any MessagePack tool and robust to field reordering.

Schema evolution: every event carries ``schema``. New fields are added with defaults and
old readers skip them; a reader refuses (dead-letters) an event whose ``schema`` is newer
than :data:`SCHEMA_VERSION` instead of guessing what it means. A writer puts the schema of
the kind it writes (:data:`PUSH_SCHEMA`, :data:`CLEAR_SCHEMA`, :data:`OVERRIDE_SCHEMA`), not
the newest one: pushes and clears stay at schema 1 so materializers that were not upgraded
keep reading them, while an override (schema 2, a kind they do not know) is dead-lettered by
them, never misread. Upgrade the materializers (and every reader of the topic) before
anything writes overrides.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated, Final, NamedTuple, TypeAlias

import msgspec

from ._time import now_us
from .errors import XComIdentifierError

__all__ = [
    "SCHEMA_VERSION",
    "Clear",
    "Event",
    "CLEAR_SCHEMA",
    "EventDecodeError",
    "ID_PATTERN",
    "OVERRIDE_SCHEMA",
    "Override",
    "PUSH_SCHEMA",
    "RETURN_VALUE_KEY",
    "RUN_ID_PATTERN",
    "Push",
    "TaskInstanceKey",
    "decode_event",
    "decode_ti_key",
    "encode_event",
    "now_us",
    "partition_for",
    "validate_actor",
    "validate_key",
    "validate_reason",
]

#: The newest event schema this reader accepts (it accepts 1..SCHEMA_VERSION).
SCHEMA_VERSION: Final = 2
#: The schema each kind is written with: the oldest that can carry it.
PUSH_SCHEMA: Final = 1
CLEAR_SCHEMA: Final = 1
OVERRIDE_SCHEMA: Final = 2
RETURN_VALUE_KEY: Final = "return_value"

# Airflow's own rules: dag and task ids match KEY_REGEX (``^[\w.-]+$``, at most 250
# characters); run ids match the default ``allowed_run_id_pattern``.
#: What a dag_id or task_id must match in full (also what the HTTP API documents).
ID_PATTERN: Final = r"[\w.-]{1,250}"
#: What a run_id must match in full.
RUN_ID_PATTERN: Final = r"[A-Za-z0-9_.~:+-]{1,250}"
_ID_RE = re.compile(ID_PATTERN)
_RUN_ID_RE = re.compile(RUN_ID_PATTERN)
_MAX_KEY_LEN: Final = 512

#: Integers an event may carry: what SQLite stores (64-bit signed). msgspec checks the
#: bounds while decoding, so an out-of-range number is a dead letter, not a failed write.
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class TaskInstanceKey(NamedTuple):
    """The identity of one task instance: the Kafka message key of its events."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1

    def validated(self) -> TaskInstanceKey:
        """Return self after checking every part; raise XComIdentifierError if one is bad."""
        for name in ("dag_id", "task_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _ID_RE.fullmatch(value):
                raise XComIdentifierError(
                    f"{name} {value!r} is invalid: use 1-250 letters, digits, '_', '.' or '-'"
                )
        if not isinstance(self.run_id, str) or not _RUN_ID_RE.fullmatch(self.run_id):
            raise XComIdentifierError(
                f"run_id {self.run_id!r} is invalid: use 1-250 of A-Z a-z 0-9 _ . ~ : + -"
            )
        if type(self.map_index) is not int or self.map_index < -1:
            raise XComIdentifierError(
                f"map_index {self.map_index!r} is invalid: -1 (not mapped) or 0, 1, 2, ..."
            )
        return self

    def encode(self) -> bytes:
        """The stable message key: ``["dag","run","task",-1]`` as compact JSON."""
        return _key_encoder.encode(self)


def validate_key(key: object) -> str:
    """Check an XCom key (the name of one value) and return it."""
    if not isinstance(key, str) or not key or len(key) > _MAX_KEY_LEN or not key.isprintable():
        raise XComIdentifierError(
            f"XCom key {key!r} is invalid: use a printable string of 1-{_MAX_KEY_LEN} characters"
        )
    return key


#: Bounds of an override's actor and reason: enough for a name or an email address and a
#: sentence or a ticket link, small enough for every history line.
MAX_ACTOR_LEN: Final = 200
MAX_REASON_LEN: Final = 2000


def validate_actor(actor: object) -> str:
    """Check who made a manual change (an override) and return it."""
    if not isinstance(actor, str) or not actor.strip() or len(actor) > MAX_ACTOR_LEN \
            or not actor.isprintable():
        raise XComIdentifierError(
            f"actor {actor!r} is invalid: use a printable name of 1-{MAX_ACTOR_LEN} characters "
            "(--actor, or XCOMBUS_ACTOR)")
    return actor


def validate_reason(reason: object) -> str:
    """Check why a manual change was made and return it (one line: history shows it)."""
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON_LEN \
            or not reason.isprintable():
        raise XComIdentifierError(
            f"reason {reason!r} is invalid: an override needs a reason, one printable line of "
            f"1-{MAX_REASON_LEN} characters (--reason)")
    return reason


_key_encoder = msgspec.json.Encoder()
_key_decoder = msgspec.json.Decoder(tuple[str, str, str, Int64])


def decode_ti_key(raw: bytes | None) -> TaskInstanceKey:
    """Parse and validate a message key; raise EventDecodeError if it is not one of ours."""
    if raw is None:
        raise EventDecodeError("message has no key (expected a task instance key)")
    return _decode_ti_key(raw)


@lru_cache(maxsize=4096)
def _decode_ti_key(raw: bytes) -> TaskInstanceKey:
    # Cached: a task instance sends many events; parsing and validating its key once
    # takes a visible share of the materializer's fold. Small: one task instance's events
    # arrive together, and every entry is held in the materializer's memory
    # (benchmarks/analysis.md has the measured cost).
    try:
        return TaskInstanceKey(*_key_decoder.decode(raw)).validated()
    except (msgspec.DecodeError, UnicodeDecodeError, XComIdentifierError) as exc:
        raise EventDecodeError(f"message key is not a valid task instance key: {exc}") from None


@lru_cache(maxsize=1 << 16)
def partition_for(ti_key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for a key (murmur2, as in Java).

    Cached: aiokafka's murmur2 is pure Python (the largest single cost of a push in a
    profile) and a task instance pushes many times.
    """
    # aiokafka is imported here, not at the top: importing the event schema (every Airflow
    # process imports xcombus.airflow) must not load the Kafka client.
    from aiokafka.partitioner import murmur2

    partition: int = (murmur2(ti_key) & 0x7FFFFFFF) % partitions
    return partition


class Push(msgspec.Struct, tag_field="kind", tag="push", kw_only=True, omit_defaults=True,
           frozen=True, gc=False):
    """One XCom value pushed by a task instance (identified by the message key)."""

    schema: int
    key: str
    #: The value as serialized by the XCom backend named in ``codec``.
    value: bytes
    #: Which backend wrote ``value`` (its ``codec`` attribute), so readers can refuse
    #: bytes they cannot decode instead of misreading them.
    codec: str
    #: Producer wall-clock time, microseconds since the epoch (UTC).
    ts: Int64
    #: Who wrote it: "host:pid:random", stable for one producer session.
    producer: str
    #: The DAG run's logical date in µs since the epoch, when the pusher knows it.
    logical_date: Int64 | None = None
    try_number: Int64 = 1


class Clear(msgspec.Struct, tag_field="kind", tag="clear", kw_only=True, omit_defaults=True,
            frozen=True, gc=False):
    """Delete every XCom of the task instance (sent when a new try starts)."""

    schema: int
    ts: Int64
    producer: str
    try_number: Int64 = 1


class Override(msgspec.Struct, tag_field="kind", tag="override", kw_only=True, omit_defaults=True,
               frozen=True, gc=False):
    """A manual change of one XCom of the task instance: set it to ``value``, or delete it
    (``value`` None), recorded with who did it and why.

    Applied in log order like a push (the row takes the task instance's current try) and
    never fenced; it does not raise the task instance's current try.
    """

    schema: int
    key: str
    #: The new value as serialized by the backend named in ``codec``; None deletes the XCom.
    value: bytes | None = None
    codec: str | None = None
    ts: Int64
    producer: str
    #: Who made the change (a person or a tool), and why: shown in history.
    actor: str
    reason: str
    #: ``(partition, offset)`` of the version this one replaced, when the writer knew it.
    replaces: tuple[Int64, Int64] | None = None
    #: The task instance's current try as the writer saw it (informational).
    try_number: Int64 = 1


Event: TypeAlias = Push | Clear | Override


class EventDecodeError(Exception):
    """Bytes on the topic that are not a valid event; carries the reason for dead-lettering.

    Internal to the read path: the materializer turns it into a dead-letter row.
    """


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Event)


def encode_event(event: Event) -> bytes:
    """Serialize an event for the topic."""
    return _encoder.encode(event)


def decode_event(raw: bytes | None) -> Event:
    """Parse an event; raise EventDecodeError (never misread) for anything unexpected."""
    if raw is None:
        raise EventDecodeError("message has no value (tombstone); xcombus never writes one")
    try:
        event = _decoder.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # invalid UTF-8 in a str field
        raise EventDecodeError(f"undecodable event: {exc}") from None
    if event.schema > SCHEMA_VERSION or event.schema < 1:
        raise EventDecodeError(
            f"event schema version {event.schema} is not supported by this reader "
            f"(supports 1..{SCHEMA_VERSION}): upgrade xcombus, then retry the dead letters"
        )
    if type(event) is Override and (event.value is None) != (event.codec is None):
        raise EventDecodeError("an override carries a value and its codec, or neither (a delete)")
    return event
