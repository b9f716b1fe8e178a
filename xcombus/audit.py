"""The audit side: read the topic itself, never the view.

- :func:`history`: every version of one XCom, with the clears in between, in log order;
- :func:`tail`: new events as they arrive, optionally filtered;
- :func:`read_log`: the log from offset 0 in batches, up to given offsets (what a rebuild
  folds, :mod:`xcombus.rebuild`);
- :func:`offsets_at` and :func:`end_offsets`: where the log stood at a moment, and now.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from typing import Any, Literal

import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from ._time import from_us, to_us
from .backends import BaseXCom, load_backend
from .connection import kafka_options, started
from .errors import XComBrokerError, XComTimeoutError
from .events import EventDecodeError, Push, TaskInstanceKey, decode_event, decode_ti_key, partition_for
from .records import XComRecord
from .settings import Settings
from .topic import describe_topic

__all__ = ["AuditEvent", "end_offsets", "history", "offsets_at", "read_log", "tail"]

_BATCH = 50_000


class AuditEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One event of the log as the audit tools show it."""

    partition: int
    offset: int
    kind: Literal["push", "clear", "invalid"]
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    map_index: int | None = None
    key: str | None = None
    #: The value's light form (pushes), or None.
    value: Any = None
    codec: str | None = None
    producer: str | None = None
    try_number: int | None = None
    timestamp: datetime | None = None
    logical_date: datetime | None = None
    #: Why an invalid event could not be applied.
    reason: str | None = None


def _audit_event(message: ConsumerRecord[bytes, bytes], backend: type[BaseXCom]) -> AuditEvent:
    try:
        ti = decode_ti_key(message.key)
        event = decode_event(message.value)
    except EventDecodeError as exc:
        return AuditEvent(partition=message.partition, offset=message.offset, kind="invalid",
                          reason=str(exc))
    clear = AuditEvent(kind="clear", partition=message.partition, offset=message.offset,
                       dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, map_index=ti.map_index,
                       producer=event.producer, try_number=event.try_number, timestamp=from_us(event.ts))
    if not isinstance(event, Push):
        return clear
    record = XComRecord(ti.dag_id, ti.run_id, ti.task_id, ti.map_index, event.key, event.value,
                        event.codec, event.ts, event.logical_date, event.producer,
                        event.try_number, message.partition, message.offset)
    try:
        value = backend.orm_deserialize_value(record)
    except Exception as exc:  # an audit shows what it cannot decode instead of stopping
        value = f"<undecodable: {exc}>"
    return msgspec.structs.replace(clear, kind="push", key=event.key, value=value, codec=event.codec,
                                   logical_date=from_us(event.logical_date))


async def _consumer(settings: Settings) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(**kafka_options(settings),
                                client_id=f"{settings.client_id}-audit", group_id=None,
                                enable_auto_commit=False, isolation_level="read_committed",
                                max_partition_fetch_bytes=4 * 1024 * 1024)
    async with started(consumer, settings, "to read the topic"):
        return consumer


async def _partition_count(settings: Settings) -> int:
    info = await describe_topic(settings)
    if info is None:
        raise XComBrokerError(f"topic {settings.topic!r} does not exist on {settings.bootstrap_servers}: "
                              "create it (xcombus topic create), or set XCOMBUS_TOPIC")
    return info.partitions


async def read_log(settings: Settings, partitions: Iterable[int] | None = None, *,
                   until: dict[int, int] | None = None) -> AsyncIterator[list[ConsumerRecord[bytes, bytes]]]:
    """Batches of messages from offset 0 up to ``until`` (default: the end offsets now)."""
    consumer = await _consumer(settings)
    try:
        async for batch in _read(consumer, settings, partitions, until):
            yield batch
    except KafkaError as exc:  # callers see xcombus's errors only
        raise XComBrokerError(f"reading topic {settings.topic!r} on {settings.bootstrap_servers} "
                              f"failed: {exc!r}") from exc
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), settings.connect_timeout)


