"""References (what Airflow's table holds instead of the value): parsing, previews, checks."""

from __future__ import annotations

import datetime as dt
import hashlib

import msgspec
import pytest

from xcombus import XComNotFoundError, XComRecord, XComSerializationError
from xcombus.reference import XComReference, make_preview, parse_reference

pytestmark = pytest.mark.unit


def _ref(**changes: object) -> XComReference:
    data = b'{"rows":42}'
    fields = dict(dag_id="etl", run_id="manual__1", task_id="extract", map_index=-1,
                  key="return_value", try_number=1, topic="xcombus.xcom", partition=3, offset=17,
                  size=len(data), value_size=len(data), sha256=hashlib.sha256(data).hexdigest(), codec="msgspec-json/1",
                  type="dict", preview="{'rows': 42}")
    fields.update(changes)
    return XComReference(**fields)  # type: ignore[arg-type]


def _record(ref: XComReference, value: bytes = b'{"rows":42}', **changes: object) -> XComRecord:
    fields = dict(dag_id=ref.dag_id, run_id=ref.run_id, task_id=ref.task_id, map_index=ref.map_index,
                  key=ref.key, value=value, codec=ref.codec, timestamp=0, logical_date=None,
                  producer="p", try_number=1, partition=ref.partition, offset=ref.offset)
    fields.update(changes)
    return XComRecord(**fields)  # type: ignore[arg-type]


def test_the_same_reference_parses_from_airflow3s_value_and_airflow2s_bytes() -> None:
    ref = _ref()
    assert parse_reference(ref.to_builtins()) == ref  # Airflow 3 stores a JSON value
    assert parse_reference(ref.to_json()) == ref  # Airflow 2.10 stores JSON bytes
    assert parse_reference(ref.to_json().decode()) == ref
    assert ref.to_builtins()["xcombus_ref"] == 1


@pytest.mark.parametrize("value", [
    None, 42, "plain", [1, 2], {"from": "api"}, b'{"a": 1}', b"\xff\xfe not json",
    '{"xcombus_ref" broken', {"xcombus_ref": None},
    # a user's own value that merely has the marker is not a reference: it passes through
    {"xcombus_ref": 1, "note": "user data"}, b'{"xcombus_ref": 1, "note": "user data"}'])
def test_values_that_are_not_references_are_none(value: object) -> None:
    assert parse_reference(value) is None


def test_a_reference_of_an_unknown_version_or_shape_is_refused_not_passed_through() -> None:
    with pytest.raises(XComSerializationError, match="version 2, and this xcombus reads version 1"):
        parse_reference({**_ref().to_builtins(), "xcombus_ref": 2})
    broken = _ref().to_builtins()
    del broken["codec"]
    with pytest.raises(XComSerializationError, match="lacks codec"):
        parse_reference(broken)
    with pytest.raises(XComSerializationError, match="malformed"):
        parse_reference({**_ref().to_builtins(), "offset": "seventeen"})
    with pytest.raises(XComSerializationError, match="malformed"):  # positions are never negative
        parse_reference({**_ref().to_builtins(), "offset": -1})


def test_unknown_extra_fields_are_ignored_for_forward_compatibility() -> None:
    assert parse_reference({**_ref().to_builtins(), "added_later": True}) == _ref()


def test_check_accepts_exactly_the_referenced_version() -> None:
    ref = _ref()
    ref.check(_record(ref))
    with pytest.raises(XComSerializationError, match="SHA-256"):
        ref.check(_record(ref, value=b'{"rows":43}'))
    with pytest.raises(XComNotFoundError, match="re-created"):
        ref.check(_record(ref, task_id="other"))
    with pytest.raises(XComNotFoundError):
        ref.check(_record(ref, key="other_key"))


def test_the_label_says_it_is_a_reference_and_shows_the_preview() -> None:
    label = _ref().label()
    assert label.startswith("[xcombus reference: dict, 11 bytes, try 1, xcombus.xcom[3]@17]")
    # An offloaded value: the label shows the value's size, not its pointer's.
    assert _ref(value_size=2_000_000).label().startswith("[xcombus reference: dict, 2000000 bytes")
    assert label.endswith("{'rows': 42}")


def test_previews_are_bounded_readable_and_never_fail() -> None:
    assert make_preview({"when": dt.date(2026, 1, 2)}, 1024) == "{'when': datetime.date(2026, 1, 2)}"
    huge = make_preview("é" * 100_000, 1024)
    assert len(huge.encode()) <= 1024 and "..." in huge
    nested = make_preview({"k": list(range(10_000))}, 200)
    assert len(nested.encode()) <= 200
    assert make_preview([1], 0) == ""

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("boom")

    assert make_preview(Broken(), 1024).startswith("<Broken")  # a failing __repr__ fails no push
    # Cut at a byte limit without splitting a UTF-8 character.
    for limit in range(1, 40):
        text = make_preview("日本語のテキスト" * 10, limit)
        assert len(text.encode()) <= limit
        text.encode().decode()


def test_a_reference_is_small() -> None:
    assert len(msgspec.json.encode(_ref(preview="x" * 1024))) < 1500
