"""The audit side: read the topic itself (the view only says where to look: its version index).

- :func:`history`: every version of one XCom, with the clears in between, in log order,
  each as the view took it (applied, fenced, an override); from the view's version index
  and the records it points at when a view is at hand, else from a scan of the partition;
- :func:`tail`: new events as they arrive, optionally filtered;
- :func:`read_log`: the log from offset 0 in batches, up to given offsets (what a rebuild
  folds, :mod:`xcombus.rebuild`);
- :func:`offsets_at` and :func:`end_offsets`: where the log stood at a moment, and now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from ._time import from_us, to_us
from .backends import BaseXCom, load_backend
from .connection import kafka_options, started
from .errors import XComBrokerError, XComTimeoutError, XComViewError
from .events import (
    Clear,
    Event,
    EventDecodeError,
    Override,
    Push,
    TaskInstanceKey,
    decode_event,
    decode_ti_key,
    partition_for,
)
from .fetch import ONE_BATCH, EventFetcher
from .records import XComRecord
from .settings import Settings
from .topic import describe_topic
from .view import VersionState, ViewReader

__all__ = ["AuditEvent", "end_offsets", "history", "offsets_at", "read_log", "tail"]

log = logging.getLogger(__name__)

_BATCH = 50_000


class AuditEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One event of the log as the audit tools show it.

    ``kind``: ``push``, ``clear``, ``override`` (a manual change: ``actor``, ``reason``,
    ``replaces``; ``value`` None for a delete), ``fenced`` (a push or clear of an older try
    than its task instance's current one, kept on the topic and never applied: ``key`` None
    for a clear; only :func:`history` knows it), or ``invalid`` (not an event of ours).
    """

    partition: int
    offset: int
    kind: Literal["push", "clear", "override", "fenced", "invalid"]
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
    #: Why an invalid event could not be applied, or why an override was made.
    reason: str | None = None
    #: Who made an override.
    actor: str | None = None
    #: ``(partition, offset)`` of the version an override replaced, when its writer knew it.
    replaces: tuple[int, int] | None = None


class _Message(Protocol):
    """What an audit event is made of: a ConsumerRecord, or a record fetched by position."""

    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


def _audit_event(message: _Message, backend: type[BaseXCom]) -> AuditEvent:
    try:
        ti = decode_ti_key(message.key)
        event = decode_event(message.value)
    except EventDecodeError as exc:
        return AuditEvent(partition=message.partition, offset=message.offset, kind="invalid",
                          reason=str(exc))
    return _described(message, ti, event, backend)


def _described(message: _Message, ti: TaskInstanceKey, event: Event, backend: type[BaseXCom]) -> AuditEvent:
    """A decoded event as the audit tools show it (its kind as written: push, clear, override)."""
    clear = AuditEvent(kind="clear", partition=message.partition, offset=message.offset,
                       dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, map_index=ti.map_index,
                       producer=event.producer, try_number=event.try_number, timestamp=from_us(event.ts))
    if isinstance(event, Clear):
        return clear
    value: Any = None
    logical_date = event.logical_date if isinstance(event, Push) else None
    if event.value is not None and event.codec is not None:
        record = XComRecord(ti.dag_id, ti.run_id, ti.task_id, ti.map_index, event.key, event.value,
                            event.codec, event.ts, logical_date, event.producer,
                            event.try_number, message.partition, message.offset)
        try:
            value = backend.orm_deserialize_value(record)
        except Exception as exc:  # an audit shows what it cannot decode instead of stopping
            value = f"<undecodable: {exc}>"
    if isinstance(event, Override):
        return msgspec.structs.replace(clear, kind="override", key=event.key, value=value, codec=event.codec,
                                       actor=event.actor, reason=event.reason, replaces=event.replaces)
    return msgspec.structs.replace(clear, kind="push", key=event.key, value=value, codec=event.codec,
                                   logical_date=from_us(logical_date))


class _Replay:
    """The view's rule (stated in :mod:`xcombus.store`) replayed for one XCom over its task
    instance's events in log order: what the view made of each one. Seeded with the view's
    state when the replay continues where a view stopped."""

    def __init__(self, key: str, current_try: int = 1,
                 row: tuple[str, int, str, bytes] | None = None) -> None:
        self.key = key
        self.current_try = current_try
        #: The XCom's current row: producer, try, codec, value (a push repeating it is a re-send).
        self.row = row

    def kind(self, event: Event) -> str | None:
        """``push``, ``clear``, ``override``, ``fenced``; None: a re-send, which the view does
        not list as a version, or an event of another XCom of the task instance."""
        if isinstance(event, Override):
            if event.key != self.key:
                return None
            self.row = None if event.value is None or event.codec is None else (
                event.producer, self.current_try, event.codec, event.value)
            return "override"
        effective = max(event.try_number, 1)
        if effective < self.current_try:
            return "fenced" if isinstance(event, Clear) or event.key == self.key else None
        if effective > self.current_try:
            self.current_try, self.row = effective, None
        if isinstance(event, Clear):
            self.row = None
            return "clear"
        if event.key != self.key:
            return None
        row = (event.producer, event.try_number, event.codec, event.value)
        if row == self.row:
            return None
        self.row = row
        return "push"


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
                   until: dict[int, int] | None = None,
                   start: dict[int, int] | None = None) -> AsyncIterator[list[ConsumerRecord[bytes, bytes]]]:
    """Batches of messages from offset 0 (or ``start[partition]``) up to ``until`` (default:
    the end offsets now)."""
    consumer = await _consumer(settings)
    try:
        async for batch in _read(consumer, settings, partitions, until, start):
            yield batch
    except KafkaError as exc:  # callers see xcombus's errors only
        raise XComBrokerError(f"reading topic {settings.topic!r} on {settings.bootstrap_servers} "
                              f"failed: {exc!r}") from exc
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), settings.connect_timeout)


