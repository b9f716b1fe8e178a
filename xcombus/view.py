"""The SQLite view: latest value per XCom, plus the Kafka offsets it reflects.

Layout (one file, WAL mode):

- ``xcom``: one row per ``(dag_id, run_id, task_id, map_index, key)``; the primary key
  order makes "all map indexes of a task, in map-index order" one range scan;
- ``offsets``: per partition, the next offset to apply and how many events were applied;
- ``dead_letter``: events that could not be applied, with partition, offset and reason;
- ``meta``: the schema version and the topic this view folds.

Rows, dead letters and offsets of one fetched batch are written in **one** transaction,
so the view always equals "the log folded up to ``offsets``" and a crash at any instant
neither loses nor double-applies an event. Because the log can replay anything after the
last commit, ``synchronous=NORMAL`` (WAL) is enough.

There is exactly one writer per file (:class:`ViewWriter` holds an exclusive ``flock`` on
``<view>.lock``); any number of :class:`ViewReader`\\ s in other processes read snapshots
without blocking it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import aiosqlite

from ._writer_child import Refused, prepare
from .errors import ViewNotReadyError, XComQueryError, XComViewError, XComViewLockedError
from .limits import MAX_PAGE
from .records import XComRecord

__all__ = ["DeadLetter", "ViewBatch", "ViewNotReadyError", "ViewReader", "ViewWriter", "acquire_write_lock",
           "row_record"]

VIEW_SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS xcom (
    dag_id       TEXT    NOT NULL,
    run_id       TEXT    NOT NULL,
    task_id      TEXT    NOT NULL,
    map_index    INTEGER NOT NULL,
    key          TEXT    NOT NULL,
    value        BLOB    NOT NULL,
    codec        TEXT    NOT NULL,
    timestamp    INTEGER NOT NULL,
    logical_date INTEGER,
    producer     TEXT    NOT NULL,
    try_number   INTEGER NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset    INTEGER NOT NULL,
    PRIMARY KEY (dag_id, run_id, task_id, map_index, key)
) WITHOUT ROWID;
-- The last clear of each task instance: retried dead letters must not resurrect what a
-- later clear removed.
CREATE TABLE IF NOT EXISTS ti_clear (
    dag_id TEXT NOT NULL, run_id TEXT NOT NULL, task_id TEXT NOT NULL, map_index INTEGER NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset    INTEGER NOT NULL,
    PRIMARY KEY (dag_id, run_id, task_id, map_index)
) WITHOUT ROWID;
-- include_prior_dates: the runs of a DAG by logical date (the latest events' date per run).
-- A table of runs, not an index on xcom: an index on a WITHOUT ROWID table carries the
-- whole primary key, and keeping one per row cost a third of the materializer's upsert
-- time (benchmarks/analysis.md); a run's row is written once per batch, not per event.
CREATE TABLE IF NOT EXISTS dag_run (
    dag_id       TEXT    NOT NULL,
    run_id       TEXT    NOT NULL,
    logical_date INTEGER NOT NULL,
    PRIMARY KEY (dag_id, run_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dag_run_by_logical_date ON dag_run (dag_id, logical_date);
-- listings by push time (xcombus ls --since, the HTTP API's order_by=timestamp).
CREATE INDEX IF NOT EXISTS xcom_by_timestamp ON xcom (timestamp);
-- Schema 1's index, dropped again if an older xcombus opened this file and recreated it.
DROP INDEX IF EXISTS xcom_by_logical_date;
CREATE TABLE IF NOT EXISTS offsets (
    kafka_partition INTEGER PRIMARY KEY,
    next_offset     INTEGER NOT NULL,
    applied_events  INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS dead_letter (
    kafka_partition INTEGER NOT NULL,
    kafka_offset    INTEGER NOT NULL,
    message_key     BLOB,
    message_value   BLOB,
    reason          TEXT    NOT NULL,
    kafka_timestamp INTEGER,
    PRIMARY KEY (kafka_partition, kafka_offset)
);
"""

_SECONDARY_INDEXES = ("xcom_by_timestamp",)

