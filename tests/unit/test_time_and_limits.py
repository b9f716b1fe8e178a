"""The shared conversions and limits: µs <-> datetime, the nesting of size limits, the
partitions a strong pull waits for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from xcombus import Settings, XComIdentifierError, XComQueryError
from xcombus._time import from_us, now_us, to_us
from xcombus.consistency import partitions_of_pull
from xcombus.events import TaskInstanceKey, partition_for
from xcombus.limits import (
    MAX_BATCH_BYTES,
    MAX_INLINE_BYTES,
    MAX_PAGE,
    MAX_RECORD_BYTES,
    TOPIC_MAX_MESSAGE_BYTES,
)
from xcombus.topic import topic_configs


def test_time_round_trips_and_refuses_naive_datetimes() -> None:
    moment = datetime(2026, 11, 24, 12, 30, 1, 250_000, tzinfo=UTC)
    assert from_us(to_us(moment)) == moment
    assert to_us(moment.astimezone(timezone(timedelta(hours=5)))) == to_us(moment)
    assert to_us(42) == 42 and to_us(None) is None and from_us(None) is None
    with pytest.raises(XComQueryError, match="timezone-aware"):
        to_us(datetime(2026, 1, 1))
    with pytest.raises(XComIdentifierError, match="logical_date must be timezone-aware"):
        to_us(datetime(2026, 1, 1), what="logical_date must be timezone-aware", error=XComIdentifierError)
    assert abs(now_us() - to_us(datetime.now(UTC))) < 5_000_000


def test_size_limits_nest_from_the_topic_inwards() -> None:
    assert MAX_INLINE_BYTES < MAX_RECORD_BYTES < MAX_BATCH_BYTES < TOPIC_MAX_MESSAGE_BYTES
    assert topic_configs(Settings())["max.message.bytes"] == str(TOPIC_MAX_MESSAGE_BYTES)
    assert Settings().max_value_bytes == MAX_INLINE_BYTES
    assert MAX_PAGE == 10_000


def test_a_pull_waits_for_the_partitions_it_reads() -> None:
    one = partitions_of_pull(6, "d", "r", ["a", "b"], [0, 1], include_prior_dates=False)
    assert one == {partition_for(TaskInstanceKey("d", "r", t, i).encode(), 6) for t in "ab" for i in (0, 1)}
    # Every map index, or an earlier run: the rows may sit on any partition.
    assert list(partitions_of_pull(6, "d", "r", ["a"], None, include_prior_dates=False)) == list(range(6))
    assert list(partitions_of_pull(6, "d", "r", ["a"], [0], include_prior_dates=True)) == list(range(6))
