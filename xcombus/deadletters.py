"""Dead letters: inspect them, and re-apply them after the cause was fixed.

An event is dead-lettered when it could not be applied (undecodable bytes, a key that is
not a task instance, a schema version or codec this reader did not know...). After a fix —
an upgrade, the right ``XCOMBUS_XCOM_BACKEND`` — :func:`retry_dead_letters` decodes them
again and applies those that now pass, **without ever undoing something newer**: a push is
applied only if no later push of the same XCom and no later clear of its task instance is
in the view; a clear deletes only rows older than itself. What still fails stays, with
the new reason.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

from .backends import BaseXCom, load_backend
from .materialize import fold, purge_records, purges
from .records import XComRecord
from .settings import Settings
from .view import _COLUMNS, ViewWriter, row_record

__all__ = ["RetrySummary", "retry_dead_letters"]

_GUARDED_UPSERT = """
INSERT INTO xcom (dag_id, run_id, task_id, map_index, key, value, codec, timestamp, logical_date,
                  producer, try_number, kafka_partition, kafka_offset)
VALUES (?,?,?,?,?,?,?,?,NULLIF(?, ''),?,?,?,?)
ON CONFLICT (dag_id, run_id, task_id, map_index, key) DO UPDATE SET
    value=excluded.value, codec=excluded.codec, timestamp=excluded.timestamp,
    logical_date=excluded.logical_date, producer=excluded.producer, try_number=excluded.try_number,
    kafka_partition=excluded.kafka_partition, kafka_offset=excluded.kafka_offset
WHERE xcom.kafka_partition = excluded.kafka_partition AND xcom.kafka_offset < excluded.kafka_offset
"""
_GUARDED_CLEAR = ("DELETE FROM xcom WHERE dag_id=? AND run_id=? AND task_id=? AND map_index=? "
                  "AND kafka_partition=? AND kafka_offset<?")
_SELECT_ROW = (f"SELECT {_COLUMNS} FROM xcom WHERE dag_id=? AND run_id=? AND task_id=? "
               "AND map_index=? AND key=?")
_SELECT_CLEARED = (f"SELECT {_COLUMNS} FROM xcom WHERE dag_id=? AND run_id=? AND task_id=? "
                   "AND map_index=? AND kafka_partition=? AND kafka_offset<?")
_STILL_REFERENCED = ("SELECT 1 FROM xcom WHERE dag_id=? AND run_id=? AND task_id=? AND map_index=? "
                     "AND key=? AND value=?")
_GUARDED_CLEAR_MARK = """
INSERT INTO ti_clear VALUES (?,?,?,?,?,?) ON CONFLICT DO UPDATE SET
    kafka_partition=excluded.kafka_partition, kafka_offset=excluded.kafka_offset
WHERE ti_clear.kafka_partition != excluded.kafka_partition OR ti_clear.kafka_offset < excluded.kafka_offset
"""


class _Rec(NamedTuple):
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None


class RetrySummary(msgspec.Struct, frozen=True):
    """What a retry did."""

    applied: int
    #: Valid now, but something newer (a later push or clear) already decided the view.
    superseded: int
    still_failing: int


async def retry_dead_letters(settings: Settings, *, backend: type[BaseXCom] | None = None) -> RetrySummary:
    """Re-apply dead letters that now decode; needs the view's write lock (stop the materializer)."""
    backend = backend or load_backend(settings)
    async with ViewWriter(settings.view_path, topic=settings.topic) as writer:
        db = writer.db
        rows = await db.execute_fetchall(
            "SELECT kafka_partition, kafka_offset, message_key, message_value, kafka_timestamp "
            "FROM dead_letter ORDER BY kafka_partition, kafka_offset")
        by_partition: dict[int, list[Any]] = {}
        for p, o, k, v, ts in rows:
            by_partition.setdefault(p, []).append(_Rec(o, k, v, ts))
        batch = fold(by_partition, {}, backend)
        positions = [(p, r.offset) for p, recs in by_partition.items() for r in recs]
        still = {(d.partition, d.offset): d.reason for d in batch.dead}
        applied = 0
        # Payloads (object storage) no row refers to once this commits: rows a retried push
        # replaces or a retried clear deletes, and retried pushes that something newer
        # already decided (they are not dead letters any more, so nothing would free them).
        track = purges(backend)
        unreferenced: list[XComRecord] = [row_record(row) for row in batch.superseded]
        await db.execute("BEGIN IMMEDIATE")
        try:
            for row in batch.upserts:
                ti, partition, offset = row[:4], row[11], row[12]
                cleared = await db.execute_fetchall(
                    "SELECT kafka_partition, kafka_offset FROM ti_clear WHERE dag_id=? AND run_id=? "
                    "AND task_id=? AND map_index=?", ti)
                before = await db.execute_fetchall(_SELECT_ROW, row[:5]) if track else []
                done = 0
                if not (cleared and cleared[0][0] == partition and cleared[0][1] > offset):
                    done = (await db.execute(_GUARDED_UPSERT, row)).rowcount
                applied += done
                if track:  # the row it replaced, or the retried push itself when not applied
                    unreferenced.extend(map(XComRecord._make, before) if done else [row_record(row)])
            # A run the view does not know yet; a known one keeps the date of its newer events.
            await db.executemany("INSERT OR IGNORE INTO dag_run (dag_id, run_id, logical_date) "
                                 "VALUES (?,?,?)", batch.runs)
            for clear in batch.clears:
                if track:
                    unreferenced.extend(map(XComRecord._make, await db.execute_fetchall(
                        _SELECT_CLEARED, clear)))
                await db.execute(_GUARDED_CLEAR, clear)
                await db.execute(_GUARDED_CLEAR_MARK, clear)
                applied += 1
            await db.executemany("DELETE FROM dead_letter WHERE kafka_partition=? AND kafka_offset=?",
                                 [pos for pos in positions if pos not in still])
            await db.executemany("UPDATE dead_letter SET reason=? WHERE kafka_partition=? AND kafka_offset=?",
                                 [(reason, p, o) for (p, o), reason in still.items()])
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        # A payload is freed only when no row of the view refers to it any more: a duplicate
        # of an event (same reference) may be the row that stays.
        unreferenced = [rec for rec in unreferenced
                        if not await db.execute_fetchall(_STILL_REFERENCED, (*rec[:5], rec.value))]
    if track:
        await purge_records(backend, unreferenced)
    # Valid now but not applied: a later push or clear (in the view, or among these dead
    # letters themselves) already decided the outcome.
    superseded = len(positions) - len(still) - applied
    return RetrySummary(applied, superseded, len(still))
