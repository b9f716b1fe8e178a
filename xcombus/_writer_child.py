"""The view writer's child process: runs SQLite transactions sent by its parent.

This file is a script, started by :class:`xcombus.writer.ViewWriterProcess` as
``python -P <this file> CONN_FD PARENT_PID PATH`` (``-P``: its own folder is not put on
``sys.path``). It imports the standard library and msgspec only, never the xcombus
package: the package pulls in aiokafka, aiosqlite and the backends (≈ 34 MiB of resident
memory) that a process which only writes SQLite does not need. For the same reason it
holds no SQL of its own: the parent sends the statements of :mod:`xcombus.view` in its
``open`` request, so the schema has one source.

Protocol: request → answer, in order, MessagePack arrays over a socket pair (length-
prefixed frames of :class:`multiprocessing.connection.Connection`); rows are plain
strings, ints, bytes and None, never pickled objects.

- ``["open", sql]`` (``sql``: the statements by name) → ``["ok", None]``;
- ``["apply", clears, upserts, runs, dead, offsets, collect]`` → ``["ok", replaced rows]``, where
  ``upserts`` is a list of MessagePack-encoded chunks of rows (the child decodes one chunk
  at a time, within the batch's one transaction);
- ``["offsets"]`` → ``["ok", [[partition, next_offset], …]]``;
- ``["bulk_begin"]`` / ``["bulk_end"]`` (a load into a fresh file) → ``["ok", …]``;
- ``["close"]`` or EOF → the child closes the database and exits;
- any failure → ``["error", message]``, then the child exits: nothing may be applied on
  top of a batch that did not commit.

The writer lock's descriptor is inherited from the parent (``pass_fds``) and stays open,
so the lock is held until both processes have exited.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import sys
from multiprocessing.connection import Connection
from typing import Any

import msgspec

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode
#: A chunk of upsert rows (``view._COLUMNS`` order) as sqlite3 binds them fastest: it binds
#: an exact int, float, str or bytearray directly and looks for an adapter for anything
#: else, bytes included (≈ 20 % of the upsert's CPU with the NULL date, experiment_sqlite.py).
_decode_rows = msgspec.msgpack.Decoder(
    list[tuple[str, str, str, int, str, bytearray, str, int, int | str | None, str, int, int, int]]
).decode


class Refused(Exception):
    """A file or request this writer refuses; the text says why and what to do."""


def _failed(path: str, exc: BaseException) -> str:
    return (f"writing the view at {path} failed ({exc}); nothing of this batch was applied and "
            "its offsets did not advance: fix the cause (disk full? read-only file?) and restart "
            "the materializer")


def _meta(db: sqlite3.Connection) -> dict[str, str]:
    if db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone() is None:
        return {}
    return dict(db.execute("SELECT name, value FROM meta").fetchall())


def prepare(db: sqlite3.Connection, path: str, sql: dict[str, Any]) -> None:
    """Make ``db`` a writable view of ``sql["topic"]``: WAL, the schema created or upgraded
    in place, topic and version checked. Raises Refused (or sqlite3.Error).

    Shared by both writers (this child and :class:`xcombus.view.ViewWriter`). An upgrade
    runs in one transaction *before* the current schema is created, so readers see the
    old layout or the new one, never a half-filled new table.
    """
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=5000")
    meta = _meta(db)
    migration = sql["migrations"].get(meta.get("schema_version", ""))
    if migration is not None and meta.get("topic") == sql["topic"]:
        try:
            db.executescript(f"BEGIN IMMEDIATE; {migration} COMMIT;")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    db.executescript(sql["schema"])
    db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?), ('topic', ?)",
               (str(sql["schema_version"]), sql["topic"]))
    meta = _meta(db)
    if meta.get("topic") != sql["topic"]:
        raise Refused(f"{path} is a view of topic {meta.get('topic')!r}, not {sql['topic']!r}: "
                      "use another XCOMBUS_VIEW_PATH")
    if meta.get("schema_version") != str(sql["schema_version"]):
        raise Refused(f"{path} has view schema {meta.get('schema_version')}, this xcombus "
                      f"writes {sql['schema_version']}: rebuild the view into a new file")


class _Writer:
    """One open view and the statements to write it."""

    def __init__(self, path: str, sql: dict[str, Any]) -> None:
        self.path = path
        self.sql = sql
        try:
            db = sqlite3.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise Refused(f"cannot open the view at {path}: {exc}") from exc
        try:
            prepare(db, path, sql)
        except BaseException as exc:
            db.close()
            if isinstance(exc, sqlite3.Error):
                raise Refused(f"cannot open the view at {path}: {exc}") from exc
            raise
        self.db = db

    def apply(self, clears: list[Any], upserts: list[Any], runs: list[Any], dead: list[Any],
              offsets: list[Any], collect: bool) -> list[Any]:
        """One batch in one transaction (as ViewWriter.apply): all or nothing."""
        db, sql = self.db, self.sql
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                replaced = self._existing(clears, upserts) if collect else []
                if clears:
                    db.executemany(sql["clear"], [c[:4] for c in clears])
                    db.executemany(sql["clear_mark"], clears)
                for chunk in upserts:  # decoded one at a time: memory holds one chunk
                    db.executemany(sql["upsert"], _decode_rows(chunk))
                if runs:
                    db.executemany(sql["run"], runs)
                if dead:
                    db.executemany(sql["dead"], dead)
                db.executemany(sql["offset"], offsets)
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OverflowError) as exc:
            raise Refused(_failed(self.path, exc)) from exc
        return replaced

    def _existing(self, clears: list[Any], upserts: list[Any]) -> list[Any]:
        """Stored rows that the batch's clears delete or its upserts overwrite."""
        columns = self.sql["columns"]
        found: dict[tuple[Any, ...], Any] = {}
        for clear in clears:
            for row in self.db.execute(f"SELECT {columns} FROM xcom WHERE dag_id=? AND run_id=? "
                                       "AND task_id=? AND map_index=?", clear[:4]):
                found[tuple(row[:5])] = row
        keys = [row[:5] for chunk in upserts for row in _decode(chunk)]
        for i in range(0, len(keys), 500):  # row-value IN, within SQLite's parameter limit
            chunk = keys[i:i + 500]
            query = (f"SELECT {columns} FROM xcom WHERE (dag_id, run_id, task_id, map_index, key) "
                     f"IN (VALUES {','.join(['(?,?,?,?,?)'] * len(chunk))})")
            for row in self.db.execute(query, [v for key in chunk for v in key]):
                found[tuple(row[:5])] = row
        return list(found.values())

    def offsets(self) -> list[Any]:
        return self.db.execute("SELECT kafka_partition, next_offset FROM offsets").fetchall()

    def bulk_begin(self) -> None:
        """A fresh file: nothing to lose yet (no fsync); secondary indexes at the end."""
        self.db.execute("PRAGMA synchronous=OFF")
        for name in self.sql["secondary_indexes"]:
            self.db.execute(f"DROP INDEX IF EXISTS {name}")

    def bulk_end(self) -> int:
        """Build the secondary indexes, restore durability, checkpoint; return the row count."""
        self.db.executescript(self.sql["schema"])  # IF NOT EXISTS everywhere: only indexes are new
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows: int = self.db.execute("SELECT count(*) FROM xcom").fetchone()[0]
        return rows

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.close()


