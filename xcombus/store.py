"""The view file's write side: its schema, and the one transaction that writes a batch.

A view file (SQLite, WAL mode) holds the latest value per XCom and the Kafka offsets it
reflects:

- ``xcom``: one row per ``(dag_id, run_id, task_id, map_index, key)``, columns in
  :data:`COLUMNS` order; the primary key order makes "all map indexes of a task, in
  map-index order" one range scan;
- ``dag_run``: the logical date of each run, for ``include_prior_dates``;
- ``ti_clear``: the last clear of each task instance (a retried dead letter must not
  resurrect what a later clear removed);
- ``ti_try``: the current try of each task instance whose current try is above 1 (the
  fencing rule below; a task instance without a row is at try 1);
- ``xcom_version``: the version index, one row per event of an XCom (push, override, fenced
  push) and per clear (under its task instance), except the pushes that are still their
  XCom's current row (the row is their entry until it leaves ``xcom``: :data:`_TRIGGERS`),
  with ``name`` naming the producer and actor ids it refers to;
- ``offsets``: per partition, the next offset to apply and how many events were applied;
- ``dead_letter``: events that could not be applied, with partition, offset and reason;
- ``meta``: the schema version and the topic this view folds.

**Invariant 4, rows and offsets commit together.** :meth:`ViewStore.write` writes the
clears, upserts, runs, dead letters and next offsets of one folded batch in **one**
``BEGIN IMMEDIATE … COMMIT``, so the view always equals "the log folded up to
``offsets``" and a crash at any instant neither loses nor double-applies an event.
Because the log can replay anything after the last commit, ``synchronous=NORMAL`` is
enough. This module is the only code that writes a view file:

- the materializer and ``rebuild`` write through :class:`xcombus.writer.ViewWriterProcess`,
  whose child process (``xcombus/_writer_child.py``) is a serve loop around
  :class:`ViewStore`: ``sqlite3`` holds the GIL while it binds each row, so a writer
  *thread* would take turns with the fold of the next batch instead of running beside it;
- the dead-letter retry runs :meth:`ViewStore.retry` (the guarded variant of the
  transaction) in a worker thread: one transaction, once, with nothing to overlap;
- ``swap`` copies a rebuilt file over the live one with :func:`replace_view`.

**Versions and tries (a function of the log alone).** Per task instance, the current try
is the highest try number of its pushes and clears so far, in log order (overrides do not
raise it; a try below 1 counts as 1). A push or clear of an older try than the current one
is *fenced*: indexed with ``fenced=1``, never applied. A push or clear of a newer try first
deletes every row of the task instance (they all belong to older tries). An override sets
(the row takes the current try) or deletes one XCom and is never fenced. A push that repeats
the XCom's current row (same producer, try, codec and value) is a re-send: no version, the
row unchanged. :func:`xcombus.fold.fold` decides what the batch alone decides and cuts the
batch into *steps* (a task instance's tries change, an override); :meth:`ViewStore.write`
reads the stored try of each task instance of a step once and finishes the decision in the
same transaction (:class:`ViewBatch` says what each field carries).

**Invariant 5, one writer per file.** :func:`acquire_write_lock` takes an exclusive
``flock`` on ``<view>.lock``; a second writer fails at once with XComViewLockedError
naming the holder's pid. Readers (:class:`xcombus.view.ViewReader`) open the file
read-only and never block the writer.

The writer child loads this file without running ``xcombus/__init__.py``, so it imports
only the standard library, msgspec and the two leaf modules ``errors`` and ``records``
(a test keeps it so): the child's memory counts in the materializer's.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import operator
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeAlias, TypeVar

import msgspec

from .errors import XComViewError, XComViewLockedError
from .records import XComRecord

__all__ = ["ADVANCE_OFFSET", "COLUMNS", "KIND_CLEAR", "KIND_OVERRIDE", "KIND_PUSH", "SCHEMA",
           "SCHEMA_VERSION", "UPSERT", "VERSION_COLUMNS", "ClearRow", "DeadLetter", "EncodedBatch",
           "EncodedStep", "HeldRow", "OverrideRow", "ProbeRow", "RetryOutcome", "Row", "RunRow", "TryRow",
           "VersionRow", "ViewBatch", "ViewStore", "acquire_write_lock", "content_hash", "encode_batch",
           "ensure_schema", "key_hash", "name_id", "replace_view", "row_record", "ti_ident", "version_ident",
           "write_error"]

SCHEMA_VERSION = 3

#: The whole schema, idempotent (``IF NOT EXISTS`` everywhere): run on every open, after
#: any migration.
SCHEMA = """
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
-- whole primary key, and keeping one per row slowed the materializer's upserts markedly
-- (benchmarks/analysis.md); a run's row is written once per batch, not per event.
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
-- The current try of each task instance whose current try is above 1 (absent: 1). Only
-- retried task instances have a row, so a log without retries writes none.
CREATE TABLE IF NOT EXISTS ti_try (
    dag_id TEXT NOT NULL, run_id TEXT NOT NULL, task_id TEXT NOT NULL, map_index INTEGER NOT NULL,
    try_number INTEGER NOT NULL,
    PRIMARY KEY (dag_id, run_id, task_id, map_index)
) WITHOUT ROWID;
-- Producer and actor names by their name_id (a hash, so fold numbers them without asking the
-- view and a rebuild numbers them alike), so index rows carry an integer instead of the string.
CREATE TABLE IF NOT EXISTS name (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL
);
-- The version index: per XCom (ident: a 64-bit hash of its identity, see version_ident; a
-- clear is filed under its task instance with the key ''), every event but the current rows
-- (a row is indexed when it leaves xcom). Hashes, not identities, keep a row small
-- (tests/unit/test_versions.py holds it to 64 bytes); a reader that fetches the record
-- checks the identity (two identities sharing a hash are told apart there).
CREATE TABLE IF NOT EXISTS xcom_version (
    ident           INTEGER NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset    INTEGER NOT NULL,
    kind            INTEGER NOT NULL,   -- 0 push, 1 clear, 2 override
    try_number      INTEGER NOT NULL,
    ts              INTEGER NOT NULL,   -- the event's time, µs since the epoch
    producer_id     INTEGER NOT NULL,   -- name.id
    actor_id        INTEGER,            -- name.id, overrides only
    size            INTEGER,            -- bytes of the value (pushes and overrides that set)
    hash8           BLOB,               -- content_hash of the value
    fenced          INTEGER NOT NULL,
    PRIMARY KEY (ident, kafka_partition, kafka_offset)
) WITHOUT ROWID;
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

