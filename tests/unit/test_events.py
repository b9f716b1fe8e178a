"""The event schema and the task-instance key codec (no broker needed)."""

from __future__ import annotations

import contextlib

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from xcombus.errors import XComIdentifierError
from xcombus.events import (
    CLEAR_SCHEMA,
    OVERRIDE_SCHEMA,
    PUSH_SCHEMA,
    SCHEMA_VERSION,
    Clear,
    EventDecodeError,
    Override,
    Push,
    TaskInstanceKey,
    decode_event,
    decode_ti_key,
    encode_event,
    partition_for,
    validate_key,
)


def test_ti_key_is_stable_compact_json() -> None:
    key = TaskInstanceKey("dag", "manual__2026-01-01T00:00:00+00:00", "task", 3)
    assert key.encode() == b'["dag","manual__2026-01-01T00:00:00+00:00","task",3]'
    assert decode_ti_key(key.encode()) == key


def test_partition_matches_kafka_default_partitioner() -> None:
    # Values computed by Kafka's Java murmur2 (Utils.toPositive(Utils.murmur2(key)) % n);
    # the same vectors are in kafka-clients' UtilsTest.
    from aiokafka.partitioner import murmur2

    # aiokafka returns the 32-bit hash unsigned; Java's int is the same bits signed.
    assert murmur2(b"21") == -973932308 & 0xFFFFFFFF
    assert murmur2(b"foobar") == -790332482 & 0xFFFFFFFF
    assert partition_for(b"foobar", 7) == (-790332482 & 0x7FFFFFFF) % 7


@pytest.mark.parametrize(
    ("dag_id", "run_id", "task_id", "map_index"),
    [("", "r", "t", -1), ("d/..", "r", "t", -1), ("d", "r;drop", "t", -1), ("d", "r", "t t", -1),
     ("d", "r", "t", -2), ("d", "r", "t", True), ("d" * 251, "r", "t", -1), ("d", "r\n", "t", -1)],
)
def test_invalid_ids_are_refused(dag_id: str, run_id: str, task_id: str, map_index: int) -> None:
    with pytest.raises(XComIdentifierError):
        TaskInstanceKey(dag_id, run_id, task_id, map_index).validated()


@pytest.mark.parametrize("key", ["", "a\nb", "x" * 513, 5, None])
def test_invalid_xcom_keys_are_refused(key: object) -> None:
    with pytest.raises(XComIdentifierError):
        validate_key(key)


def test_push_and_clear_round_trip() -> None:
    push = Push(schema=SCHEMA_VERSION, key="k", value=b"\x00\x01", codec="c", ts=5,
                producer="p", logical_date=7, try_number=2)
    clear = Clear(schema=SCHEMA_VERSION, ts=6, producer="p")
    assert decode_event(encode_event(push)) == push
    assert decode_event(encode_event(clear)) == clear


def test_override_round_trips_set_and_delete() -> None:
    set_ = Override(schema=OVERRIDE_SCHEMA, key="k", value=b"1", codec="c", ts=5, producer="cli", actor="alice",
                    reason="wrong row count", replaces=(2, 17), try_number=3)
    delete = Override(schema=OVERRIDE_SCHEMA, key="k", ts=6, producer="cli", actor="bob", reason="stale")
    assert decode_event(encode_event(set_)) == set_
    assert decode_event(encode_event(delete)) == delete
    assert msgspec.msgpack.decode(encode_event(delete))["kind"] == "override"


def test_an_override_carries_a_value_and_its_codec_or_neither() -> None:
    raw = msgspec.msgpack.encode({"kind": "override", "schema": 2, "key": "k", "value": b"1", "ts": 1,
                                  "producer": "p", "actor": "a", "reason": "r"})
    with pytest.raises(EventDecodeError, match="value and its codec"):
        decode_event(raw)


def test_pushes_and_clears_stay_readable_by_schema_1_readers() -> None:
    # Materializers that were not upgraded keep reading what tasks write; only the new kind
    # needs the new reader (docs/semantics.md says which to upgrade first).
    assert (PUSH_SCHEMA, CLEAR_SCHEMA, OVERRIDE_SCHEMA, SCHEMA_VERSION) == (1, 1, 2, 2)
    old_reader = msgspec.msgpack.Decoder(Push | Clear)
    push = Push(schema=PUSH_SCHEMA, key="k", value=b"1", codec="c", ts=1, producer="p")
    assert old_reader.decode(encode_event(push)) == push
    override = Override(schema=OVERRIDE_SCHEMA, key="k", ts=1, producer="p", actor="a", reason="r")
    with pytest.raises(msgspec.DecodeError):  # a dead letter there, never a misread push or clear
        old_reader.decode(encode_event(override))


def test_schema_version_is_carried_explicitly() -> None:
    raw = msgspec.msgpack.decode(encode_event(Clear(schema=1, ts=1, producer="p")))
    assert raw["schema"] == 1 and raw["kind"] == "clear"


def test_future_schema_version_is_refused_not_misread() -> None:
    future = msgspec.msgpack.encode({"kind": "push", "schema": SCHEMA_VERSION + 1, "key": "k",
                                     "value": b"1", "codec": "c", "ts": 1, "producer": "p",
                                     "new_field": "x"})
    with pytest.raises(EventDecodeError, match="schema version"):
        decode_event(future)


@pytest.mark.parametrize("raw", [None, b"", b"\xc1", b"garbage", msgspec.msgpack.encode({"kind": "rename"}),
                                 msgspec.msgpack.encode({"kind": "push", "schema": 1}), b'{"kind":"push"}'])
def test_malformed_events_raise_decode_error(raw: bytes | None) -> None:
    with pytest.raises(EventDecodeError):
        decode_event(raw)


@pytest.mark.parametrize("raw", [None, b"garbage", b'["d","r","t"]', b'["d","r","t","x"]',
                                 b'["d","r/../x","t",-1]', b'["d","r","t",-1,5]'])
def test_bad_message_keys_raise_decode_error(raw: bytes | None) -> None:
    with pytest.raises(EventDecodeError):
        decode_ti_key(raw)


def test_invalid_utf8_in_text_fields_is_a_decode_error_not_a_crash() -> None:
    raw = msgspec.msgpack.encode({"kind": "push", "schema": 1, "key": "k", "value": b"1", "codec": "c",
                                  "ts": 1, "producer": "p"}).replace(b"\xa1k", b"\xa1\x80")
    with pytest.raises(EventDecodeError):
        decode_event(raw)
    with pytest.raises(EventDecodeError):
        decode_ti_key(b'["\x80","r","t",-1]')


# Structured garbage (msgpack maps with the event's field names and wrong values) and raw
# bytes: either way the decoder returns an event or raises its own error, nothing else.
_STRUCTURED_GARBAGE = st.builds(lambda d: msgspec.msgpack.encode(d), st.dictionaries(
    st.sampled_from(["kind", "schema", "key", "value", "codec", "ts", "producer", "try_number", "actor",
                     "reason", "replaces"]),
    st.one_of(st.text(), st.binary(), st.integers(-(2**63), 2**64 - 1), st.none(),
              st.sampled_from(["push", "clear", "override"]))))


@given(st.one_of(_STRUCTURED_GARBAGE, st.binary(max_size=300)))
def test_decoder_never_raises_anything_but_its_own_error(raw: bytes) -> None:
    with contextlib.suppress(EventDecodeError):
        decode_event(raw)
