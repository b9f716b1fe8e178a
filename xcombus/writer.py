"""The view's writer in a child process, so folding and writing run on two cores.

Why a process: ``sqlite3``'s ``executemany`` takes the GIL back for every row it binds,
so a writer *thread* and the event loop that folds the next batch still run one at a time
(``benchmarks/experiment_rebuild.py``: 15.0 s vs 14.9 s for 1,000,000 events). A writer
process has its own GIL: the same transaction there rebuilt them in 9.2 s.

The parent (:class:`ViewWriterProcess`) keeps everything that decides *what* to write
(fold, offsets, Kafka); the child (:func:`_child_main`) only runs transactions, exactly
the ones :class:`~xcombus.view.ViewWriter` runs: clears, upserts, dead letters and next
offsets of one batch in one ``BEGIN IMMEDIATE … COMMIT``. The protocol is request →
answer, in order, over a socket pair; each message is a MessagePack array of our own rows
(strings, ints, bytes, None), never a pickled object:

- ``["apply", clears, upserts, dead, offsets, collect]`` → ``["ok", replaced rows]``;
- ``["offsets"]`` → ``["ok", [[partition, next_offset], …]]``;
- ``["bulk_begin"]`` / ``["bulk_end"]`` (rebuild into a fresh file) → ``["ok", rows]``;
- any failure → ``["error", message]``, and after a failed write the child exits: nothing
  later can be applied on top of a batch that did not commit.

The writer lock (``flock`` on ``<view>.lock``) is taken by the parent, so a second writer
fails fast with XComViewLockedError in the caller, and the locked file descriptor is
inherited by the child, so the lock lasts as long as either of them lives: a child still
finishing a transaction after its parent died keeps a new materializer out (and on Linux
the kernel kills the child with its parent).

The child is a fresh interpreter (``python -c`` calling :func:`_main`), never a fork: the parent
runs an event loop and threads. Not ``multiprocessing``'s spawn either: that re-imports
the parent's ``__main__`` in the child, which runs the top level of any script that
starts an in-process materializer without an ``if __name__ == "__main__"`` guard.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgspec

from .errors import XComViewError
from .records import XComRecord
from .view import (
    _CLEAR,
    _CLEAR_MARK,
    _COLUMNS,
    _DEAD,
    _OFFSET,
    _SCHEMA,
    _SECONDARY_INDEXES,
    _UPSERT,
    VIEW_SCHEMA_VERSION,
    ViewBatch,
    acquire_write_lock,
)

__all__ = ["ViewWriterProcess"]

# Not ``-m xcombus.writer``: the package imports this module first, so runpy would run it twice.
_CHILD = "import sys; from xcombus.writer import _main; _main(sys.argv[1:])"

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


def _write_failed(path: Path, exc: BaseException) -> str:
    return (f"writing the view at {path} failed ({exc}); nothing of this batch was applied and "
            "its offsets did not advance: fix the cause (disk full? read-only file?) and restart "
            "the materializer")


class ViewWriterProcess:
    """The single writer of one view file, running its transactions in a child process.

    ``await open()`` takes the lock and starts the child; :meth:`submit` sends a folded
    batch and returns at once with a future of its commit (the rows it replaced, for
    purges); :meth:`aclose` waits for the batch in flight, stops the child and releases
    the lock. At most one batch is in flight: :meth:`submit` first waits for the previous
    one, so the parent folds batch n+1 while the child writes batch n, and memory holds
    two batches at most.
    """

    def __init__(self, path: str | os.PathLike[str], *, topic: str) -> None:
        self.path = Path(path).resolve()
        self.topic = topic
        self._lock_fd: int | None = None
        self._proc: Any = None
        self._conn: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Answers arrive in request order: one future per request sent.
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._in_flight: asyncio.Future[Any] | None = None
        #: Set once the child failed or died: every later request raises it.
        self._broken: XComViewError | None = None

    async def __aenter__(self) -> ViewWriterProcess:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Lock the file, start the child and let it open (or create) the view."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = acquire_write_lock(self.path)
        except OSError as exc:
            raise XComViewError(f"cannot open the view at {self.path}: {exc}") from exc
        try:
            ours, theirs = socket.socketpair()
            self._conn = Connection(ours.detach())
            try:
                self._proc = subprocess.Popen(
                    [sys.executable, "-c", _CHILD, str(theirs.fileno()),
                     str(self._lock_fd), str(os.getpid()), str(self.path), self.topic],
                    pass_fds=(theirs.fileno(), self._lock_fd), env=_child_env(),
                    stdin=subprocess.DEVNULL)
            finally:
                theirs.close()
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self._conn.fileno(), self._on_readable)
            await self._request(["open"])
        except BaseException:
            await self.aclose()
            raise

    # -- requests ------------------------------------------------------------------------

    def _send(self, message: list[Any]) -> asyncio.Future[Any]:
        if self._broken is not None:
            raise self._broken
        if self._conn is None or self._loop is None:
            raise XComViewError("the view writer is not open")
        future = self._loop.create_future()
        try:
            self._conn.send_bytes(_encode(message))
        except OSError as exc:  # the child is gone (EPIPE, ECONNRESET)
            self._break(XComViewError(self._died(exc)))
            raise self._broken from exc  # type: ignore[misc]
        self._waiting.append(future)
        return future

    async def _request(self, message: list[Any]) -> Any:
        """Send one request (after the batch in flight) and wait for its answer."""
        await self.drain()
        return await self._send(message)

    def _on_readable(self) -> None:
        """Event-loop callback: read every answer that arrived and resolve its future."""
        conn = self._conn
        try:
            while conn is not None and conn.poll():
                status, payload = _decode(conn.recv_bytes())
                future = self._waiting.popleft() if self._waiting else None
                if status == "ok":
                    if future is not None and not future.done():
                        future.set_result(payload)
                else:
                    error = XComViewError(payload)
                    if future is not None and not future.done():
                        future.set_exception(error)
                    self._break(error)
                    return
        except (EOFError, OSError) as exc:
            self._break(XComViewError(self._died(exc)))

    def _died(self, exc: BaseException) -> str:
        code = self._proc.poll() if self._proc is not None else None
        return _write_failed(self.path, RuntimeError(
            f"the view writer process died (exit code {code}, {type(exc).__name__})"))

    def _break(self, error: XComViewError) -> None:
        """The child failed or died: fail what waits, refuse what comes."""
        if self._broken is None:
            self._broken = error
        if self._loop is not None and self._conn is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._conn.fileno())
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(self._broken)

    # -- the writer's operations -----------------------------------------------------------

    async def offsets(self) -> dict[int, int]:
        """partition -> next offset to apply, as committed."""
        return {p: o for p, o in await self._request(["offsets"])}

    async def submit(self, batch: ViewBatch, *, collect_replaced: bool = False) -> asyncio.Future[Any]:
        """Hand a folded batch to the child; return a future of its commit.

        Waits for the batch in flight first (so at most one is). The future resolves, once
        the child committed the batch and its offsets, to the stored rows the batch
        replaced or cleared (with ``collect_replaced``, else ``[]``), or raises
        XComViewError: then nothing of the batch was applied, and the writer refuses every
        later batch.
        """
        await self.drain()
        message = ["apply", batch.clears, batch.upserts, batch.dead,
                   [(p, o, batch.events.get(p, 0)) for p, o in batch.offsets.items()],
                   collect_replaced]
        answer = self._send(message)
        done = asyncio.ensure_future(self._replaced(answer))
        self._in_flight = done
        return done

    @staticmethod
    async def _replaced(answer: asyncio.Future[Any]) -> list[XComRecord]:
        return [XComRecord(*row) for row in await answer]

    async def apply(self, batch: ViewBatch, *, collect_replaced: bool = False) -> list[XComRecord]:
        """Write one batch and wait for its commit (like ViewWriter.apply)."""
        result: list[XComRecord] = await (await self.submit(batch, collect_replaced=collect_replaced))
        return result

    async def drain(self) -> None:
        """Wait for the batch in flight, if any (raises its error)."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            await in_flight

    async def bulk_begin(self) -> None:
        """For a load into a fresh file: no fsync, secondary indexes built at the end."""
        await self._request(["bulk_begin"])

    async def bulk_end(self) -> int:
        """Build the secondary indexes, restore durability, checkpoint; return the row count."""
        rows: int = await self._request(["bulk_end"])
        return rows

    async def aclose(self) -> None:
        """Wait for the batch in flight, stop the child, release the lock. Idempotent."""
        with contextlib.suppress(Exception):
            await self.drain()
        conn, self._conn = self._conn, None
        if conn is not None:
            if self._loop is not None:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(conn.fileno())
            with contextlib.suppress(OSError):
                conn.send_bytes(_encode(["close"]))
            conn.close()  # EOF: the child closes the database and exits
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        self._break(self._broken or XComViewError("the view writer is closed"))
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)