#: Indexes a bulk load into a fresh file builds once at the end instead of row by row.
_SECONDARY_INDEXES = ("xcom_by_timestamp",)

#: Upgrades of an older view file in place, by the version it has: run in one transaction
#: by the writer that opens the file, before :data:`SCHEMA`.
_MIGRATIONS = {
    "1": """
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
    # The version index cannot be filled from the rows (the log holds the versions): it starts
    # here, marked 'partial' (readers then scan the log; a rebuild makes it complete). The
    # current tries come from the rows: a task instance whose newer try cleared every row and
    # pushed nothing keeps try 1 until its next event (a rebuild has the exact tries).
    "2": """
CREATE TABLE IF NOT EXISTS ti_try (
    dag_id TEXT NOT NULL, run_id TEXT NOT NULL, task_id TEXT NOT NULL, map_index INTEGER NOT NULL,
    try_number INTEGER NOT NULL,
    PRIMARY KEY (dag_id, run_id, task_id, map_index)
) WITHOUT ROWID;
INSERT OR IGNORE INTO ti_try (dag_id, run_id, task_id, map_index, try_number)
    SELECT dag_id, run_id, task_id, map_index, max(try_number) FROM xcom
    GROUP BY dag_id, run_id, task_id, map_index HAVING max(try_number) > 1;
INSERT OR REPLACE INTO meta (name, value) VALUES ('version_index', 'partial');
UPDATE meta SET value = '3' WHERE name = 'schema_version';
""",
}

#: The ``xcom`` table's columns, in the order of a :data:`Row` and of an XComRecord.
COLUMNS = ("dag_id, run_id, task_id, map_index, key, value, codec, timestamp, logical_date, "
           "producer, try_number, kafka_partition, kafka_offset")

#: One ``xcom`` row in :data:`COLUMNS` order, as a batch carries it: a missing logical
#: date is ``""`` (stored as NULL, see :data:`UPSERT`).
Row: TypeAlias = tuple[str, str, str, int, str, bytes, str, int, int | str, str, int, int, int]
#: A clear: the task instance, then where the clear stands (partition, offset).
ClearRow: TypeAlias = tuple[str, str, str, int, int, int]
#: ``(dag_id, run_id, logical_date)`` of a run whose pushes carry a logical date.
RunRow: TypeAlias = tuple[str, str, int]
#: A task instance with pushes or clears in a step: the try they all have there (at least
#: 1), its partition, and the offsets of their version rows (fenced together if that try is
#: older than the stored one).
TryRow: TypeAlias = tuple[str, str, str, int, int, int, Sequence[int]]
#: One row of the version index: the columns of ``xcom_version``, in :data:`VERSION_COLUMNS`
#: order (producer and actor by :func:`name_id`).
VersionRow: TypeAlias = tuple[int, int, int, int, int, int, int, int | None, int | None, bytes | None, int]
#: A re-send's version row, then its task instance's position in the step's ``tis``: indexed
#: (fenced) only if that task instance turns out fenced.
HeldRow: TypeAlias = tuple[int, int, int, int, int, int, int, int | None, int | None, bytes | None, int, int]
#: The first push of an XCom in a step that the step itself superseded: is it a re-send of
#: the stored row? ``(tis position, key, partition, offset, producer, try, codec, content hash)``.
ProbeRow: TypeAlias = tuple[int, str, int, int, str, int, str, bytes]
#: An override, a step by itself: the task instance, key, value (None: delete), codec,
#: timestamp, producer, actor, partition, offset.
OverrideRow: TypeAlias = tuple[str, str, str, int, str, bytes | None, str | None, int, str, str, int, int]

#: ``xcom_version.kind``.
KIND_PUSH, KIND_CLEAR, KIND_OVERRIDE = 0, 1, 2
#: The version index's columns, in the order of a :data:`VersionRow`.
VERSION_COLUMNS = ("ident, kafka_partition, kafka_offset, kind, try_number, ts, producer_id, actor_id, "
                   "size, hash8, fenced")

_ti_json = msgspec.json.Encoder().encode


def _hash32(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=4).digest(), "big")


def ti_ident(dag_id: str, run_id: str, task_id: str, map_index: int) -> int:
    """A task instance's 64-bit id, combined with a key by :func:`version_ident`: BLAKE2b of
    its DAG run in the high 32 bits, of its task and map index in the low 32.

    The run first, because that is what keeps writing the index cheap: a batch's events
    belong to a few DAG runs, so its index rows land in a few narrow ranges of the B-tree
    instead of on every page of it (a hash of the whole identity would rewrite the whole
    index on every batch, and more as it grows)."""
    ident = _run_hash(dag_id, run_id) << 32 | _hash32(_ti_json((task_id, map_index)))
    return ident - (1 << 64) if ident >= 1 << 63 else ident  # SQLite's integers are signed


@functools.lru_cache(maxsize=1024)
def _run_hash(dag_id: str, run_id: str) -> int:
    # Cached: a run has many task instances, and their events come together.
    return _hash32(_ti_json((dag_id, run_id)))


@functools.lru_cache(maxsize=4096)
def key_hash(key: str) -> int:
    """What :func:`version_ident` XORs into a task instance's id for an XCom key (32 bits).

    Cached: the same few keys (return_value...) come back on most events, so an index row
    costs one XOR instead of a hash of the whole identity."""
    return _hash32(b"\x01" + key.encode())


def version_ident(ti: int, key: str = "") -> int:
    """The version index's 64-bit id of an XCom of the task instance whose
    :func:`ti_ident` is ``ti`` (``key`` '': the clears of that task instance; the key
    changes the low 32 bits only, so a run's versions stay together). Stable across
    processes and versions: the index of a rebuilt view must equal the live one. Two
    identities may share an id; readers check the record they fetch."""
    return ti ^ key_hash(key)


@functools.lru_cache(maxsize=4096)
def name_id(name: str) -> int:
    """The id of a producer or actor name in the version index: 63 bits of its BLAKE2b (a
    hash, not a counter, so every view of a log numbers names alike and fold numbers them
    without reading the view; a task process is a producer, so there are many)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big") >> 1


def content_hash(value: bytes | bytearray) -> bytes:
    """The first 8 bytes of the SHA-256 of a value (the index's ``hash8``)."""
    return hashlib.sha256(value).digest()[:8]


_SET_ROW = """
    value=excluded.value, codec=excluded.codec, timestamp=excluded.timestamp,
    logical_date=excluded.logical_date, producer=excluded.producer,
    try_number=excluded.try_number, kafka_partition=excluded.kafka_partition,
    kafka_offset=excluded.kafka_offset"""

#: Write one :data:`Row`. A missing logical date arrives as ``""`` and is stored as NULL
#: by ``NULLIF``: Python's ``sqlite3`` binds an exact str (or int, float, bytearray)
#: directly but runs an adapter lookup for anything else, None and bytes included, and
#: that lookup is a visible share of the upsert's CPU. None works too.
UPSERT = f"""
INSERT INTO xcom ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,NULLIF(?, ''),?,?,?,?)
ON CONFLICT (dag_id, run_id, task_id, map_index, key) DO UPDATE SET{_SET_ROW}
"""
#: The dead-letter retry's upsert: only over an older event of the same partition, so a
#: retried push never replaces a newer one.
_GUARDED_UPSERT = f"""{UPSERT.rstrip()}
WHERE xcom.kafka_partition = excluded.kafka_partition AND xcom.kafka_offset < excluded.kafka_offset
"""
#: An override that sets an XCom: a row it replaces keeps its logical date.
_OVERRIDE_UPSERT = f"""
INSERT INTO xcom ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,NULL,?,?,?,?)
ON CONFLICT (dag_id, run_id, task_id, map_index, key) DO UPDATE SET
    value=excluded.value, codec=excluded.codec, timestamp=excluded.timestamp,
    producer=excluded.producer, try_number=excluded.try_number,
    kafka_partition=excluded.kafka_partition, kafka_offset=excluded.kafka_offset
"""
_DELETE_ROW = "DELETE FROM xcom WHERE dag_id=? AND run_id=? AND task_id=? AND map_index=? AND key=?"
_NAME = "INSERT OR IGNORE INTO name (id, name) VALUES (?, ?)"
#: One :data:`VersionRow`, bound as it arrives: the common step needs no per-row work in Python.
_VERSION = f"INSERT INTO xcom_version ({VERSION_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
_VERSION_IF_NEW = _VERSION.replace("INSERT", "INSERT OR IGNORE", 1)
#: A row that leaves ``xcom`` is indexed then, as the push it was: while a push is its XCom's
#: current row, the row is its index entry (ViewReader.versions adds it). So the common event,
#: a push nothing replaced yet, costs the index nothing; the index still equals "every event
#: but the current rows" whatever the batches, since a push replaced within a batch is indexed
#: by fold. A deleted row (a clear, a newer try, an override) by this TEMP trigger (this
#: connection only, calling the functions :func:`_register` defines: the view file's schema
#: needs nothing of Python); a replaced row by :data:`_INDEX_ROW` before the update (an
#: UPDATE trigger would make every upsert slower, replacing or not: measured ~2 us per row).
#: NOT EXISTS rather than OR IGNORE (an outer statement's conflict handling overrides a
#: trigger's): an override's row is indexed already.
_TRIGGERS = """
CREATE TEMP TRIGGER IF NOT EXISTS xcom_deleted AFTER DELETE ON main.xcom BEGIN
    INSERT INTO name (id, name) SELECT xcombus_name_id(OLD.producer), OLD.producer
        WHERE NOT EXISTS (SELECT 1 FROM name WHERE id = xcombus_name_id(OLD.producer));
    INSERT INTO xcom_version (VERSION_COLUMNS) SELECT
        xcombus_ident(OLD.dag_id, OLD.run_id, OLD.task_id, OLD.map_index, OLD.key), OLD.kafka_partition,
        OLD.kafka_offset, 0, OLD.try_number, OLD.timestamp, xcombus_name_id(OLD.producer), NULL,
        length(OLD.value), xcombus_content_hash(OLD.value), 0
        WHERE NOT EXISTS (SELECT 1 FROM xcom_version WHERE kafka_partition = OLD.kafka_partition
            AND kafka_offset = OLD.kafka_offset
            AND ident = xcombus_ident(OLD.dag_id, OLD.run_id, OLD.task_id, OLD.map_index, OLD.key));
END;
""".replace("VERSION_COLUMNS", VERSION_COLUMNS)
#: Index the current row of one XCom ``(dag_id, run_id, task_id, map_index, key)`` as the push
#: it was, before an update replaces it (see :data:`_TRIGGERS`); with its producer's name.
_INDEX_ROW = f"""
INSERT OR IGNORE INTO xcom_version ({VERSION_COLUMNS}) SELECT
    xcombus_ident(dag_id, run_id, task_id, map_index, key), kafka_partition, kafka_offset, 0, try_number,
    timestamp, xcombus_name_id(producer), NULL, length(value), xcombus_content_hash(value), 0
FROM xcom WHERE dag_id=? AND run_id=? AND task_id=? AND map_index=? AND key=?
"""
_INDEX_ROW_NAME = ("INSERT OR IGNORE INTO name (id, name) SELECT xcombus_name_id(producer), producer "
                   "FROM xcom WHERE dag_id=? AND run_id=? AND task_id=? AND map_index=? AND key=?")
#: A step's rows go in with this first: the new XComs (most) are written, the others are
#: left to :meth:`ViewStore._replace`, which indexes the row each one replaces.
_INSERT_NEW = f"""
INSERT INTO xcom ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,NULLIF(?, ''),?,?,?,?)
ON CONFLICT (dag_id, run_id, task_id, map_index, key) DO NOTHING
"""
_TRY = ("INSERT INTO ti_try (dag_id, run_id, task_id, map_index, try_number) VALUES (?,?,?,?,?) "
        "ON CONFLICT DO UPDATE SET try_number=excluded.try_number")
_RUN = """
INSERT INTO dag_run (dag_id, run_id, logical_date) VALUES (?,?,?)
ON CONFLICT (dag_id, run_id) DO UPDATE SET logical_date=excluded.logical_date
"""
#: A retried run the view does not know yet; a known one keeps the date of its newer events.
_RUN_IF_NEW = "INSERT OR IGNORE INTO dag_run (dag_id, run_id, logical_date) VALUES (?,?,?)"
_CLEAR = "DELETE FROM xcom WHERE dag_id=? AND run_id=? AND task_id=? AND map_index=?"
_GUARDED_CLEAR = f"{_CLEAR} AND kafka_partition=? AND kafka_offset<?"
_CLEAR_MARK = ("INSERT OR REPLACE INTO ti_clear (dag_id, run_id, task_id, map_index, kafka_partition, "
               "kafka_offset) VALUES (?,?,?,?,?,?)")
_GUARDED_CLEAR_MARK = """
INSERT INTO ti_clear VALUES (?,?,?,?,?,?) ON CONFLICT DO UPDATE SET
    kafka_partition=excluded.kafka_partition, kafka_offset=excluded.kafka_offset
WHERE ti_clear.kafka_partition != excluded.kafka_partition OR ti_clear.kafka_offset < excluded.kafka_offset
"""
_DEAD = ("INSERT OR REPLACE INTO dead_letter (kafka_partition, kafka_offset, message_key, "
         "message_value, reason, kafka_timestamp) VALUES (?,?,?,?,?,?)")
#: Move a partition's next offset and count the events the batch consumed there.
ADVANCE_OFFSET = """
INSERT INTO offsets (kafka_partition, next_offset, applied_events) VALUES (?,?,?)
ON CONFLICT (kafka_partition) DO UPDATE SET
    next_offset=excluded.next_offset,
    applied_events=offsets.applied_events + excluded.applied_events
"""
_SELECT_TI = f"SELECT {COLUMNS} FROM xcom WHERE dag_id=? AND run_id=? AND task_id=? AND map_index=?"
_SELECT_ROW = f"{_SELECT_TI} AND key=?"
_SELECT_CLEARED = f"{_SELECT_TI} AND kafka_partition=? AND kafka_offset<?"
_STILL_REFERENCED = ("SELECT 1 FROM xcom WHERE dag_id=? AND run_id=? AND task_id=? AND map_index=? "
                     "AND key=? AND value=?")

#: Rows per encoded chunk of a batch (the writer child decodes and writes one at a time).
_CHUNK_ROWS = 1_000
#: Row-value ``IN`` lists stay within SQLite's parameter limit.
_KEYS_PER_QUERY = 500

_encode = msgspec.msgpack.Encoder().encode
#: A chunk of rows decoded as ``sqlite3`` binds them fastest: values as bytearrays (bytes
#: would go through the adapter lookup, see :data:`UPSERT`).
_WireRow: TypeAlias = tuple[str, str, str, int, str, bytearray, str, int, int | str | None, str, int, int,
                            int]
_decode_rows = msgspec.msgpack.Decoder(list[_WireRow]).decode
#: A chunk of :data:`VersionRow` s, the hash as a bytearray for the same reason.
_WireVersion: TypeAlias = tuple[int, int, int, int, int, int, int, int | None, int | None, bytearray | None,
                                int]
_decode_versions = msgspec.msgpack.Decoder(list[_WireVersion]).decode


class DeadLetter(NamedTuple):
    """An event that could not be applied, kept with its position and the reason."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    timestamp: int | None


def row_record(row: Row) -> XComRecord:
    """A :class:`ViewBatch` row as the record a read would return (logical date ``""`` → None)."""
    date = row[8]
    return XComRecord(*row[:8], date if isinstance(date, int) else None, *row[9:])


class ViewBatch:
    """What one transaction writes: one or more *steps* (this batch, then ``then``, ...),
    then the runs, dead letters and offsets (kept on the first).

    A step is applied whole before the next: per task instance, the pushes and clears it
    applies all have the one try its ``tis`` row names, which the writer compares with the
    stored try (older: the task instance's events of the step are fenced; newer: its rows go
    first). An override is a step by itself. A log without retries or overrides folds into
    one step.
    """

    __slots__ = ("clears", "dead", "events", "held", "names", "offsets", "override", "probes", "repeated",
                 "runs", "superseded", "then", "tis", "upserts", "versions")

    def __init__(self) -> None:
        #: Clears to apply, in log order.
        self.clears: list[ClearRow] = []
        #: At most one row per XCom (the batch is folded); :func:`row_record` reads one.
        self.upserts: list[Row] = []
        self.runs: list[RunRow] = []
        self.dead: list[DeadLetter] = []
        #: partition -> next offset to apply.
        self.offsets: dict[int, int] = {}
        #: partition -> events consumed by this batch (applied or dead-lettered).
        self.events: dict[int, int] = {}
        #: Rows replaced or cleared within the batch itself (only collected for backends
        #: that purge external payloads).
        self.superseded: list[Row] = []
        #: The task instances with pushes or clears in this step, with their try.
        self.tis: list[TryRow] = []
        #: The version index rows of the step's pushes and clears, in log order.
        self.versions: list[VersionRow] = []
        #: Pushes that repeat the step's current row of their XCom (re-sends): indexed only
        #: if their task instance turns out fenced (then nothing was a current row).
        self.held: list[HeldRow] = []
        #: First pushes of an XCom in the step that the step superseded (see ProbeRow).
        self.probes: list[ProbeRow] = []
        #: ``(partition, offset)`` of the upserts that are not their XCom's first push in the
        #: step (a re-send is judged against the stored row only for first pushes).
        self.repeated: list[tuple[int, int]] = []
        #: ``(name_id, name)`` of the step's producers.
        self.names: list[tuple[int, str]] = []
        #: The step is this one override (and nothing else).
        self.override: OverrideRow | None = None
        #: The next step, applied after this one in the same transaction.
        self.then: ViewBatch | None = None

    def steps(self) -> list[ViewBatch]:
        """This step and every later one, in order."""
        out: list[ViewBatch] = []
        step: ViewBatch | None = self
        while step is not None:
            out.append(step)
            step = step.then
        return out


class EncodedStep(NamedTuple):
    """A step after the first, as the writer child receives it (see :class:`ViewBatch`)."""

    clears: list[ClearRow]
    #: The rows, sorted by primary key, as MessagePack-encoded chunks.
    chunks: list[bytes]
    tis: list[TryRow]
    #: The version rows, sorted by the index's key, as encoded chunks.
    versions: list[bytes]
    held: list[HeldRow]
    probes: list[ProbeRow]
    repeated: list[tuple[int, int]]
    names: list[tuple[int, str]]
    override: OverrideRow | None


class EncodedBatch(NamedTuple):
    """A batch as the writer child receives it (MessagePack-able, see :func:`encode_batch`):
    the first step's fields as in :class:`EncodedStep`, then the later steps."""

    clears: list[ClearRow]
    #: The rows, sorted by primary key, as MessagePack-encoded chunks.
    chunks: list[bytes]
    runs: list[RunRow]
    dead: list[DeadLetter]
    #: ``(partition, next offset, events consumed)``.
    offsets: list[tuple[int, int, int]]
    #: Return the stored rows the batch replaces or clears (for backends that purge).
    collect_replaced: bool
    tis: list[TryRow]
    versions: list[bytes]
    held: list[HeldRow]
    probes: list[ProbeRow]
    repeated: list[tuple[int, int]]
    names: list[tuple[int, str]]
    override: OverrideRow | None
    later: list[EncodedStep]

    def steps(self) -> list[EncodedStep]:
        """Every step, the first one included, in order."""
        first = EncodedStep(self.clears, self.chunks, self.tis, self.versions, self.held, self.probes,
                            self.repeated, self.names, self.override)
        return [first, *(EncodedStep(*step) for step in self.later)]


def _chunked(rows: list[Any]) -> list[bytes]:
    return [_encode(rows[i:i + _CHUNK_ROWS]) for i in range(0, len(rows), _CHUNK_ROWS)]


def _encode_step(step: ViewBatch) -> EncodedStep:
    # Both sorted by their primary key, so SQLite walks its B-trees forward instead of
    # jumping. Versions by ident alone (comparing whole tuples costs three times more): the
    # sort is stable and an ident's events are in one partition, in log order already.
    return EncodedStep(step.clears, _chunked(sorted(step.upserts)), step.tis,
                       _chunked(sorted(step.versions, key=_ident)), step.held, step.probes, step.repeated,
                       step.names, step.override)


_ident = operator.itemgetter(0)


def encode_batch(batch: ViewBatch, *, collect_replaced: bool = False) -> EncodedBatch:
    """Sort and encode a folded batch for :meth:`ViewStore.write_encoded` (in another process).

    The rows go in separately encoded chunks, so the writer holds one chunk's objects at a
    time, not the whole batch's; sorted by primary key, so SQLite walks its B-tree forward
    instead of jumping (the keys of a folded batch are distinct).
    """
    first, *later = [_encode_step(step) for step in batch.steps()]
    return EncodedBatch(first.clears, first.chunks, batch.runs, batch.dead, _offset_rows(batch),
                        collect_replaced, first.tis, first.versions, first.held, first.probes, first.repeated,
                        first.names, first.override, later)


def _offset_rows(batch: ViewBatch) -> list[tuple[int, int, int]]:
    return [(p, o, batch.events.get(p, 0)) for p, o in batch.offsets.items()]


def write_error(path: str | os.PathLike[str], exc: BaseException) -> XComViewError:
    """The error of a write that failed: nothing of the batch applied, and what to do."""
    return XComViewError(
        f"writing the view at {path} failed ({exc}); nothing of this batch was applied and its "
        "offsets did not advance: fix the cause (disk full? read-only file?) and restart the "
        "materializer")


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


def _meta(db: sqlite3.Connection) -> dict[str, str]:
    if db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone() is None:
        return {}
    return dict(db.execute("SELECT name, value FROM meta").fetchall())


def ensure_schema(db: sqlite3.Connection, path: str | os.PathLike[str], topic: str) -> None:
    """Make ``db`` a writable view of ``topic``: WAL, the schema created or upgraded in
    place, topic and version checked. Raises XComViewError (or sqlite3.Error).

    An upgrade runs in one transaction *before* the current schema is created, so readers
    see the old layout or the new one, never a half-filled new table.
    """
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=5000")
    meta = _meta(db)
    # An older file goes through every upgrade from its version on (1 -> 2 -> 3), all in
    # one transaction.
    migration, version = "", meta.get("schema_version", "")
    while version in _MIGRATIONS:
        migration += _MIGRATIONS[version]
        version = str(int(version) + 1)
    if migration and meta.get("topic") == topic:
        try:
            db.executescript(f"BEGIN IMMEDIATE; {migration} COMMIT;")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    db.executescript(SCHEMA)
    # A new file indexes every event from offset 0; an upgraded one says 'partial' already.
    db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?), ('topic', ?), "
               "('version_index', 'complete')", (str(SCHEMA_VERSION), topic))
    meta = _meta(db)
    if meta.get("topic") != topic:
        raise XComViewError(f"{path} is a view of topic {meta.get('topic')!r}, not {topic!r}: "
                            "use another XCOMBUS_VIEW_PATH")
    if meta.get("schema_version") != str(SCHEMA_VERSION):
        raise XComViewError(f"{path} has view schema {meta.get('schema_version')}, this xcombus "
                            f"writes {SCHEMA_VERSION}: rebuild the view into a new file")


