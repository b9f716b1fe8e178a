"""The default backend's typed JSON: exact round trips, refusals, the allow-list."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import decimal
import enum
import math
import uuid
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xcombus import MsgspecXCom, Settings, XComRecord, XComSerializationError, load_backend
from xcombus.serde import Serde, SerdeError


@dataclasses.dataclass
class Point:
    x: int
    label: str = "p"
    tags: tuple[str, ...] = ()


class Reading(msgspec.Struct):
    at: dt.datetime
    value: decimal.Decimal
    seen: frozenset[int] = frozenset()


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


ALLOWED = Serde([f"{__name__}.*"])


def roundtrip(value: Any, serde: Serde = ALLOWED) -> Any:
    return serde.loads(serde.dumps(value))


@pytest.mark.parametrize("value", [
    None, True, 0, -1, 2**100, 1.5, "text", "", [1, [2, [3]]], {"a": {"b": [None]}},
    dt.datetime(2026, 11, 24, 12, 30, 5, 123456, tzinfo=dt.UTC),
    dt.datetime(2026, 11, 24, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=-3, minutes=-30))),
    dt.datetime(2026, 11, 24, 12, 30),  # naive stays naive
    dt.date(2026, 2, 28), dt.time(23, 59, 59, 999999), dt.time(1, 2, tzinfo=dt.UTC),
    dt.timedelta(days=-3, seconds=5, microseconds=7), uuid.UUID(int=12345),
    decimal.Decimal("3.14159265358979323846264338327950288"), decimal.Decimal("-0.00"),
    b"\x00\xffbytes", bytearray(b"ba"), (1, "two", (3.0,)), (), {3, 1, 2}, frozenset({"a", "b"}),
    {1: "int key", (1, 2): "tuple key", None: 0}, {"__type__": "user data", "__value__": 1},
    Point(1, tags=("a",)), Reading(dt.datetime(2026, 1, 1, tzinfo=dt.UTC), decimal.Decimal("1.0"), frozenset({1})),
    Color.BLUE, [Point(2), {"nested": (Color.RED, {b"k"})}],
])
def test_round_trip_keeps_value_and_type(value: Any) -> None:
    back = roundtrip(value)
    assert back == value
    assert same_types(back, value)


def test_timezone_is_kept_by_name_and_offset() -> None:
    oslo = dt.datetime(2026, 7, 1, 12, tzinfo=ZoneInfo("Europe/Oslo"))
    back = roundtrip(oslo)
    assert back == oslo and back.tzinfo == ZoneInfo("Europe/Oslo") and back.utcoffset() == oslo.utcoffset()
    fixed = dt.datetime(2026, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=45)))
    assert roundtrip(fixed).utcoffset() == dt.timedelta(hours=5, minutes=45)


def test_special_floats_and_decimals() -> None:
    assert math.isnan(roundtrip(float("nan")))
    assert roundtrip(float("-inf")) == float("-inf")
    assert roundtrip(decimal.Decimal("NaN")).is_nan()
    assert str(roundtrip(decimal.Decimal("1.10"))) == "1.10"  # precision kept


def test_plain_json_values_stay_plain_json() -> None:
    assert ALLOWED.dumps({"a": [1, 2.5, "x", None, True]}) == b'{"a":[1,2.5,"x",null,true]}'


@pytest.mark.parametrize("value", [object(), {1, object()}, lambda: 1, Point, iter([1]), {"a": 1j}])
def test_unsupported_values_are_refused_naming_the_type(value: Any) -> None:
    with pytest.raises(SerdeError, match="not supported"):
        ALLOWED.dumps(value)


def test_classes_need_the_allow_list_on_both_sides() -> None:
    with pytest.raises(SerdeError, match="allowed_deserialization_classes"):
        Serde().dumps(Point(1))  # refused at push time
    data = ALLOWED.dumps(Point(1))
    with pytest.raises(SerdeError, match="allowed_deserialization_classes"):
        Serde().loads(data)  # and at pull time, by the reader's own list
    assert Serde(["tests.unit.test_serde.Point"]).loads(data) == Point(1)


def test_a_local_class_is_refused_because_no_reader_could_import_it() -> None:
    @dataclasses.dataclass
    class Local:
        x: int

    with pytest.raises(SerdeError, match="not importable"):
        Serde(["*"]).dumps(Local(1))


def test_forged_class_names_are_not_imported_unless_allowed() -> None:
    forged = b'{"__type__":"dataclass","cls":"os.system","__value__":{}}'
    with pytest.raises(SerdeError, match="not in allowed"):
        ALLOWED.loads(forged)
    with pytest.raises(SerdeError, match="not a dataclass"):
        Serde(["os.*", "subprocess.*"]).loads(b'{"__type__":"dataclass","cls":"subprocess.Popen","__value__":{}}')


@pytest.mark.parametrize("raw", [b'{"__type__":"nope","__value__":1}', b'{"__type__":"datetime","__value__":5}',
                                 b'{"__type__":"bytes","__value__":"***"}', b"{", b'{"__type__":"float","__value__":"1"}'])
def test_malformed_tagged_values_are_clear_errors(raw: bytes) -> None:
    with pytest.raises(SerdeError):
        ALLOWED.loads(raw)


json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
extra_leaf = (st.binary(max_size=20) | st.datetimes(timezones=st.just(dt.UTC)) | st.dates()
              | st.timedeltas() | st.uuids() | st.decimals(allow_nan=False) | st.times())
hashable = st.integers() | st.text(max_size=5) | st.tuples(st.integers(), st.text(max_size=3))
values = st.recursive(
    json_leaf | extra_leaf,
    lambda inner: (st.lists(inner, max_size=4) | st.tuples(inner, inner)
                   | st.dictionaries(st.text(max_size=8), inner, max_size=4)
                   | st.dictionaries(hashable, inner, max_size=3) | st.frozensets(hashable, max_size=3)
                   | st.sets(hashable, max_size=3)),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(values)
def test_generated_nested_values_round_trip_exactly(value: Any) -> None:
    back = roundtrip(value)
    assert back == value
    assert same_types(back, value)


def same_types(a: Any, b: Any) -> bool:
    """Equal values can still differ in type (1 == 1.0 == True, (1,) vs [1]): compare deeply."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return all(same_types(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return all(same_types(k, k) and same_types(a[k], b[k]) for k in a)
    if isinstance(a, set | frozenset):  # match each element to its equal by type too
        return all(any(x == y and same_types(x, y) for y in b) for x in a)
    if isinstance(a, dt.datetime | dt.time):
        return a.tzinfo == b.tzinfo and a.fold == b.fold
    return True