def _child_env() -> dict[str, str]:
    """The parent's environment, with this copy of xcombus first on the child's path."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    return env


# -- the child -----------------------------------------------------------------------------


def _child_main(conn: Connection, path: str, topic: str, parent_pid: int) -> None:
    """The writer process: answer requests until EOF or a failed write. The inherited
    lock descriptor stays open (and the lock held) until this process exits."""
    # Ctrl-C reaches the whole process group: the parent decides when the writer stops
    # (it finishes the batch in hand first).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    db: sqlite3.Connection | None = None
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
                if op == "open":
                    db = _open(Path(path), topic)
                    answer: Any = None
                elif db is None:
                    raise XComViewError("the view writer is not open")
                elif op == "apply":
                    answer = _apply(db, Path(path), *message[1:])
                elif op == "offsets":
                    answer = db.execute("SELECT kafka_partition, next_offset FROM offsets").fetchall()
                elif op == "bulk_begin":
                    db.execute("PRAGMA synchronous=OFF")  # a fresh file: nothing to lose yet
                    for name in _SECONDARY_INDEXES:
                        db.execute(f"DROP INDEX IF EXISTS {name}")
                    answer = None
                elif op == "bulk_end":
                    db.executescript(_SCHEMA)  # IF NOT EXISTS everywhere: only the indexes are new
                    db.execute("PRAGMA synchronous=NORMAL")
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    answer = db.execute("SELECT count(*) FROM xcom").fetchone()[0]
                else:
                    raise XComViewError(f"unknown request {op!r}")
            except (XComViewError, sqlite3.Error) as exc:
                text = str(exc) if isinstance(exc, XComViewError) else \
                    f"writing the view at {path} failed: {exc}"
                conn.send_bytes(_encode(["error", text]))
                return  # nothing may be applied after a failure: the parent must restart
            conn.send_bytes(_encode(["ok", answer]))
    finally:
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()


def _die_with_parent(parent_pid: int) -> None:
    """Linux: have the kernel kill us with our parent, so a kill -9 of the materializer
    does not leave a writer (and its lock) behind for the one that replaces it."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _open(path: Path, topic: str) -> sqlite3.Connection:
    """Open the view in WAL mode, create the schema if needed, check topic and version."""
    try:
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(_SCHEMA)
        db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?), ('topic', ?)",
                   (str(VIEW_SCHEMA_VERSION), topic))
        rows = dict(db.execute("SELECT name, value FROM meta").fetchall())
    except sqlite3.Error as exc:
        raise XComViewError(f"cannot open the view at {path}: {exc}") from exc
    if rows.get("topic") != topic:
        raise XComViewError(f"{path} is a view of topic {rows.get('topic')!r}, not {topic!r}: "
                            "use another XCOMBUS_VIEW_PATH")
    if rows.get("schema_version") != str(VIEW_SCHEMA_VERSION):
        raise XComViewError(f"{path} has view schema {rows.get('schema_version')}, this xcombus "
                            f"writes {VIEW_SCHEMA_VERSION}: rebuild the view into a new file")
    return db