def _register(db: sqlite3.Connection) -> None:
    """The functions and TEMP triggers that index a row when it leaves ``xcom`` (:data:`_TRIGGERS`)."""
    db.create_function("xcombus_ident", 5, lambda d, r, t, m, k: version_ident(ti_ident(d, r, t, m), k),
                       deterministic=True)
    db.create_function("xcombus_name_id", 1, name_id, deterministic=True)
    db.create_function("xcombus_content_hash", 1, content_hash, deterministic=True)
    db.executescript(_TRIGGERS)


class RetryOutcome(NamedTuple):
    """What :meth:`ViewStore.retry` did."""

    #: Retried events that changed the view (pushes written, clears applied).
    applied: int
    #: Stored values no row refers to any more (empty unless asked to collect them).
    unreferenced: list[XComRecord]


_Chunk = TypeVar("_Chunk")
_VChunk = TypeVar("_VChunk")


class _Step(NamedTuple, Generic[_Chunk, _VChunk]):
    """One step of a batch as the transaction reads it, direct or encoded (its rows and
    version rows come in chunks, turned into sequences by ``rows_of`` / ``versions_of``)."""

    clears: Sequence[Sequence[Any]]
    chunks: Sequence[_Chunk]
    rows_of: Callable[[_Chunk], Sequence[Sequence[Any]]]
    tis: Sequence[Sequence[Any]]
    versions: Sequence[_VChunk]
    versions_of: Callable[[_VChunk], Sequence[Sequence[Any]]]
    held: Sequence[Sequence[Any]]
    probes: Sequence[Sequence[Any]]
    repeated: Sequence[Sequence[int]]
    names: Sequence[Sequence[Any]]
    override: Sequence[Any] | None


