"""The view's read side: :class:`ViewReader`, read-only queries on a view file.

Any number of readers, in any process, read snapshots of the file (WAL mode) while its one
writer runs, without blocking it: a reader sees a batch whole or not at all, because the
writer commits rows, dead letters and offsets together. The layout, the writer and the
invariants it keeps are described in :mod:`xcombus.store`.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import quote

from .errors import ViewNotReadyError, XComQueryError, XComViewError
from .limits import MAX_PAGE
from .records import XComRecord
from .search import XComSearch, count_sql, order_sql, search_sql
from .store import (
    COLUMNS,
    KIND_CLEAR,
    KIND_OVERRIDE,
    KIND_PUSH,
    DeadLetter,
    content_hash,
    ti_ident,
    version_ident,
)

__all__ = ["MAX_PAGE", "VersionEntry", "VersionState", "ViewNotReadyError", "ViewReader"]

_KINDS: dict[int, Literal["push", "clear", "override"]] = {
    KIND_PUSH: "push", KIND_CLEAR: "clear", KIND_OVERRIDE: "override"}


class VersionEntry(NamedTuple):
    """One row of the version index: where an event of an XCom (or a clear of its task
    instance) is in the log, and what the view made of it. The record itself (the value,
    an override's reason) is at ``(partition, offset)`` on the topic.

    The index finds an XCom by a 64-bit hash of its identity: a reader that fetches the
    record checks the record's identity before using it.
    """

    partition: int
    offset: int
    kind: Literal["push", "clear", "override"]
    #: The event's try (an override: the task instance's current try when it applied).
    try_number: int
    #: The event's time, µs since the epoch (UTC).
    timestamp: int
    producer: str
    #: Who made an override; None for pushes and clears.
    actor: str | None
    #: Bytes of the value (None: a clear, an override that deletes).
    size: int | None
    #: The first 8 bytes of the SHA-256 of the value (store.content_hash).
    content_hash: bytes | None
    #: An event of an older try than its task instance's current one: kept, never applied.
    fenced: bool


class VersionState(NamedTuple):
    """One XCom's versions with what a reader needs to continue past them (the view's
    offsets, its task instance's current try, its current row), from one snapshot."""

    versions: list[VersionEntry]
    #: partition -> next offset the view has applied.
    applied: dict[int, int]
    current_try: int
    #: The XCom's current row as ``(producer, try, codec, value)``, or None.
    row: tuple[str, int, str, bytes] | None
    #: The partition of the task instance's events, when the index has any.
    partition: int | None


_VERSION_SELECT = (
    "SELECT v.kafka_partition, v.kafka_offset, v.kind, v.try_number, v.ts, p.name, a.name, v.size, v.hash8, "
    "v.fenced FROM xcom_version v JOIN name p ON p.id = v.producer_id LEFT JOIN name a ON a.id = v.actor_id ")


def _entry(row: Sequence[Any]) -> VersionEntry:
    return VersionEntry(row[0], row[1], _KINDS[row[2]], row[3], row[4], row[5], row[6], row[7], row[8],
                        bool(row[9]))


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

    def _not_ready(self, exc: sqlite3.OperationalError) -> ViewNotReadyError | None:
        """The waiting kind of error, when ``exc`` says the view is not readable *yet*."""
        if "no such table" in str(exc):
            return ViewNotReadyError(f"{self.path} has no view schema yet: is the materializer running?")
        if "readonly database" in str(exc):
            # A read-only connection cannot replay the write-ahead log of a writer that died
            # without closing the file (kill -9, a crash): the next writer does it on opening.
            return ViewNotReadyError(
                f"{self.path} was left by a materializer that stopped without closing it: it is "
                "readable again once a materializer opens it (is one running?)")
        return None

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        try:
            return self._db.execute(sql, tuple(params)).fetchall()
        except sqlite3.OperationalError as exc:
            waiting = self._not_ready(exc)
            if waiting is not None:
                raise waiting from exc
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
            waiting = self._not_ready(exc)
            if waiting is not None:
                raise waiting from exc
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
            f"SELECT {COLUMNS} FROM xcom WHERE dag_id=? AND run_id=? AND task_id=? "
            "AND map_index=? AND key=?", (dag_id, run_id, task_id, map_index, key))
        return _record(rows[0]) if rows else None

    def get_tasks(self, dag_id: str, run_id: str, task_ids: Sequence[str], key: str,
                  map_indexes: Sequence[int] | None = None) -> list[XComRecord]:
        """Every matching XCom of several tasks in one query, by task then map index."""
        if not task_ids:
            return []
        sql = (f"SELECT {COLUMNS} FROM xcom WHERE dag_id=? AND run_id=? AND key=? "
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
        for column in ("dag_id", "run_id", "task_id", "map_index", "key", "try_number"):
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
             descending: bool = False, limit: int = 100, offset: int = 0,
             try_number: int | None = None) -> list[XComRecord]:
        """XComs matching the filters (``since``/``until``: push time in µs, until excluded;
        ``try_number``: the try of the row, an override's being its task instance's current
        try), ordered by identity or by timestamp, paged by ``limit``/``offset``."""
        columns = _ORDERS.get(order_by)
        if columns is None:
            raise XComQueryError(f"order_by must be one of {sorted(_ORDERS)}, not {order_by!r}")
        if not 0 < limit <= MAX_PAGE or offset < 0:
            raise XComQueryError(f"limit must be 1..{MAX_PAGE} and offset >= 0")
        where, params = self._filter_clause(dict(dag_id=dag_id, run_id=run_id, task_id=task_id, key=key,
                                         map_index=map_index, since=since, until=until,
                                         try_number=try_number))
        direction = " DESC" if descending else ""
        order = ", ".join(c + direction for c in columns)
        sql = f"SELECT {COLUMNS} FROM xcom{where} ORDER BY {order} LIMIT ? OFFSET ?"
        return [_record(r) for r in self._query(sql, [*params, limit, offset])]

    def count(self, *, dag_id: str | None = None, run_id: str | None = None,
              task_id: str | None = None, key: str | None = None, map_index: int | None = None,
              since: int | None = None, until: int | None = None, try_number: int | None = None) -> int:
        """How many XComs match the filters (what a pager shows as the total)."""
        where, params = self._filter_clause(dict(dag_id=dag_id, run_id=run_id, task_id=task_id, key=key,
                                         map_index=map_index, since=since, until=until,
                                         try_number=try_number))
        return int(self._query(f"SELECT count(*) FROM xcom{where}", params)[0][0])

    def search(self, search: XComSearch, *, limit: int, offset: int
               ) -> tuple[list[tuple[XComRecord, int | None, int]], int]:
        """One page of the XComs an Airflow 3 listing asks for (:mod:`xcombus.search`), each with
        its run's logical date and run_after (µs), and how many match in all."""
        if not 0 <= limit <= MAX_PAGE or offset < 0:
            raise XComQueryError(f"limit must be 0..{MAX_PAGE} and offset >= 0")
        select, where, params = search_sql(search)
        count, count_params = count_sql(search)
        self._query("BEGIN")  # the page and the total from one snapshot
        try:
            rows = self._query(f"{select}{where}{order_sql(search)} LIMIT ? OFFSET ?",
                               [*params, limit, offset])
            total = int(self._query(count, count_params)[0][0])
        finally:
            self._query("COMMIT")
        return [(_record(r[:-2]), r[-2], r[-1]) for r in rows], total

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

    # -- versions -------------------------------------------------------------------------

    def version_index_complete(self) -> bool:
        """True when the version index lists every event from offset 0 (a view created by
        this xcombus or rebuilt); False for a view upgraded from schema 2, whose index
        starts at the upgrade (readers then scan the log), or one without an index."""
        try:
            row = self._db.execute("SELECT value FROM meta WHERE name='version_index'").fetchone()
        except sqlite3.Error:
            return False
        return row is not None and row[0] == "complete"

    def versions(self, dag_id: str, run_id: str, task_id: str, map_index: int,
                 key: str) -> list[VersionEntry]:
        """Every version of one XCom and every clear of its task instance, in log order (a
        task instance lives in one partition): the index, and the XCom's current row, which
        is its own index entry until it is replaced (store._TRIGGERS)."""
        ti = ti_ident(dag_id, run_id, task_id, map_index)
        found = [_entry(r) for r in self._query(
            f"{_VERSION_SELECT}WHERE v.ident IN (?, ?) ORDER BY v.kafka_partition, v.kafka_offset",
            (version_ident(ti, key), version_ident(ti)))]
        current = self.get(dag_id, run_id, task_id, map_index, key)
        if current is not None and (current.partition, current.offset) not in {(v.partition, v.offset)
                                                                               for v in found}:
            found.append(VersionEntry(current.partition, current.offset, "push", current.try_number,
                                      current.timestamp, current.producer, None, len(current.value),
                                      content_hash(current.value), False))
            found.sort(key=lambda v: (v.partition, v.offset))
        return found

    def try_version(self, dag_id: str, run_id: str, task_id: str, map_index: int, key: str,
                    try_number: int) -> VersionEntry | None:
        """The last push or override of one XCom by try ``try_number`` (fenced pushes
        included: that try did push them), also when the view no longer shows that try's
        rows; None if there is none in the index. Check the record's identity after
        fetching it (see :class:`VersionEntry`), or use :meth:`versions`."""
        found = [v for v in self.versions(dag_id, run_id, task_id, map_index, key)
                 if v.kind != "clear" and v.try_number == try_number]
        return found[-1] if found else None

    def current_try(self, dag_id: str, run_id: str, task_id: str, map_index: int) -> int:
        """The task instance's current try as the view applied it (1 when it never saw a
        higher one): what an override made now takes as its try."""
        rows = self._query("SELECT try_number FROM ti_try WHERE dag_id=? AND run_id=? AND task_id=? "
                           "AND map_index=?", (dag_id, run_id, task_id, map_index))
        return int(rows[0][0]) if rows else 1

    def version_state(self, dag_id: str, run_id: str, task_id: str, map_index: int,
                      key: str) -> VersionState:
        """:meth:`versions`, the offsets, the current try and the current row, read in one
        snapshot (one read transaction), so a reader can go on from where the view stands."""
        ti = (dag_id, run_id, task_id, map_index)
        self._query("BEGIN")
        try:
            versions = self.versions(*ti, key)
            applied = dict(self._query("SELECT kafka_partition, next_offset FROM offsets"))
            tries = self._query("SELECT try_number FROM ti_try WHERE dag_id=? AND run_id=? AND task_id=? "
                                "AND map_index=?", ti)
            rows = self._query("SELECT producer, try_number, codec, value FROM xcom WHERE dag_id=? AND "
                               "run_id=? AND task_id=? AND map_index=? AND key=?", (*ti, key))
        finally:
            self._query("COMMIT")
        row = (rows[0][0], rows[0][1], rows[0][2], rows[0][3]) if rows else None
        return VersionState(versions, applied, tries[0][0] if tries else 1, row,
                            versions[0].partition if versions else None)

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Dead-lettered events, oldest position first."""
        rows = self._query(
            "SELECT kafka_partition, kafka_offset, message_key, message_value, reason, "
            "kafka_timestamp FROM dead_letter ORDER BY kafka_partition, kafka_offset LIMIT ?",
            (limit,))
        return [DeadLetter(*r) for r in rows]

    def close(self) -> None:
        """Close the connection."""
        self._db.close()
