"""The audit side: read the topic itself (never the view) for history, tail and rebuilds.

- :func:`history`: every version of one XCom, with the clears in between, in log order;
- :func:`tail`: new events as they arrive, optionally filtered;
- :func:`rebuild`: a fresh view folded from offset 0, up to the log's end, a set of
  offsets or a moment in time (a point-in-time view for audits), in bounded memory;
- :func:`verify`: two view files compared row for row, offsets first;
- :func:`swap`: a rebuilt view copied over the live file in one SQLite transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from .backends import BaseXCom, load_backend
from .connection import kafka_options
from .errors import XComBrokerError, XComQueryError, XComTimeoutError, XComViewError
from .events import Clear, EventDecodeError, TaskInstanceKey, decode_event, decode_ti_key, partition_for
from .fold import fold
from .lookup import from_us, to_us
from .records import XComRecord
from .settings import Settings
from .store import acquire_write_lock
from .topic import describe_topic
from .writer import ViewWriterProcess

__all__ = ["AuditEvent", "RebuildSummary", "VerifyResult", "history", "rebuild", "swap", "tail", "verify"]

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


def _audit_event(rec: Any, backend: type[BaseXCom]) -> AuditEvent:
    try:
        ti = decode_ti_key(rec.key)
        event = decode_event(rec.value)
    except EventDecodeError as exc:
        return AuditEvent(partition=rec.partition, offset=rec.offset, kind="invalid", reason=str(exc))
    common = dict(partition=rec.partition, offset=rec.offset, dag_id=ti.dag_id, run_id=ti.run_id,
                  task_id=ti.task_id, map_index=ti.map_index, producer=event.producer,
                  try_number=event.try_number, timestamp=from_us(event.ts))
    if type(event) is Clear:
        return AuditEvent(kind="clear", **common)  # type: ignore[arg-type]
    record = XComRecord(ti.dag_id, ti.run_id, ti.task_id, ti.map_index, event.key, event.value,
                        event.codec, event.ts, event.logical_date, event.producer,
                        event.try_number, rec.partition, rec.offset)
    try:
        value = backend.orm_deserialize_value(record)
    except Exception as exc:  # an audit shows what it cannot decode instead of stopping
        value = f"<undecodable: {exc}>"
    return AuditEvent(kind="push", key=event.key, value=value, codec=event.codec,
                      logical_date=from_us(event.logical_date), **common)  # type: ignore[arg-type]


async def _consumer(settings: Settings) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(**kafka_options(settings),
                                client_id=f"{settings.client_id}-audit", group_id=None,
                                enable_auto_commit=False, isolation_level="read_committed",
                                max_partition_fetch_bytes=4 * 1024 * 1024)
    try:
        async with asyncio.timeout(settings.connect_timeout):
            await consumer.start()
    except (TimeoutError, KafkaError, OSError) as exc:
        with contextlib.suppress(Exception):
            await consumer.stop()
        raise XComBrokerError(f"cannot reach Kafka at {settings.bootstrap_servers} ({exc!r}): "
                              "is the broker running?") from exc
    return consumer


async def _partition_count(settings: Settings) -> int:
    info = await describe_topic(settings)
    if info is None:
        raise XComQueryError(f"topic {settings.topic!r} does not exist on {settings.bootstrap_servers}")
    return info.partitions


async def read_log(settings: Settings, partitions: Iterable[int] | None = None, *,
                   until: dict[int, int] | None = None) -> AsyncIterator[list[Any]]:
    """Batches of records from offset 0 up to ``until`` (default: the end offsets now)."""
    consumer = await _consumer(settings)
    try:
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
            batch: list[Any] = []
            for tp, records in data.items():
                end = ends.get(tp.partition, 0)
                batch.extend(r for r in records if r.offset < end)
                if records[-1].offset + 1 >= end or await consumer.position(tp) >= end:
                    pending.discard(tp)
                    consumer.pause(tp)
            if batch:
                yield batch
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), settings.connect_timeout)


async def history(settings: Settings, dag_id: str, run_id: str, task_id: str, key: str,
                  map_index: int = -1, *, backend: type[BaseXCom] | None = None) -> list[AuditEvent]:
    """Every version of one XCom and the clears of its task instance, in log order."""
    backend = backend or load_backend(settings)
    ti = TaskInstanceKey(dag_id, run_id, task_id, map_index).validated()
    raw_key = ti.encode()
    count = await _partition_count(settings)
    out: list[AuditEvent] = []
    async for batch in read_log(settings, [partition_for(raw_key, count)]):
        for rec in batch:
            if rec.key != raw_key:
                continue
            event = _audit_event(rec, backend)
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
            for records in data.values():
                for rec in records:
                    event = _audit_event(rec, backend)
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


class RebuildSummary(msgspec.Struct, frozen=True):
    """What a rebuild did."""

    path: str
    events: int
    rows: int
    dead_letters: int
    offsets: dict[int, int]
    seconds: float


async def rebuild(settings: Settings, into: str | os.PathLike[str], *,
                  until_offsets: dict[int, int] | None = None, until: datetime | None = None,
                  on_progress: Callable[[int, int], None] | None = None) -> RebuildSummary:
    """Fold the topic from offset 0 into a new view file (which must not exist yet).

    Stops at ``until_offsets`` (partition -> first offset *not* applied), at ``until``
    (the records appended up to that moment), or at the end offsets when it starts.
    Memory stays bounded: the log is folded and written batch by batch.
    """
    path = Path(into)
    if path.exists():
        raise XComViewError(f"{path} exists already: rebuild into a new file")
    if until is not None and until_offsets is not None:
        raise XComQueryError("give either until or until_offsets, not both")
    backend = load_backend(settings)
    started = time.perf_counter()
    if until is not None:
        until_offsets = await offsets_at(settings, until)
    if until_offsets is None:
        consumer = await _consumer(settings)
        try:
            count = await _partition_count(settings)
            tps = [TopicPartition(settings.topic, p) for p in range(count)]
            until_offsets = {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
        finally:
            await consumer.stop()
    total = sum(until_offsets.values())
    applied: dict[int, int] = {}
    events = dead = 0
    # The writer process writes batch n while this process reads and folds batch n+1.
    async with ViewWriterProcess(path, topic=settings.topic) as writer:
        await writer.begin_bulk_load()  # a fresh file: no fsync, secondary indexes at the end
        async for batch in read_log(settings, sorted(until_offsets), until=until_offsets):
            by_partition: dict[int, list[Any]] = {}
            for rec in batch:
                by_partition.setdefault(rec.partition, []).append(rec)
            folded = fold(by_partition, applied, backend)
            prepared = writer.encode(folded)  # encoded while the previous batch commits
            folded.upserts = []  # free the rows before waiting
            await writer.submit(prepared)  # waits for the previous batch's commit first
            applied.update(folded.offsets)
            events += sum(folded.events.values())
            dead += len(folded.dead)
            if on_progress is not None:
                on_progress(events, total)
        # Offsets reached without records (control markers) still count as applied.
        folded_end = fold({}, applied, backend)
        folded_end.offsets = {p: o for p, o in until_offsets.items() if o > applied.get(p, 0)}
        if folded_end.offsets:
            await writer.submit(folded_end)
        rows = await writer.end_bulk_load()  # after the batch in flight: raises if it failed
        offsets = await writer.offsets()
    return RebuildSummary(str(path), events, rows, dead, offsets, time.perf_counter() - started)


class VerifyResult(msgspec.Struct, frozen=True):
    """The comparison of two views."""

    same: bool
    offsets_a: dict[int, int]
    offsets_b: dict[int, int]
    rows_a: int
    rows_b: int
    #: Human-readable differences (at most ``limit``).
    differences: list[str]


_ROW = ("dag_id, run_id, task_id, map_index, key, value, codec, timestamp, logical_date, producer, "
        "try_number, kafka_partition, kafka_offset")


def verify(a: str | os.PathLike[str], b: str | os.PathLike[str], *, limit: int = 50) -> VerifyResult:
    """Compare two view files row for row (every column) and offset for offset."""
    for p in (a, b):
        if not Path(p).exists():
            raise XComViewError(f"no view at {p}")
    db = sqlite3.connect(f"file:{Path(a).resolve()}?mode=ro", uri=True)
    try:
        db.execute("ATTACH DATABASE ? AS b", (f"file:{Path(b).resolve()}?mode=ro",))
        offsets_a = dict(db.execute("SELECT kafka_partition, next_offset FROM main.offsets"))
        offsets_b = dict(db.execute("SELECT kafka_partition, next_offset FROM b.offsets"))
        rows_a = db.execute("SELECT count(*) FROM main.xcom").fetchone()[0]
        rows_b = db.execute("SELECT count(*) FROM b.xcom").fetchone()[0]
        differences: list[str] = []
        if offsets_a != offsets_b:
            differences.append(f"offsets differ: {offsets_a} vs {offsets_b} (compare views at the "
                               "same offsets: rebuild --until-offsets)")
        for side, (x, y) in (("only in A", ("main", "b")), ("only in B", ("b", "main"))):
            for row in db.execute(f"SELECT {_ROW} FROM {x}.xcom EXCEPT SELECT {_ROW} FROM {y}.xcom "
                                  f"ORDER BY 1, 2, 3, 4, 5 LIMIT ?", (limit,)):
                differences.append(f"{side}: {row[0]}/{row[1]}/{row[2]}[{row[3]}] {row[4]!r} "
                                   f"at {row[11]}:{row[12]}")
    except sqlite3.Error as exc:
        raise XComViewError(f"cannot compare {a} and {b}: {exc}") from exc
    finally:
        db.close()
    return VerifyResult(not differences, offsets_a, offsets_b, rows_a, rows_b, differences[:limit])


def swap(new: str | os.PathLike[str], live: str | os.PathLike[str]) -> None:
    """Replace the live view's content with a rebuilt one, atomically for readers.

    SQLite's backup API writes the new pages into the live file inside one transaction,
    so readers in other processes see the old view or the new one, never a mix. The live
    view must have no materializer attached (it holds the write lock): stop it first.
    """
    source, target = Path(new).resolve(), Path(live).resolve()
    if not source.exists():
        raise XComViewError(f"no view at {source}")
    fd = acquire_write_lock(target)  # fails at once while a materializer writes the live view
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        dest = sqlite3.connect(target, isolation_level=None)
        try:
            topic = src.execute("SELECT value FROM meta WHERE name='topic'").fetchone()
            if target.exists() and dest.execute(
                    "SELECT count(*) FROM sqlite_master WHERE name='meta'").fetchone()[0]:
                live_topic = dest.execute("SELECT value FROM meta WHERE name='topic'").fetchone()
                if live_topic != topic:
                    raise XComViewError(f"{source} folds topic {topic[0]!r} but {target} folds "
                                        f"{live_topic[0] if live_topic else None!r}")
            dest.execute("PRAGMA busy_timeout=10000")
            dest.execute("PRAGMA journal_mode=WAL")
            src.backup(dest)
            dest.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            raise XComViewError(f"swapping {source} into {target} failed: {exc}; the live view "
                                "is unchanged") from exc
        finally:
            dest.close()
            src.close()
    finally:
        os.close(fd)