#: Upgrades of an older view file in place, by the version it has: run in one transaction
#: by the writer that opens the file, before ``_SCHEMA``.
_MIGRATIONS = {
    1: """
CREATE TABLE IF NOT EXISTS dag_run (
    dag_id TEXT NOT NULL, run_id TEXT NOT NULL, logical_date INTEGER NOT NULL,
    PRIMARY KEY (dag_id, run_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dag_run_by_logical_date ON dag_run (dag_id, logical_date);
INSERT OR IGNORE INTO dag_run (dag_id, run_id, logical_date)
    SELECT dag_id, run_id, max(logical_date) FROM xcom
    WHERE logical_date IS NOT NULL GROUP BY dag_id, run_id;
DROP INDEX IF EXISTS xcom_by_logical_date;
UPDATE meta SET value = '2' WHERE name = 'schema_version';
""",
}

_COLUMNS = ("dag_id, run_id, task_id, map_index, key, value, codec, timestamp, logical_date, "
            "producer, try_number, kafka_partition, kafka_offset")

#: Rows carry ``""`` for a missing logical date, stored as NULL by ``NULLIF``: Python's
#: ``sqlite3`` binds an exact str (or int, float, bytearray) directly but runs an adapter
#: lookup for anything else, None and bytes included, and that lookup was ≈ 20 % of the
#: upsert's CPU (``benchmarks/experiment_sqlite.py null-date no-adapt``). None works too.
_UPSERT = f"""
INSERT INTO xcom ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,NULLIF(?, ''),?,?,?,?)
ON CONFLICT (dag_id, run_id, task_id, map_index, key) DO UPDATE SET
    value=excluded.value, codec=excluded.codec, timestamp=excluded.timestamp,
    logical_date=excluded.logical_date, producer=excluded.producer,
    try_number=excluded.try_number, kafka_partition=excluded.kafka_partition,
    kafka_offset=excluded.kafka_offset
"""
_RUN = """
INSERT INTO dag_run (dag_id, run_id, logical_date) VALUES (?,?,?)
ON CONFLICT (dag_id, run_id) DO UPDATE SET logical_date=excluded.logical_date
"""
_CLEAR = "DELETE FROM xcom WHERE dag_id=? AND run_id=? AND task_id=? AND map_index=?"
_CLEAR_MARK = ("INSERT OR REPLACE INTO ti_clear (dag_id, run_id, task_id, map_index, kafka_partition, "
               "kafka_offset) VALUES (?,?,?,?,?,?)")
_DEAD = ("INSERT OR REPLACE INTO dead_letter (kafka_partition, kafka_offset, message_key, "
         "message_value, reason, kafka_timestamp) VALUES (?,?,?,?,?,?)")
_OFFSET = """
INSERT INTO offsets (kafka_partition, next_offset, applied_events) VALUES (?,?,?)
ON CONFLICT (kafka_partition) DO UPDATE SET
    next_offset=excluded.next_offset,
    applied_events=offsets.applied_events + excluded.applied_events
"""


#: Everything a writer needs to create, upgrade and write a view file but its topic
#: (both writers get it: ViewWriter here, and the child of :mod:`xcombus.writer`).
WRITER_SQL: dict[str, Any] = {
    "schema": _SCHEMA, "schema_version": VIEW_SCHEMA_VERSION, "columns": _COLUMNS,
    "secondary_indexes": list(_SECONDARY_INDEXES), "upsert": _UPSERT, "clear": _CLEAR,
    "clear_mark": _CLEAR_MARK, "dead": _DEAD, "offset": _OFFSET, "run": _RUN,
    "migrations": {str(v): script for v, script in _MIGRATIONS.items()},
}