@given(st.binary(max_size=200))
def test_loads_raises_only_its_own_error(raw: bytes) -> None:
    with contextlib.suppress(SerdeError):
        ALLOWED.loads(raw)


def test_backend_errors_name_key_and_type() -> None:
    load_backend(Settings.from_env({}))
    with pytest.raises(XComSerializationError, match=r"XCom 'k' \(a builtins.object\)"):
        MsgspecXCom.serialize_value(object(), key="k")
    record = XComRecord("d", "r", "t", -1, "k", b'{"__type__":"nope"}', MsgspecXCom.codec, 0, None, "p", 1, 0, 0)
    with pytest.raises(XComSerializationError, match="XCom 'k' of d/r/t"):
        MsgspecXCom.deserialize_value(record)
    foreign = record._replace(codec="pickle/1")
    with pytest.raises(XComSerializationError, match="codec 'pickle/1'"):
        MsgspecXCom.deserialize_value(foreign)


@pytest.mark.parametrize(("value", "where"), [
    ({"a": [1, {"b": 1j}]}, "value['a'][1]['b']"),
    ([1, (2, {3: 1j})], "value[1][1][3]"),
    ({"s": {1, 2, 1j}}, "value['s']{}"),
    ({1: [1j]}, "value[1][0]"),
])
def test_an_unsupported_value_is_named_by_its_path(value: Any, where: str) -> None:
    with pytest.raises(SerdeError) as info:
        ALLOWED.dumps(value)
    assert f"type builtins.complex at {where} is not supported" in str(info.value)


def test_plain_lists_and_dicts_are_encoded_as_they_are() -> None:
    value = {"rows": list(range(5)), "x": 1.5, "nested": [{"a": None, "b": True}]}
    assert ALLOWED.dumps(value) == b'{"rows":[0,1,2,3,4],"x":1.5,"nested":[{"a":null,"b":true}]}'
    assert ALLOWED.loads(ALLOWED.dumps([1.5, float("inf")])) == [1.5, float("inf")]  # tagged