def _apply(db: sqlite3.Connection, path: Path, clears: list[Any], upserts: list[Any],
           dead: list[Any], offsets: list[Any], collect: bool) -> list[Any]:
    """One batch in one transaction (as ViewWriter.apply): all or nothing."""
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            replaced = _existing(db, clears, upserts) if collect else []
            if clears:
                db.executemany(_CLEAR, [c[:4] for c in clears])
                db.executemany(_CLEAR_MARK, clears)
            if upserts:
                db.executemany(_UPSERT, upserts)
            if dead:
                db.executemany(_DEAD, dead)
            db.executemany(_OFFSET, offsets)
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise XComViewError(_write_failed(path, exc)) from exc
    return replaced


def _existing(db: sqlite3.Connection, clears: list[Any], upserts: list[Any]) -> list[Any]:
    """Stored rows that the batch's clears delete or its upserts overwrite."""
    found: dict[tuple[Any, ...], Any] = {}
    for clear in clears:
        for row in db.execute(f"SELECT {_COLUMNS} FROM xcom WHERE dag_id=? AND run_id=? AND "
                              "task_id=? AND map_index=?", clear[:4]):
            found[tuple(row[:5])] = row
    keys = [row[:5] for row in upserts]
    for i in range(0, len(keys), 500):  # row-value IN, within SQLite's parameter limit
        chunk = keys[i:i + 500]
        sql = (f"SELECT {_COLUMNS} FROM xcom WHERE (dag_id, run_id, task_id, map_index, key) "
               f"IN (VALUES {','.join(['(?,?,?,?,?)'] * len(chunk))})")
        for row in db.execute(sql, [v for key in chunk for v in key]):
            found[tuple(row[:5])] = row
    return list(found.values())


def _main(argv: list[str]) -> None:
    """Entry point of the child: ``CONN_FD LOCK_FD PARENT_PID PATH TOPIC``."""
    _child_main(Connection(int(argv[0])), argv[3], argv[4], int(argv[2]))