class DeadLetter(NamedTuple):
    """An event that could not be applied, kept with its position and the reason."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    timestamp: int | None


def row_record(row: Sequence[Any]) -> XComRecord:
    """A :class:`ViewBatch` row as the record a read would return (logical date ``""`` → None)."""
    if row[8] == "":
        return XComRecord(*row[:8], None, *row[9:])
    return XComRecord(*row)


class ViewBatch:
    """What one transaction writes: clears, then upserts, dead letters and new offsets."""

    __slots__ = ("clears", "dead", "events", "offsets", "runs", "superseded", "upserts")

    def __init__(self) -> None:
        #: Clears to apply: ``(dag_id, run_id, task_id, map_index, partition, offset)``.
        self.clears: list[tuple[str, str, str, int, int, int]] = []
        #: Rows in ``_COLUMNS`` order, at most one per XCom (the batch is folded); a
        #: missing logical date is ``""`` (see ``_UPSERT``; :func:`row_record` reads a row).
        self.upserts: list[tuple[Any, ...]] = []
        #: ``(dag_id, run_id, logical_date)`` of the runs whose pushes carry a logical date.
        self.runs: list[tuple[str, str, int]] = []
        self.dead: list[DeadLetter] = []
        #: partition -> next offset to apply.
        self.offsets: dict[int, int] = {}
        #: partition -> events consumed by this batch (applied or dead-lettered).
        self.events: dict[int, int] = {}
        #: Rows replaced or cleared within the batch itself (only collected for backends
        #: that purge external payloads), as ``upserts``.
        self.superseded: list[tuple[Any, ...]] = []


def acquire_write_lock(path: Path) -> int:
    """Take the exclusive writer lock of a view file (``<view>.lock``); return its fd.

    Creates the file's folder if needed. Raises XComViewLockedError naming the holder's
    pid when another process has the lock, XComViewError when the folder is unusable.
    """
    lock = path.with_name(path.name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise XComViewError(f"cannot open the view at {path}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise XComViewLockedError(
            f"another materializer (pid {holder}) is writing {path}; a view file has one "
            "writer: stop it, or give this one its own XCOMBUS_VIEW_PATH") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class ViewWriter:
    """The single writer of one view file (an async context manager)."""

    def __init__(self, path: str | os.PathLike[str], *, topic: str) -> None:
        self.path = Path(path).resolve()
        self.topic = topic
        self._db: aiosqlite.Connection | None = None
        self._lock_fd: int | None = None

    async def __aenter__(self) -> ViewWriter:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Lock the file, open it in WAL mode and create the schema if needed."""
        self._lock_fd = acquire_write_lock(self.path)
        try:
            await asyncio.to_thread(self._prepare)
            db = await aiosqlite.connect(self.path, isolation_level=None)
            self._db = db
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute("PRAGMA busy_timeout=5000")
        except BaseException as exc:
            await self.aclose()
            if isinstance(exc, Refused):
                raise XComViewError(str(exc)) from None
            if isinstance(exc, sqlite3.Error):
                raise XComViewError(f"cannot open the view at {self.path}: {exc}") from exc
            raise

    def _prepare(self) -> None:
        """Create, upgrade and check the file (the same code as the writer child's)."""
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            prepare(db, str(self.path), {**WRITER_SQL, "topic": self.topic})
        finally:
            db.close()

    async def drop_secondary_indexes(self) -> None:
        """For bulk loads into a fresh file: building indexes once at the end is cheaper."""
        for name in _SECONDARY_INDEXES:
            await self.db.execute(f"DROP INDEX IF EXISTS {name}")

    async def create_secondary_indexes(self) -> None:
        await self.db.executescript(_SCHEMA)  # IF NOT EXISTS everywhere: only the indexes are new

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise XComViewError("the view writer is not open")
        return self._db

    async def offsets(self) -> dict[int, int]:
        """partition -> next offset to apply, as committed."""
        rows = await self.db.execute_fetchall("SELECT kafka_partition, next_offset FROM offsets")
        return {p: o for p, o in rows}

    async def apply(self, batch: ViewBatch, *, collect_replaced: bool = False) -> list[XComRecord]:
        """Write a folded batch and its offsets in one transaction (all or nothing).

        With ``collect_replaced``, return the stored rows this batch overwrote or deleted
        (for backends that purge external payloads once the transaction committed).
        """
        db = self.db
        replaced: list[XComRecord] = []
        try:
            await db.execute("BEGIN IMMEDIATE")
            try:
                if collect_replaced:
                    replaced = await self._existing(batch)
                if batch.clears:
                    await db.executemany(_CLEAR, [c[:4] for c in batch.clears])
                    await db.executemany(_CLEAR_MARK, batch.clears)
                if batch.upserts:
                    await db.executemany(_UPSERT, batch.upserts)
                if batch.runs:
                    await db.executemany(_RUN, batch.runs)
                if batch.dead:
                    await db.executemany(_DEAD, batch.dead)
                await db.executemany(_OFFSET, [
                    (p, o, batch.events.get(p, 0)) for p, o in batch.offsets.items()])
                await db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await db.execute("ROLLBACK")
                raise
            return replaced
        except sqlite3.Error as exc:
            raise XComViewError(
                f"writing the view at {self.path} failed ({exc}); nothing of this batch was "
                "applied and its offsets did not advance: fix the cause (disk full? read-only "
                "file?) and restart the materializer") from exc

    async def _existing(self, batch: ViewBatch) -> list[XComRecord]:
        """Stored rows that the batch's clears delete or its upserts overwrite."""
        db, found = self.db, {}
        for clear in batch.clears:
            for row in await db.execute_fetchall(f"SELECT {_COLUMNS} FROM xcom WHERE dag_id=? AND "
                                                 "run_id=? AND task_id=? AND map_index=?", clear[:4]):
                found[tuple(row[:5])] = row
        keys = [row[:5] for row in batch.upserts]
        for i in range(0, len(keys), 500):  # row-value IN, within SQLite's parameter limit
            chunk = keys[i:i + 500]
            sql = (f"SELECT {_COLUMNS} FROM xcom WHERE (dag_id, run_id, task_id, map_index, key) "
                   f"IN (VALUES {','.join(['(?,?,?,?,?)'] * len(chunk))})")
            for row in await db.execute_fetchall(sql, [v for key in chunk for v in key]):
                found[tuple(row[:5])] = row
        return [_record(row) for row in found.values()]

    async def aclose(self) -> None:
        """Close the connection and release the lock. Idempotent."""
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(sqlite3.Error, ValueError):
                await db.close()
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)


