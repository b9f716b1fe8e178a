"""EventFetcher against the real broker: exact records by position, in any order, and clear
errors for positions retention removed or that never existed."""

from __future__ import annotations

import time

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.records_to_delete import RecordsToDelete

from xcombus import Settings, XComBrokerError, XComBus, XComNotFoundError
from xcombus.events import Push, decode_event, decode_ti_key
from xcombus.fetch import EventFetcher

pytestmark = pytest.mark.integration


async def test_records_come_back_exactly_in_any_order(settings: Settings) -> None:
    async with XComBus(settings) as bus:
        ti = bus.task_instance("dag", "run", "task")
        receipts = [await ti.xcom_push(f"k{i}", {"i": i}) for i in range(20)]
        await ti.xcom_clear()
    async with EventFetcher(settings) as fetcher:
        for i in [7, 0, 19, 7, 3, 3, 12]:  # repeated and backwards, as a mapped fan-out reads
            r = receipts[i]
            raw = await fetcher.fetch(r.partition, r.offset)
            event = decode_event(raw.value)
            assert isinstance(event, Push) and event.key == f"k{i}"
            assert decode_ti_key(raw.key).task_id == "task"
            assert (raw.partition, raw.offset) == (r.partition, r.offset)


async def test_positions_retention_removed_or_never_written_are_clear_errors(settings: Settings) -> None:
    async with XComBus(settings) as bus:
        ti = bus.task_instance("dag", "run", "task")
        first = await ti.xcom_push("a", 1)
        second = await ti.xcom_push("b", 2)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        tp = TopicPartition(settings.topic, first.partition)
        await admin.delete_records({tp: RecordsToDelete(second.offset)}, timeout_ms=10_000)
    finally:
        await admin.close()
    async with EventFetcher(settings.replace(pull_timeout=5.0)) as fetcher:
        with pytest.raises(XComNotFoundError, match=f"starts at offset {second.offset}.*retention"):
            await fetcher.fetch(first.partition, first.offset)
        raw = await fetcher.fetch(second.partition, second.offset)  # the fetcher still works
        assert decode_event(raw.value).key == "b"  # type: ignore[union-attr]
    # Past the end: said at once, not after the whole pull_timeout.
    async with EventFetcher(settings.replace(pull_timeout=120.0)) as fetcher:
        started = time.monotonic()
        with pytest.raises(XComNotFoundError, match="does not exist"):
            await fetcher.fetch(second.partition, second.offset + 1000)
        assert time.monotonic() - started < 60


async def test_an_unreachable_broker_fails_within_the_connect_timeout(settings: Settings) -> None:
    started = time.monotonic()
    async with EventFetcher(settings.replace(bootstrap_servers="127.0.0.1:1", connect_timeout=2.0)) as f:
        with pytest.raises(XComBrokerError, match="XCOMBUS_BOOTSTRAP_SERVERS"):
            await f.fetch(0, 0)
    assert time.monotonic() - started < 15