async def _read(consumer: AIOKafkaConsumer, settings: Settings, partitions: Iterable[int] | None,
                until: dict[int, int] | None,
                start: dict[int, int] | None) -> AsyncIterator[list[ConsumerRecord[bytes, bytes]]]:
    """The batches of read_log, from an assigned consumer."""
    if partitions is None:
        partitions = range(await _partition_count(settings))
    tps = [TopicPartition(settings.topic, p) for p in partitions]
    consumer.assign(tps)
    async with asyncio.timeout(settings.connect_timeout):
        await consumer.seek_to_beginning(*tps)
        for tp in tps:
            if start and start.get(tp.partition):
                consumer.seek(tp, start[tp.partition])
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
                  map_index: int = -1, *, backend: type[BaseXCom] | None = None,
                  view: str | os.PathLike[str] | None = None) -> list[AuditEvent]:
    """Every version of one XCom and the clears of its task instance, in log order, each as
    the view took it (``kind``: push, clear, override or fenced; a re-send of the current
    row is no version and is left out).

    With a view (``view``, else ``settings.view_path`` when that file exists) whose version
    index is complete, reads the index and fetches only the records it points at, then the
    events the view has not applied yet; otherwise scans the partition from offset 0.
    """
    backend = backend or load_backend(settings)
    ti = TaskInstanceKey(dag_id, run_id, task_id, map_index).validated()
    state = _version_state(Path(view if view is not None else settings.view_path), settings.topic, ti, key)
    if state is not None:
        return await _history_from_index(settings, ti, key, state, backend)
    raw_key = ti.encode()
    partition = partition_for(raw_key, await _partition_count(settings))
    return await _scan(settings, ti, key, partition, 0, _Replay(key), backend)


def _version_state(path: Path, topic: str, ti: TaskInstanceKey, key: str) -> VersionState | None:
    """The XCom's versions from the view at ``path``, if it is a view of ``topic`` with a
    complete version index; else None (history then scans the log)."""
    if not path.exists():
        return None
    try:
        reader = ViewReader(path, topic=topic)
        try:
            reader.offsets()  # checks the topic
            if not reader.version_index_complete():
                return None
            return reader.version_state(*ti, key)
        finally:
            reader.close()
    except XComViewError as exc:  # not a usable view of this topic: the log has it all
        log.info("history of %s %r scans the log: %s", ti, key, exc)
        return None


async def _history_from_index(settings: Settings, ti: TaskInstanceKey, key: str, state: VersionState,
                              backend: type[BaseXCom]) -> list[AuditEvent]:
    """The indexed versions (records fetched by position), then the events past the view."""
    out: list[AuditEvent] = []
    async with EventFetcher(settings, fetch_bytes=ONE_BATCH) as fetcher:
        for entry in state.versions:
            raw = await fetcher.fetch(entry.partition, entry.offset)
            try:
                if decode_ti_key(raw.key) != ti:
                    continue  # another XCom whose identity has the same 64-bit hash
                event = decode_event(raw.value)
            except EventDecodeError:
                continue
            if not isinstance(event, Clear) and event.key != key:
                continue
            described = _described(raw, ti, event, backend)
            kind = "fenced" if entry.fenced else entry.kind
            out.append(msgspec.structs.replace(described, kind=kind, try_number=entry.try_number))
        partition = state.partition
        if partition is None:
            partition = partition_for(ti.encode(), await _partition_count(settings))
        applied = state.applied.get(partition, 0)
        if await fetcher.end_offset(partition) <= applied:
            return out  # the view has applied everything there is: no reader to start
    # What the view has not applied yet, classified from where the view stands.
    replay = _Replay(key, state.current_try, state.row)
    return out + await _scan(settings, ti, key, partition, applied, replay, backend)


async def _scan(settings: Settings, ti: TaskInstanceKey, key: str, partition: int, start: int,
                replay: _Replay, backend: type[BaseXCom]) -> list[AuditEvent]:
    """The task instance's events of ``partition`` from ``start`` to the end now, classified."""
    raw_key = ti.encode()
    out: list[AuditEvent] = []
    async for batch in read_log(settings, [partition], start={partition: start}):
        for message in batch:
            if message.key != raw_key:
                continue
            try:
                event = decode_event(message.value)
            except EventDecodeError:
                continue
            kind = replay.kind(event)
            if kind is not None:
                described = _described(message, ti, event, backend)
                try_number = replay.current_try if kind == "override" else described.try_number
                out.append(msgspec.structs.replace(described, kind=kind, try_number=try_number))
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