def serve(conn: Connection, path: str) -> None:
    """Answer requests until ``close``, EOF or a failure."""
    writer: _Writer | None = None
    try:
        while True:
            try:
                message = _decode(conn.recv_bytes())
            except (EOFError, OSError):
                return  # the parent closed the pipe or died
            op = message[0]
            if op == "close":
                return
            try:
                answer: Any = None
                if op == "open":
                    writer = _Writer(path, message[1])
                elif writer is None:
                    raise Refused("the view writer is not open")
                elif op == "apply":
                    answer = writer.apply(*message[1:])
                elif op == "offsets":
                    answer = writer.offsets()
                elif op == "bulk_begin":
                    writer.bulk_begin()
                elif op == "bulk_end":
                    answer = writer.bulk_end()
                else:
                    raise Refused(f"unknown request {op!r}")
            except Exception as exc:  # every failure goes back to the parent, with its reason
                # (an integer beyond SQLite's 64 bits is an OverflowError, not an sqlite3.Error)
                text = str(exc) if isinstance(exc, Refused) else _failed(path, exc)
                with contextlib.suppress(OSError):
                    conn.send_bytes(_encode(["error", text]))
                return
            try:
                conn.send_bytes(_encode(["ok", answer]))
            except OSError:
                return  # the parent is gone or closed the pipe: what committed stays committed
    finally:
        if writer is not None:
            writer.close()


def _die_with_parent(parent_pid: int) -> None:
    """Linux: have the kernel kill us with our parent, so a kill -9 of the materializer
    does not leave a writer (and its lock) behind for the one that replaces it."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def main(argv: list[str]) -> None:
    """``CONN_FD PARENT_PID PATH``."""
    # Ctrl-C and a group-wide SIGTERM (systemd's KillMode=control-group, kill -TERM -PGID)
    # reach this process too: the parent decides when the writer stops (it finishes the
    # batch in hand first, then closes the pipe); its death kills this one anyway.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent(int(argv[1]))
    serve(Connection(int(argv[0])), argv[2])


if __name__ == "__main__":
    main(sys.argv[1:])