_ORDERS = {
    "identity": ("dag_id", "run_id", "task_id", "map_index", "key"),
    "timestamp": ("timestamp", "dag_id", "run_id", "task_id", "map_index", "key"),
}


def _record(row: Sequence[Any]) -> XComRecord:
    return XComRecord(*row)


class ViewReader:
    """Read-only access to a view file, safe from any process while the writer runs.

    Queries are single indexed statements answered in microseconds, so they run
    synchronously: an aiosqlite thread hop costs more than the query (see
    docs/benchmarks.md).
    """

    def __init__(self, path: str | os.PathLike[str], *, topic: str | None = None) -> None:
        self.path = Path(path).resolve()
        #: When given, every offsets() read first checks the view folds this topic.
        self._expect_topic = topic
        if not self.path.exists():
            raise ViewNotReadyError(
                f"no view at {self.path}: start the materializer (xcombus materialize) or use "
                "XComBus(materialize=True); check XCOMBUS_VIEW_PATH")
        try:
            self._db = sqlite3.connect(f"file:{quote(str(self.path))}?mode=ro", uri=True,
                                       check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error as exc:
            raise XComViewError(f"cannot open the view at {self.path} read-only: {exc}") from exc

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        try:
            return self._db.execute(sql, tuple(params)).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                raise ViewNotReadyError(
                    f"{self.path} has no view schema yet: is the materializer running?") from exc
            raise XComViewError(f"reading the view at {self.path} failed: {exc}") from exc
        except sqlite3.Error as exc:
            raise XComViewError(f"reading the view at {self.path} failed: {exc}") from exc

    def offsets(self) -> dict[int, int]:
        """partition -> next offset the view has applied ({} while the schema is being made)."""
        try:
            if self._expect_topic is not None:
                self._check_topic()
            return dict(self._db.execute("SELECT kafka_partition, next_offset FROM offsets"))
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return {}  # a materializer just created the file: nothing applied yet
            raise XComViewError(f"reading the view at {self.path} failed: {exc}") from exc

    def _check_topic(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE name='topic'").fetchone()
        if row is not None and row[0] != self._expect_topic:
            raise XComViewError(f"{self.path} is a view of topic {row[0]!r}, not {self._expect_topic!r}: "
                                "check XCOMBUS_VIEW_PATH and XCOMBUS_TOPIC")
        if row is not None:
            self._expect_topic = None  # checked once for good

    def applied_events(self) -> dict[int, int]:
        """partition -> how many events the view has applied (or dead-lettered)."""
        return dict(self._query("SELECT kafka_partition, applied_events FROM offsets"))

    def get(self, dag_id: str, run_id: str, task_id: str, map_index: int, key: str) -> XComRecord | None:
        """One XCom, or None."""
        rows = self._query(
            f"SELECT {_COLUMNS} FROM xcom WHERE dag_id=? AND run_id=? AND task_id=? "
            "AND map_index=? AND key=?", (dag_id, run_id, task_id, map_index, key))
        return _record(rows[0]) if rows else None

    def get_tasks(self, dag_id: str, run_id: str, task_ids: Sequence[str], key: str,
                  map_indexes: Sequence[int] | None = None) -> list[XComRecord]:
        """Every matching XCom of several tasks in one query, by task then map index."""
        if not task_ids:
            return []
        sql = (f"SELECT {_COLUMNS} FROM xcom WHERE dag_id=? AND run_id=? AND key=? "
               f"AND task_id IN ({','.join('?' * len(task_ids))})")
        params: list[Any] = [dag_id, run_id, key, *task_ids]
        if map_indexes is not None:
            sql += f" AND map_index IN ({','.join('?' * len(map_indexes))})"
            params += map_indexes
        return [_record(r) for r in self._query(sql + " ORDER BY task_id, map_index", params)]

    def logical_date_of(self, dag_id: str, run_id: str) -> int | None:
        """The logical date (µs) carried by the pushes of one DAG run, if any."""
        if not self._has_dag_run():  # a schema-1 file its materializer has not upgraded yet
            rows = self._query("SELECT max(logical_date) FROM xcom WHERE dag_id=? AND run_id=?",
                               (dag_id, run_id))
        else:
            rows = self._query("SELECT logical_date FROM dag_run WHERE dag_id=? AND run_id=?",
                               (dag_id, run_id))
        return rows[0][0] if rows else None

    def _has_dag_run(self) -> bool:
        return bool(self._query("SELECT 1 FROM sqlite_master WHERE type='table' AND name='dag_run'"))

    def get_tasks_with_prior(self, dag_id: str, run_id: str, task_ids: Sequence[str], key: str,
                             map_indexes: Sequence[int] | None, logical_date: int) -> list[XComRecord]:
        """Like :meth:`get_tasks`, but a task with nothing in this run falls back to its
        latest earlier run (greatest logical date before ``logical_date``) that has the key."""
        found = self.get_tasks(dag_id, run_id, task_ids, key, map_indexes)
        have = {r.task_id for r in found}
        for task_id in task_ids:
            if task_id in have:
                continue
            prior = self._prior_run(dag_id, task_id, key, map_indexes, logical_date)
            if prior is not None:
                found += self.get_tasks(dag_id, prior, [task_id], key, map_indexes)
        order = {t: i for i, t in enumerate(task_ids)}
        return sorted(found, key=lambda r: (order[r.task_id], r.map_index))

    def _prior_run(self, dag_id: str, task_id: str, key: str, map_indexes: Sequence[int] | None,
                   before: int) -> str | None:
        """The run with the greatest logical date before ``before`` that has the task's key;
        among runs with that same date, the one pushed to last."""
        has = "x.dag_id=? AND x.task_id=? AND x.key=?"
        params: list[Any] = [dag_id, task_id, key]
        if map_indexes is not None:
            has += f" AND x.map_index IN ({','.join('?' * len(map_indexes))})"
            params += map_indexes
        if not self._has_dag_run():  # a schema-1 file: the logical date is on each row
            rows = self._query(f"SELECT x.run_id FROM xcom x WHERE {has} AND x.logical_date < ? "
                               "ORDER BY x.logical_date DESC, x.timestamp DESC LIMIT 1",
                               [*params, before])
            return rows[0][0] if rows else None
        # Runs newest first through dag_run's index, each probed on xcom's primary key: the
        # scan stops at the first run that has the key.
        date = self._query(
            f"SELECT r.logical_date FROM dag_run r WHERE r.dag_id=? AND r.logical_date < ? AND "
            f"EXISTS (SELECT 1 FROM xcom x WHERE x.run_id=r.run_id AND {has}) "
            "ORDER BY r.logical_date DESC LIMIT 1", [dag_id, before, *params])
        if not date:
            return None
        rows = self._query(
            f"SELECT x.run_id FROM dag_run r JOIN xcom x ON x.run_id=r.run_id AND {has} "
            "WHERE r.dag_id=? AND r.logical_date=? ORDER BY x.timestamp DESC LIMIT 1",
            [*params, dag_id, date[0][0]])
        return rows[0][0] if rows else None

    @staticmethod
    def _filter_clause(filters: dict[str, Any]) -> tuple[str, list[Any]]:
        where, params = [], []
        for column in ("dag_id", "run_id", "task_id", "map_index", "key"):
            value = filters.get(column)
            if value is not None:
                where.append(f"{column}=?")
                params.append(value)
        if filters.get("since") is not None:
            where.append("timestamp>=?")
            params.append(filters["since"])
        if filters.get("until") is not None:
            where.append("timestamp<?")
            params.append(filters["until"])
        return (" WHERE " + " AND ".join(where)) if where else "", params

    def entries(self, *, dag_id: str | None = None, run_id: str | None = None,
             task_id: str | None = None, key: str | None = None, map_index: int | None = None,
             since: int | None = None, until: int | None = None, order_by: str = "identity",
             descending: bool = False, limit: int = 100, offset: int = 0) -> list[XComRecord]:
        """XComs matching the filters (``since``/``until``: push time in µs, until excluded),
        ordered by identity or by timestamp, paged by ``limit``/``offset``."""
        columns = _ORDERS.get(order_by)
        if columns is None:
            raise XComQueryError(f"order_by must be one of {sorted(_ORDERS)}, not {order_by!r}")
        if not 0 < limit <= MAX_PAGE or offset < 0:
            raise XComQueryError(f"limit must be 1..{MAX_PAGE} and offset >= 0")
        where, params = self._filter_clause(dict(dag_id=dag_id, run_id=run_id, task_id=task_id, key=key,
                                         map_index=map_index, since=since, until=until))
        direction = " DESC" if descending else ""
        order = ", ".join(c + direction for c in columns)
        sql = f"SELECT {_COLUMNS} FROM xcom{where} ORDER BY {order} LIMIT ? OFFSET ?"
        return [_record(r) for r in self._query(sql, [*params, limit, offset])]

    def count(self, *, dag_id: str | None = None, run_id: str | None = None,
              task_id: str | None = None, key: str | None = None, map_index: int | None = None,
              since: int | None = None, until: int | None = None) -> int:
        """How many XComs match the filters (what a pager shows as the total)."""
        where, params = self._filter_clause(dict(dag_id=dag_id, run_id=run_id, task_id=task_id, key=key,
                                         map_index=map_index, since=since, until=until))
        return int(self._query(f"SELECT count(*) FROM xcom{where}", params)[0][0])

    def dags(self) -> list[tuple[str, int, int]]:
        """``(dag_id, runs, xcoms)`` per DAG that has XComs."""
        return [tuple(r) for r in self._query(
            "SELECT dag_id, count(DISTINCT run_id), count(*) FROM xcom GROUP BY dag_id ORDER BY dag_id")]

    def runs(self, dag_id: str) -> list[tuple[str, int | None, int, int]]:
        """``(run_id, logical_date, xcoms, last_push_timestamp)`` per run, newest first."""
        return [tuple(r) for r in self._query(
            "SELECT run_id, max(logical_date), count(*), max(timestamp) FROM xcom WHERE dag_id=? "
            "GROUP BY run_id ORDER BY max(logical_date) DESC, max(timestamp) DESC", (dag_id,))]

    def task_instances(self, dag_id: str, run_id: str) -> list[tuple[str, int, int, int]]:
        """``(task_id, map_index, xcoms, last_push_timestamp)`` per task instance of a run."""
        return [tuple(r) for r in self._query(
            "SELECT task_id, map_index, count(*), max(timestamp) FROM xcom WHERE dag_id=? AND run_id=? "
            "GROUP BY task_id, map_index ORDER BY task_id, map_index", (dag_id, run_id))]

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Dead-lettered events, oldest position first."""
        rows = self._query(
            "SELECT kafka_partition, kafka_offset, message_key, message_value, reason, "
            "kafka_timestamp FROM dead_letter ORDER BY kafka_partition, kafka_offset LIMIT ?",
            (limit,))
        return [DeadLetter(*r) for r in rows]

    def close(self) -> None:
        """Close the read-only connection."""
        self._db.close()