class _Tries:
    """The current try of task instances during one transaction: read from ``ti_try`` once
    (absent: 1), then kept here as the steps raise them; :meth:`write` stores the raised ones."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._known: dict[tuple[object, ...], int] = {}
        self._raised: dict[tuple[object, ...], int] = {}
        self._none_stored: bool | None = None

    def all_at_one(self) -> bool:
        """True while every task instance is at try 1: none stored above it, none raised in
        this transaction (a log without retries: then a step of try-1 events needs no read)."""
        if self._none_stored is None:
            self._none_stored = self._db.execute("SELECT 1 FROM ti_try LIMIT 1").fetchone() is None
        return self._none_stored and not self._raised and not any(t > 1 for t in self._known.values())

    def of(self, tis: Sequence[tuple[object, ...]]) -> dict[tuple[object, ...], int]:
        """task instance -> its current try, for each of ``tis``."""
        known = self._known
        missing = list({ti: None for ti in tis if ti not in known})
        for i in range(0, len(missing), _KEYS_PER_QUERY):
            some = missing[i:i + _KEYS_PER_QUERY]
            query = ("SELECT dag_id, run_id, task_id, map_index, try_number FROM ti_try WHERE (dag_id, "
                     f"run_id, task_id, map_index) IN (VALUES {','.join(['(?,?,?,?)'] * len(some))})")
            for *stored, try_number in self._db.execute(query, [v for ti in some for v in ti]):
                known[tuple(stored)] = try_number
            for ti in some:
                known.setdefault(ti, 1)
        return {ti: known[ti] for ti in tis}

    def raise_to(self, ti: tuple[object, ...], try_number: int) -> None:
        """The task instance's current try is now ``try_number`` (higher than it was)."""
        self._known[ti] = self._raised[ti] = try_number

    def write(self) -> None:
        """Store the raised tries (a try of 1 is the default and needs no row)."""
        raised = [(*ti, t) for ti, t in self._raised.items() if t > 1]
        if raised:
            self._db.executemany(_TRY, raised)
        self._raised.clear()