async def _read(consumer: AIOKafkaConsumer, settings: Settings, partitions: Iterable[int] | None,
                until: dict[int, int] | None) -> AsyncIterator[list[ConsumerRecord[bytes, bytes]]]:
    """The batches of read_log, from an assigned consumer."""
    if partitions is None:
        partitions = range(await _partition_count(settings))
    tps = [TopicPartition(settings.topic, p) for p in partitions]
    consumer.assign(tps)
    async with asyncio.timeout(settings.connect_timeout):
        await consumer.seek_to_beginning(*tps)
        ends = until if until is not None else {
            tp.partition: off for tp, off in (await consumer.end_offsets(tps)).items()}
    pending = {tp for tp in tps if ends.get(tp.partition, 0) > await consumer.position(tp)}
    for tp in set(tps) - pending:
        consumer.pause(tp)
    idle_deadline = time.monotonic() + settings.pull_timeout
    while pending:
        data = await consumer.getmany(*pending, timeout_ms=500, max_records=_BATCH)
        if not data:
            if time.monotonic() > idle_deadline:
                raise XComTimeoutError(
                    f"reading {settings.topic!r} stalled before offsets {ends} "
                    f"(still pending: {sorted(tp.partition for tp in pending)})")
            continue
        idle_deadline = time.monotonic() + settings.pull_timeout
        batch: list[ConsumerRecord[bytes, bytes]] = []
        for tp, messages in data.items():
            end = ends.get(tp.partition, 0)
            batch.extend(m for m in messages if m.offset < end)
            if messages[-1].offset + 1 >= end or await consumer.position(tp) >= end:
                pending.discard(tp)
                consumer.pause(tp)
        if batch:
            yield batch


async def history(settings: Settings, dag_id: str, run_id: str, task_id: str, key: str,
                  map_index: int = -1, *, backend: type[BaseXCom] | None = None) -> list[AuditEvent]:
    """Every version of one XCom and the clears of its task instance, in log order."""
    backend = backend or load_backend(settings)
    ti = TaskInstanceKey(dag_id, run_id, task_id, map_index).validated()
    raw_key = ti.encode()
    count = await _partition_count(settings)
    out: list[AuditEvent] = []
    async for batch in read_log(settings, [partition_for(raw_key, count)]):
        for message in batch:
            if message.key != raw_key:
                continue
            event = _audit_event(message, backend)
            if event.kind == "clear" or event.key == key:
                out.append(event)
    return out


async def tail(settings: Settings, *, dag_id: str | None = None, run_id: str | None = None,
               task_id: str | None = None, key: str | None = None, from_beginning: bool = False,
               backend: type[BaseXCom] | None = None) -> AsyncIterator[AuditEvent]:
    """Follow the topic: yield each new event (matching the filters) as it arrives."""
    backend = backend or load_backend(settings)
    consumer = await _consumer(settings)
    try:
        tps = [TopicPartition(settings.topic, p) for p in range(await _partition_count(settings))]
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        while True:
            data = await consumer.getmany(timeout_ms=500)
            for messages in data.values():
                for message in messages:
                    event = _audit_event(message, backend)
                    if ((dag_id is None or event.dag_id == dag_id)
                            and (run_id is None or event.run_id == run_id)
                            and (task_id is None or event.task_id == task_id)
                            and (key is None or event.kind != "push" or event.key == key)):
                        yield event
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), settings.connect_timeout)


async def offsets_at(settings: Settings, moment: datetime) -> dict[int, int]:
    """Per partition, the first offset whose record timestamp is after ``moment``."""
    ms = (to_us(moment) or 0) // 1000 + 1
    consumer = await _consumer(settings)
    try:
        tps = [TopicPartition(settings.topic, p) for p in range(await _partition_count(settings))]
        async with asyncio.timeout(settings.connect_timeout):
            found = await consumer.offsets_for_times(dict.fromkeys(tps, ms))
            ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {tp.partition: (found[tp].offset if found.get(tp) is not None else ends[tp]) for tp in tps}


async def end_offsets(settings: Settings) -> dict[int, int]:
    """Per partition, the offset the next record will get (the log's end now)."""
    consumer = await _consumer(settings)
    try:
        tps = [TopicPartition(settings.topic, p) for p in range(await _partition_count(settings))]
        async with asyncio.timeout(settings.connect_timeout):
            return {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()
