"""View files from the log, and view files compared and swapped (invariant 1: the topic is
the source of truth, every view can be rebuilt from it and must then equal the live one).

- :func:`rebuild`: a fresh view folded from offset 0, up to the log's end, a set of
  offsets or a moment in time (a point-in-time view for audits), in bounded memory;
- :func:`verify`: two view files compared row for row, offsets first (read-only);
- :func:`swap`: a rebuilt view copied over the live file in one SQLite transaction.

Writes go through :mod:`xcombus.store`, like every write of a view file; the log is read
with :mod:`xcombus.audit` and folded with :mod:`xcombus.fold`, as the materializer does.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import msgspec

from .audit import end_offsets, offsets_at, read_log
from .backends import load_backend
from .errors import XComQueryError, XComViewError
from .fold import LogMessage, fold
from .settings import Settings
from .store import COLUMNS, replace_view
from .writer import ViewWriterProcess

__all__ = ["RebuildSummary", "VerifyResult", "rebuild", "swap", "verify"]


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
    (the messages appended up to that moment), or at the end offsets when it starts.
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
        until_offsets = await end_offsets(settings)
    total = sum(until_offsets.values())
    submitted: dict[int, int] = {}
    events = dead = 0
    # The writer process writes batch n while this process reads and folds batch n+1.
    async with ViewWriterProcess(path, topic=settings.topic) as writer:
        await writer.begin_bulk_load()  # a fresh file: no fsync, secondary indexes at the end
        async for batch in read_log(settings, sorted(until_offsets), until=until_offsets):
            by_partition: dict[int, list[LogMessage]] = {}
            for message in batch:
                by_partition.setdefault(message.partition, []).append(message)
            folded = fold(by_partition, submitted, backend)
            encoded = writer.encode(folded)  # while the previous batch commits
            for step in folded.steps():  # free the rows before waiting
                step.upserts = []
                step.versions = []
            await writer.submit(encoded)  # waits for the previous batch's commit first
            submitted.update(folded.offsets)
            events += sum(folded.events.values())
            dead += len(folded.dead)
            if on_progress is not None:
                on_progress(events, total)
        # Offsets reached without messages (control markers) still count as applied.
        folded_end = fold({}, submitted, backend)
        folded_end.offsets = {p: o for p, o in until_offsets.items() if o > submitted.get(p, 0)}
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
    #: Human-readable differences of the rows and offsets (at most ``limit``).
    differences: list[str]
    #: Human-readable differences of the version indexes and current tries (at most
    #: ``limit``; compared only when both indexes are complete).
    version_differences: list[str] = []


def verify(a: str | os.PathLike[str], b: str | os.PathLike[str], *, limit: int = 50) -> VerifyResult:
    """Compare two view files row for row (every column) and offset for offset, and their
    version indexes and current tries when both indexes are complete."""
    for p in (a, b):
        if not Path(p).exists():
            raise XComViewError(f"no view at {p}")
    db = sqlite3.connect(f"file:{Path(a).resolve()}?mode=ro", uri=True)
    try:
        db.execute("ATTACH DATABASE ? AS b", (f"file:{Path(b).resolve()}?mode=ro",))
        offsets_a = dict(db.execute("SELECT kafka_partition, next_offset FROM main.offsets").fetchall())
        offsets_b = dict(db.execute("SELECT kafka_partition, next_offset FROM b.offsets").fetchall())
        rows_a: int = db.execute("SELECT count(*) FROM main.xcom").fetchone()[0]
        rows_b: int = db.execute("SELECT count(*) FROM b.xcom").fetchone()[0]
        differences: list[str] = []
        if offsets_a != offsets_b:
            differences.append(f"offsets differ: {offsets_a} vs {offsets_b} (compare views at the "
                               "same offsets: rebuild --until-offsets)")
        for side, (x, y) in (("only in A", ("main", "b")), ("only in B", ("b", "main"))):
            for row in db.execute(f"SELECT {COLUMNS} FROM {x}.xcom EXCEPT SELECT {COLUMNS} FROM {y}.xcom "
                                  f"ORDER BY 1, 2, 3, 4, 5 LIMIT ?", (limit,)):
                differences.append(f"{side}: {row[0]}/{row[1]}/{row[2]}[{row[3]}] {row[4]!r} "
                                   f"at {row[11]}:{row[12]}")
        version_differences = _compare_versions(db, limit)
    except sqlite3.Error as exc:
        raise XComViewError(f"cannot compare {a} and {b}: {exc}") from exc
    finally:
        db.close()
    return VerifyResult(not differences and not version_differences, offsets_a, offsets_b, rows_a, rows_b,
                        differences[:limit], version_differences[:limit])


#: The version index with names instead of ids (ids number names in the order a view met
#: them, the same in any view of the same log, but compared by name all the same).
_VERSIONS = ("SELECT v.ident, v.kafka_partition, v.kafka_offset, v.kind, v.try_number, v.ts, p.name, a.name, "
             "v.size, v.hash8, v.fenced FROM {db}.xcom_version v JOIN {db}.name p ON p.id = v.producer_id "
             "LEFT JOIN {db}.name a ON a.id = v.actor_id")
_TRIES = "SELECT dag_id, run_id, task_id, map_index, try_number FROM {db}.ti_try"


def _compare_versions(db: sqlite3.Connection, limit: int) -> list[str]:
    """Differences between the two views' version indexes and current tries, when both
    views have a complete index (a view upgraded from schema 2 indexes only what came after)."""
    for name in ("main", "b"):
        has = db.execute(f"SELECT count(*) FROM {name}.sqlite_master WHERE name='xcom_version'").fetchone()[0]
        complete = has and db.execute(f"SELECT value FROM {name}.meta WHERE name='version_index'").fetchone()
        if not complete or complete[0] != "complete":
            return []
    differences: list[str] = []
    for side, (x, y) in (("only in A", ("main", "b")), ("only in B", ("b", "main"))):
        versions = f"{_VERSIONS.format(db=x)} EXCEPT {_VERSIONS.format(db=y)} ORDER BY 2, 3 LIMIT ?"
        for row in db.execute(versions, (limit,)):
            differences.append(f"{side}: version index row at {row[1]}:{row[2]} (kind {row[3]}, "
                               f"try {row[4]}, fenced {row[10]})")
        tries = f"{_TRIES.format(db=x)} EXCEPT {_TRIES.format(db=y)} ORDER BY 1, 2, 3, 4 LIMIT ?"
        for row in db.execute(tries, (limit,)):
            differences.append(f"{side}: {row[0]}/{row[1]}/{row[2]}[{row[3]}] at try {row[4]}")
    return differences


def swap(new: str | os.PathLike[str], live: str | os.PathLike[str]) -> None:
    """Replace the live view's content with a rebuilt one, atomically for readers.

    Readers in other processes see the old view or the new one, never a mix. The live
    view must have no materializer attached (it holds the write lock): stop it first.
    Raises XComViewLockedError while one runs, XComViewError if ``new`` folds another topic.
    """
    replace_view(new, live)