class ViewStore:
    """An open view file and the transactions that write it (synchronous; one per file).

    :meth:`open` it (which takes the file's writer lock unless the caller holds it), then
    :meth:`write` folded batches; :meth:`close` releases both. Safe to call from one
    thread at a time, whichever thread that is.
    """

    def __init__(self, db: sqlite3.Connection, path: Path, lock_fd: int | None) -> None:
        """Use :meth:`open`."""
        self.path = path
        self._db = db
        self._lock_fd = lock_fd

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, topic: str, lock: bool = True) -> ViewStore:
        """Open (create, upgrade, check) the view file of ``topic`` for writing.

        With ``lock``, take the writer lock first (XComViewLockedError if another process
        has it); without, the caller holds it (the writer child inherits its parent's).
        """
        resolved = Path(path).resolve()
        lock_fd = acquire_write_lock(resolved) if lock else None
        try:
            try:
                db = sqlite3.connect(resolved, isolation_level=None, check_same_thread=False)
            except sqlite3.Error as exc:
                raise XComViewError(f"cannot open the view at {resolved}: {exc}") from exc
            try:
                ensure_schema(db, resolved, topic)
                _register(db)
            except BaseException as exc:
                db.close()
                if isinstance(exc, sqlite3.Error):
                    raise XComViewError(f"cannot open the view at {resolved}: {exc}") from exc
                raise
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        return cls(db, resolved, lock_fd)

    def __enter__(self) -> ViewStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the batch transaction (invariant 4) ----------------------------------------------

    def write(self, batch: ViewBatch, *, collect_replaced: bool = False) -> list[XComRecord]:
        """Write a folded batch and its offsets in one transaction (all or nothing).

        With ``collect_replaced``, return the stored rows this batch overwrote or deleted
        (for backends that purge external payloads once the transaction committed).
        Raises XComViewError: then nothing of the batch was applied.
        """
        steps = [_Step(s.clears, [s.upserts], _same, s.tis, [s.versions], _same, s.held, s.probes, s.repeated,
                       s.names, s.override) for s in batch.steps()]
        return self._transaction(steps, batch.runs, batch.dead, _offset_rows(batch), collect_replaced)

    def write_encoded(self, batch: EncodedBatch) -> list[XComRecord]:
        """:meth:`write` for a batch from :func:`encode_batch`: its chunks are decoded one
        at a time within the transaction, so memory holds one chunk's rows."""
        steps = [_Step(s.clears, s.chunks, _decode_rows, s.tis, s.versions, _decode_versions, s.held,
                       s.probes, s.repeated, s.names, s.override) for s in batch.steps()]
        return self._transaction(steps, batch.runs, batch.dead, batch.offsets, batch.collect_replaced)

    def _transaction(self, steps: Sequence[_Step[Any, Any]], runs: Sequence[RunRow],
                     dead: Sequence[DeadLetter], offsets: Sequence[tuple[int, int, int]],
                     collect_replaced: bool) -> list[XComRecord]:
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                replaced: list[XComRecord] | None = [] if collect_replaced else None
                tries = _Tries(db)
                for step in steps:
                    if step.override is not None:
                        self._override(step.override, tries, replaced)
                    else:
                        self._step(step, tries, replaced)
                if runs:
                    db.executemany(_RUN, runs)
                if dead:
                    db.executemany(_DEAD, dead)
                db.executemany(ADVANCE_OFFSET, offsets)
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
        # An integer beyond SQLite's 64 bits is an OverflowError, not an sqlite3.Error.
        except (sqlite3.Error, OverflowError) as exc:
            raise write_error(self.path, exc) from exc
        return replaced or []

    def _step(self, step: _Step[_Chunk, _VChunk], tries: _Tries, replaced: list[XComRecord] | None) -> None:
        """Apply one step of pushes and clears (inside the batch's transaction)."""
        db = self._db
        # Each task instance's try in the step against its stored one: older, its events of
        # the step are fenced; newer, its rows (all of older tries) go first.
        fenced: set[int] = set()
        fenced_tis: set[tuple[object, ...]] = set()
        newer: list[tuple[object, ...]] = []
        judged = step.tis
        if tries.all_at_one() and all(ti[4] == 1 for ti in judged):
            judged = []  # every try is 1, stored and here: nothing is fenced or newer
        current = tries.of([tuple(ti[:4]) for ti in judged])
        for pos, ti in enumerate(judged):
            key, step_try = tuple(ti[:4]), ti[4]
            if step_try < current[key]:
                fenced.add(pos)
                fenced_tis.add(key)
            elif step_try > current[key]:
                newer.append(key)
                tries.raise_to(key, step_try)
        # Re-sends among the first pushes the step superseded, judged against the rows as
        # they are before the step (a task instance starting a newer try has none then).
        resent: set[tuple[int, int]] = set()
        if step.probes:
            newer_tis = set(newer)
            for pos, key_, partition, offset, producer, try_number, codec, digest in step.probes:
                ti = tuple(step.tis[pos][:4])
                if pos in fenced or ti in newer_tis:
                    continue
                row = db.execute(_SELECT_ROW, (*ti, key_)).fetchone()
                if row is not None and row[9] == producer and row[10] == try_number and \
                        row[6] == codec and content_hash(row[5]) == digest:
                    resent.add((partition, offset))
        clears = [c for c in step.clears if tuple(c[:4]) not in fenced_tis] if fenced_tis else step.clears
        repeated = {tuple(r) for r in step.repeated}
        if replaced is not None:
            keys = [row[:5] for chunk in step.chunks for row in step.rows_of(chunk)
                    if tuple(row[:4]) not in fenced_tis]
            replaced.extend(self._existing([*newer, *(c[:4] for c in clears)], keys))
        if newer:
            db.executemany(_CLEAR, newer)
        if clears:
            db.executemany(_CLEAR, [c[:4] for c in clears])
            db.executemany(_CLEAR_MARK, clears)
        fenced_rows: list[Sequence[Any]] = []
        for chunk in step.chunks:
            rows = step.rows_of(chunk)
            if fenced_tis:
                fenced_rows += [row for row in rows if tuple(row[:4]) in fenced_tis]
                rows = [row for row in rows if tuple(row[:4]) not in fenced_tis]
            before = db.total_changes
            db.executemany(_INSERT_NEW, rows)
            if db.total_changes - before < len(rows):  # some XComs have a row already
                resent |= self._replace(rows, repeated)
        if step.names:
            db.executemany(_NAME, step.names)
        # The version rows of fenced task instances' events, by position.
        fenced_at = {(step.tis[pos][5], offset) for pos in fenced for offset in step.tis[pos][6]}
        for vchunk in step.versions:
            versions = step.versions_of(vchunk)
            if fenced_at or resent:
                versions = [(*v[:10], 1) if (v[1], v[2]) in fenced_at else v for v in versions
                            if (v[1], v[2]) not in resent]
            db.executemany(_VERSION, versions)
        if fenced and step.held:
            db.executemany(_VERSION, [(*v[:10], 1) for v in step.held if v[11] in fenced])
        if fenced_rows:  # the last pushes of fenced task instances: never rows, so indexed here
            db.executemany(_NAME, {(name_id(row[9]), row[9]) for row in fenced_rows})
            db.executemany(_VERSION, [
                (version_ident(ti_ident(*row[:4]), row[4]), row[11], row[12], KIND_PUSH, row[10], row[7],
                 name_id(row[9]), None, len(row[5]), content_hash(row[5]), 1) for row in fenced_rows])
        tries.write()

    def _override(self, op: Sequence[Any], tries: _Tries, replaced: list[XComRecord] | None) -> None:
        """Apply one override: set (the row takes the current try) or delete one XCom."""
        dag_id, run_id, task_id, map_index, key, value, codec, ts, producer, actor, partition, offset = op
        ti = (dag_id, run_id, task_id, map_index)
        current = tries.of([ti])[ti]
        if replaced is not None:
            replaced.extend(self._existing([], [(*ti, key)]))
        if value is None:
            self._db.execute(_DELETE_ROW, (*ti, key))
        else:
            self._db.execute(_INDEX_ROW_NAME, (*ti, key))
            self._db.execute(_INDEX_ROW, (*ti, key))
            self._db.execute(_OVERRIDE_UPSERT, (*ti, key, value, codec, ts, producer, current, partition,
                                                offset))
        self._db.executemany(_NAME, [(name_id(producer), producer), (name_id(actor), actor)])
        self._db.execute(_VERSION, (version_ident(ti_ident(*ti), key), partition, offset, KIND_OVERRIDE,
                                    current, ts, name_id(producer), name_id(actor),
                                    None if value is None else len(value),
                                    None if value is None else content_hash(value), 0))

    def _replace(self, rows: Sequence[Sequence[Any]], repeated: set[tuple[Any, ...]]) -> set[tuple[int, int]]:
        """Write the ``rows`` that :data:`_INSERT_NEW` left out (their XCom has a row): each
        replaced row is indexed first, except that a first write of the step repeating the
        stored row is a re-send (no version, the row kept). Returns the re-sends' positions."""
        db = self._db
        stored: dict[tuple[Any, ...], Sequence[Any]] = {}
        for i in range(0, len(rows), _KEYS_PER_QUERY):
            some = rows[i:i + _KEYS_PER_QUERY]
            query = (f"SELECT {COLUMNS} FROM xcom WHERE (dag_id, run_id, task_id, map_index, key) "
                     f"IN (VALUES {','.join(['(?,?,?,?,?)'] * len(some))})")
            for old in db.execute(query, [v for row in some for v in row[:5]]):
                stored[tuple(old[:5])] = old
        resent: set[tuple[int, int]] = set()
        replace = []
        for row in rows:
            old = stored.get(tuple(row[:5]))
            if old is None or (old[11], old[12]) == (row[11], row[12]):
                continue  # written just now
            if (row[11], row[12]) not in repeated and (old[9], old[10], old[6], old[5]) == (
                    row[9], row[10], row[6], row[5]):
                resent.add((row[11], row[12]))
                continue
            replace.append(row)
        keys = [row[:5] for row in replace]
        db.executemany(_INDEX_ROW_NAME, keys)
        db.executemany(_INDEX_ROW, keys)
        db.executemany(UPSERT, replace)
        return resent

    def _existing(self, clears: Sequence[Sequence[object]],
                  keys: Sequence[Sequence[object]]) -> list[XComRecord]:
        """Stored rows that the batch's clears (task instances) delete or its upserts
        (``keys``) overwrite."""
        found: dict[tuple[object, ...], XComRecord] = {}
        for clear in clears:
            for row in self._db.execute(_SELECT_TI, tuple(clear[:4])):
                found[tuple(row[:5])] = XComRecord._make(row)
        for i in range(0, len(keys), _KEYS_PER_QUERY):
            some = keys[i:i + _KEYS_PER_QUERY]
            query = (f"SELECT {COLUMNS} FROM xcom WHERE (dag_id, run_id, task_id, map_index, key) "
                     f"IN (VALUES {','.join(['(?,?,?,?,?)'] * len(some))})")
            for row in self._db.execute(query, [v for key in some for v in key]):
                found[tuple(row[:5])] = XComRecord._make(row)
        return list(found.values())

    # -- the dead-letter retry --------------------------------------------------------------

    def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter, by partition and offset."""
        return [DeadLetter(*row) for row in self._db.execute(
            "SELECT kafka_partition, kafka_offset, message_key, message_value, reason, kafka_timestamp "
            "FROM dead_letter ORDER BY kafka_partition, kafka_offset")]

    def retry(self, batch: ViewBatch, retried: Iterable[tuple[int, int]], *,
              collect_unreferenced: bool = False) -> RetryOutcome:
        """Apply a batch folded from dead letters, **without undoing anything newer**, in
        one transaction: a push is written only if no later push of the same XCom and no
        later clear of its task instance is in the view; a clear deletes only rows older
        than itself; a push or clear of an older try than the task instance's stored one is
        not applied (fenced). ``retried``: the ``(partition, offset)`` of every dead letter
        folded; those not in ``batch.dead`` leave the table, the others keep it with the new
        reason. Overrides stay dead letters (a rebuild applies them in log order). The version
        index lists every retried push and clear as the retry decided it (fenced: older than
        the stored try); a rebuild, which has the log order, can judge one differently (a
        push of a try the log shows current at the time is a replaced version there).

        With ``collect_unreferenced``, also return the stored values nothing refers to once
        this committed: rows a retried push replaced or a retried clear deleted, and
        retried pushes something newer already decided.
        """
        db, collect = self._db, collect_unreferenced
        still = {(d.partition, d.offset): d.reason for d in batch.dead}
        unreferenced = [row_record(row) for row in batch.superseded]
        applied = 0
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                tries = _Tries(db)
                for step in batch.steps():
                    if step.override is not None:  # needs the log order around it: only a rebuild has it
                        still[(step.override[10], step.override[11])] = (
                            "an override is not applied by a dead-letter retry: rebuild the view "
                            "(xcombus rebuild --swap) to apply it")
                        continue
                    current = tries.of([ti[:4] for ti in step.tis])
                    # A retried push or clear of an older try than the stored one is fenced.
                    fenced = {ti[:4] for ti in step.tis if ti[4] < current[ti[:4]]}
                    # Indexed like any event (INSERT OR IGNORE: a retry may run twice): the
                    # step's clears and superseded pushes, fenced ones marked.
                    fenced_pos = {pos for pos, ti in enumerate(step.tis) if ti[:4] in fenced}
                    fenced_at = {(step.tis[pos][5], off) for pos in fenced_pos for off in step.tis[pos][6]}
                    db.executemany(_NAME, step.names)
                    db.executemany(_VERSION_IF_NEW, [(*v[:10], 1) if (v[1], v[2]) in fenced_at else v
                                                     for v in step.versions])
                    db.executemany(_VERSION_IF_NEW, [(*v[:10], 1) for v in step.held if v[11] in fenced_pos])
                    for row in step.upserts:
                        partition, offset = row[11], row[12]
                        cleared = db.execute("SELECT kafka_partition, kafka_offset FROM ti_clear WHERE "
                                             "dag_id=? AND run_id=? AND task_id=? AND map_index=?",
                                             row[:4]).fetchone()
                        before = db.execute(_SELECT_ROW, row[:5]).fetchall() if collect else []
                        done = 0
                        if row[:4] not in fenced and not (cleared and cleared[0] == partition
                                                          and cleared[1] > offset):
                            older = db.execute("SELECT 1 FROM xcom WHERE dag_id=? AND run_id=? AND task_id=? "
                                               "AND map_index=? AND key=? AND kafka_partition=? AND "
                                               "kafka_offset<?", (*row[:5], partition, offset)).fetchone()
                            if older is not None:  # the row it replaces becomes an index entry
                                db.execute(_INDEX_ROW_NAME, row[:5])
                                db.execute(_INDEX_ROW, row[:5])
                            done = db.execute(_GUARDED_UPSERT, row).rowcount
                        if not done:  # a version all the same: never current, so indexed now
                            db.execute(_NAME, (name_id(row[9]), row[9]))
                            db.execute(_VERSION_IF_NEW, (
                                version_ident(ti_ident(*row[:4]), row[4]), partition, offset, KIND_PUSH,
                                row[10], row[7], name_id(row[9]), None, len(row[5]), content_hash(row[5]),
                                1 if row[:4] in fenced else 0))
                        applied += done
                        if collect:  # the row it replaced, or the retried push itself when not applied
                            unreferenced.extend(map(XComRecord._make, before) if done else [row_record(row)])
                    for clear in step.clears:
                        if clear[:4] in fenced:
                            continue
                        if collect:
                            unreferenced.extend(map(XComRecord._make, db.execute(_SELECT_CLEARED, clear)))
                        db.execute(_GUARDED_CLEAR, clear)
                        db.execute(_GUARDED_CLEAR_MARK, clear)
                        applied += 1
                db.executemany(_RUN_IF_NEW, batch.runs)
                db.executemany("DELETE FROM dead_letter WHERE kafka_partition=? AND kafka_offset=?",
                               [pos for pos in retried if pos not in still])
                db.executemany("UPDATE dead_letter SET reason=? WHERE kafka_partition=? AND kafka_offset=?",
                               [(reason, p, o) for (p, o), reason in still.items()])
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
            # A payload is freed only when no row of the view refers to it any more: a
            # duplicate of an event (same reference) may be the row that stays.
            unreferenced = [rec for rec in unreferenced if collect and db.execute(
                _STILL_REFERENCED, (*rec[:5], rec.value)).fetchone() is None]
        except (sqlite3.Error, OverflowError) as exc:
            raise XComViewError(f"retrying the dead letters of {self.path} failed ({exc}); none was "
                                "applied: fix the cause and retry") from exc
        return RetryOutcome(applied, unreferenced)

    # -- reads and bulk loads -----------------------------------------------------------------

    def offsets(self) -> dict[int, int]:
        """partition -> next offset to apply, as committed."""
        return dict(self._db.execute("SELECT kafka_partition, next_offset FROM offsets").fetchall())

    def begin_bulk_load(self) -> None:
        """A load into a fresh file: nothing to lose yet (no fsync); secondary indexes at the end."""
        self._db.execute("PRAGMA synchronous=OFF")
        for name in _SECONDARY_INDEXES:
            self._db.execute(f"DROP INDEX IF EXISTS {name}")

    def end_bulk_load(self) -> int:
        """Build the secondary indexes, restore durability, checkpoint; return the row count."""
        self._db.executescript(SCHEMA)  # IF NOT EXISTS everywhere: only the indexes are new
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows: int = self._db.execute("SELECT count(*) FROM xcom").fetchone()[0]
        return rows

    def close(self) -> None:
        """Close the file and release the lock if this store took it. Idempotent."""
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)


def _same(rows: Sequence[Any]) -> Sequence[Any]:
    return rows


def replace_view(new: str | os.PathLike[str], live: str | os.PathLike[str]) -> None:
    """Replace the live view's content with another view file's, atomically for readers.

    SQLite's backup API writes the new pages into the live file inside one transaction,
    so readers in other processes see the old view or the new one, never a mix. Takes the
    live file's writer lock (XComViewLockedError while a materializer writes it), and
    refuses a view of another topic.
    """
    source, target = Path(new).resolve(), Path(live).resolve()
    if not source.exists():
        raise XComViewError(f"no view at {source}")
    fd = acquire_write_lock(target)
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
