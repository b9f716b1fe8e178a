"""Log messages and folded batches for the unit tests of fold, the store and the writer
(no broker: a NamedTuple stands in for aiokafka's ConsumerRecord)."""

from __future__ import annotations

import multiprocessing
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from xcombus import MsgspecXCom, XComRecord
from xcombus.events import (
    OVERRIDE_SCHEMA,
    SCHEMA_VERSION,
    Clear,
    Override,
    Push,
    TaskInstanceKey,
    encode_event,
)
from xcombus.fold import fold
from xcombus.store import COLUMNS, KIND_PUSH, ViewBatch, content_hash, ti_ident, version_ident


class Rec(NamedTuple):
    """The fields of an aiokafka ConsumerRecord that fold reads."""

    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 0


TI = TaskInstanceKey("dag", "run", "task", -1)


def push(key: str, value: bytes, ti: TaskInstanceKey = TI, *, codec: str = MsgspecXCom.codec,
         logical_date: int | None = None, try_number: int = 1, producer: str = "p",
         ts: int = 1) -> tuple[bytes, bytes]:
    return ti.encode(), encode_event(Push(schema=SCHEMA_VERSION, key=key, value=value, codec=codec,
                                          ts=ts, producer=producer, logical_date=logical_date,
                                          try_number=try_number))


def clear(ti: TaskInstanceKey = TI, *, try_number: int = 1, producer: str = "p") -> tuple[bytes, bytes]:
    return ti.encode(), encode_event(Clear(schema=SCHEMA_VERSION, ts=1, producer=producer,
                                           try_number=try_number))


def override(key: str, value: bytes | None, ti: TaskInstanceKey = TI, *, actor: str = "alice",
             reason: str = "fix", producer: str = "cli", ts: int = 2) -> tuple[bytes, bytes]:
    return ti.encode(), encode_event(Override(
        schema=OVERRIDE_SCHEMA, key=key, value=value, codec=None if value is None else MsgspecXCom.codec,
        ts=ts, producer=producer, actor=actor, reason=reason))


def recs(*events: tuple[bytes | None, bytes | None], start: int = 0) -> list[Rec]:
    return [Rec(start + i, k, v) for i, (k, v) in enumerate(events)]


def stored(path: Path) -> list[XComRecord]:
    """Every row of a view file in primary-key order, read with sqlite3 itself (what the
    writer stored, whatever the reader's API)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [XComRecord._make(row) for row in db.execute(
            f"SELECT {COLUMNS} FROM xcom ORDER BY dag_id, run_id, task_id, map_index, key")]
    finally:
        db.close()


def view_state(path: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """What the version rules decide, read with sqlite3: the rows, the current tries and the
    version index (names resolved) with the current rows as the push versions they are (the
    index table lists a row once it left the view), each in key order."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute(f"SELECT {COLUMNS} FROM xcom ORDER BY dag_id, run_id, task_id, map_index, "
                          "key").fetchall()
        tries = db.execute("SELECT * FROM ti_try ORDER BY dag_id, run_id, task_id, map_index").fetchall()
        versions = db.execute(
            "SELECT v.ident, v.kafka_partition, v.kafka_offset, v.kind, v.try_number, v.ts, p.name, a.name, "
            "v.size, v.hash8, v.fenced FROM xcom_version v JOIN name p ON p.id = v.producer_id "
            "LEFT JOIN name a ON a.id = v.actor_id").fetchall()
    finally:
        db.close()
    indexed = {(v[1], v[2]) for v in versions}
    versions += [(version_ident(ti_ident(*r[:4]), r[4]), r[11], r[12], KIND_PUSH, r[10], r[7], r[9], None,
                  len(r[5]), content_hash(r[5]), 0) for r in rows if (r[11], r[12]) not in indexed]
    return rows, tries, sorted(versions, key=lambda v: (v[1], v[2]))


def _reader_process(path: str, ready: Any, done: Any, out: Any) -> None:
    """In another process: every snapshot must have rows == applied events (atomic batches)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    db.execute("PRAGMA busy_timeout=5000")
    torn, states = 0, set()
    ready.set()
    while not done.is_set():
        db.execute("BEGIN")
        rows = db.execute("SELECT count(*) FROM xcom").fetchone()[0]
        events = db.execute("SELECT coalesce(sum(applied_events), 0) FROM offsets").fetchone()[0]
        db.execute("COMMIT")
        torn += rows != events
        states.add(rows)
    out.put((torn, len(states)))


def batches_of_new_xcoms(count: int = 300, size: int = 50) -> Iterator[ViewBatch]:
    """Folded batches in which every event is a new XCom, so rows == events at each commit."""
    offset = 0
    for b in range(count):
        events = [push(f"k{b}-{i}", b"\"v\"") for i in range(size)]
        yield fold({0: recs(*events, start=offset)}, {0: offset}, MsgspecXCom)
        offset += size


async def watch_readers_while(path: Path, write: Callable[[], Awaitable[None]]) -> list[tuple[int, int]]:
    """Run ``write`` while two reader processes poll the view; per reader, return the torn
    snapshots it saw (rows != applied events) and how many distinct states."""
    ctx = multiprocessing.get_context("spawn")
    out, done = ctx.Queue(), ctx.Event()
    readies = [ctx.Event() for _ in range(2)]
    readers = [ctx.Process(target=_reader_process, args=(str(path), r, done, out)) for r in readies]
    for p in readers:
        p.start()
    for r in readies:
        assert r.wait(60)
    await write()
    done.set()
    results = [out.get(timeout=60) for _ in readers]
    for p in readers:
        p.join(30)
    return results
