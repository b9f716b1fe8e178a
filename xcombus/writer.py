"""The view's writer in a child process, so folding and writing run on two cores.

Why a process: ``sqlite3``'s ``executemany`` takes the GIL back for every row it binds,
so a writer *thread* and the event loop that folds the next batch still run one at a time
(``benchmarks/experiment_rebuild.py``: 15.0 s vs 14.9 s for 1,000,000 events). A writer
process has its own GIL: the same transaction there rebuilt them in 9.2 s.

The parent (:class:`ViewWriterProcess`) keeps everything that decides *what* to write
(fold, offsets, Kafka); the child (the script :mod:`xcombus._writer_child`) only runs
transactions, exactly the ones :class:`~xcombus.view.ViewWriter` runs: clears, upserts,
dead letters and next offsets of one batch in one ``BEGIN IMMEDIATE … COMMIT``, with the
statements of :mod:`xcombus.view` that the parent sends when it opens the file.

The writer lock (``flock`` on ``<view>.lock``) is taken by the parent, so a second writer
fails fast with XComViewLockedError in the caller, and the locked file descriptor is
inherited by the child, so the lock lasts as long as either of them lives: a child still
finishing a transaction after its parent died keeps a new materializer out (and on Linux
the kernel kills the child with its parent).

The child is a fresh interpreter running one file that imports only ``sqlite3`` and
msgspec (≈ 15 MiB resident instead of ≈ 50 MiB with the whole package), never a fork: the
parent runs an event loop and threads. Not ``multiprocessing``'s spawn either: that
re-imports the parent's ``__main__`` in the child, which runs the top level of any script
that starts an in-process materializer without an ``if __name__ == "__main__"`` guard.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgspec

from .errors import XComViewError
from .records import XComRecord
from .view import WRITER_SQL, ViewBatch, acquire_write_lock

__all__ = ["PreparedBatch", "ViewWriterProcess"]

_CHILD = Path(__file__).resolve().with_name("_writer_child.py")

#: Longest wait for the child's answer to one request: a batch commits in well under a
#: second, so a child that stays silent this long is stuck (a hung disk, SIGSTOP) and is
#: killed rather than left to hang the materializer without a bound.
_ANSWER_TIMEOUT = 120.0

#: Rows per chunk of a batch sent to the child (decoded and written one chunk at a time).
_CHUNK_ROWS = 1_000

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


class PreparedBatch:
    """A batch encoded for the writer child (:meth:`ViewWriterProcess.prepare`)."""

    __slots__ = ("message",)

    def __init__(self, message: list[Any]) -> None:
        self.message = message


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
        self._lock_fd = acquire_write_lock(self.path)
        try:
            ours, theirs = socket.socketpair()
            self._conn = Connection(ours.detach())
            try:
                self._proc = subprocess.Popen(
                    [sys.executable, "-P", str(_CHILD), str(theirs.fileno()),
                     str(os.getpid()), str(self.path)],
                    pass_fds=(theirs.fileno(), self._lock_fd), stdin=subprocess.DEVNULL)
            finally:
                theirs.close()
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self._conn.fileno(), self._on_readable)
            await self._request(["open", {**WRITER_SQL, "topic": self.topic}])
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
        return await self._answer(self._send(message))

    async def _answer(self, future: asyncio.Future[Any]) -> Any:
        """The child's answer, within _ANSWER_TIMEOUT; a silent child is killed."""
        try:
            return await asyncio.wait_for(asyncio.shield(future), _ANSWER_TIMEOUT)
        except TimeoutError:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                proc.kill()
            self._break(XComViewError(
                f"the view writer process did not answer within {_ANSWER_TIMEOUT:g}s and was "
                f"killed (is the disk under {self.path.parent} hung?); the batch in flight may "
                "or may not have committed: the view's stored offsets decide where a restarted "
                "materializer resumes"))
            raise self._broken from None  # type: ignore[misc]

    def _on_readable(self) -> None:
        """Event-loop callback: read every answer that arrived and resolve its future."""
        conn = self._conn
        try:
            while conn is not None and conn.poll():
                # One frame at a time; the child writes each answer whole, right after its
                # transaction, so a readable pipe holds the frame and this does not block.
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
        except Exception as exc:  # a malformed answer: never leave the waiters hanging
            self._break(XComViewError(f"the view writer process sent an unreadable answer: {exc!r}"))

    def _died(self, exc: BaseException) -> str:
        code = self._proc.poll() if self._proc is not None else None
        return (f"the view writer process for {self.path} died (exit code {code}, "
                f"{type(exc).__name__}); the batch in flight, if any, may or may not have "
                "committed: the view's stored offsets decide where a restarted materializer "
                "resumes. Its log (stderr) says why; check the disk and that this Python "
                f"({sys.executable}) can import msgspec")

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

    @staticmethod
    def prepare(batch: ViewBatch, *, collect_replaced: bool = False) -> PreparedBatch:
        """Encode a folded batch for the child, without waiting for anything.

        Sorting and encoding the rows is CPU work of the parent: done while the previous
        batch commits, it does not leave the child idle (the drain's bottleneck) between
        two batches.
        """
        # Rows go in separately encoded chunks, so the child holds one chunk's objects at
        # a time, not the whole batch's (its memory counts in the materializer's).
        # In primary-key order: SQLite then walks its B-tree forward instead of jumping
        # (+13 % upserts/s measured, benchmarks/experiment_rebuild.py); the keys are distinct.
        rows = sorted(batch.upserts)
        chunks = [_encode(rows[i:i + _CHUNK_ROWS]) for i in range(0, len(rows), _CHUNK_ROWS)]
        return PreparedBatch(["apply", batch.clears, chunks, batch.runs, batch.dead,
                              [(p, o, batch.events.get(p, 0)) for p, o in batch.offsets.items()],
                              collect_replaced])

    async def submit(self, batch: ViewBatch | PreparedBatch, *,
                     collect_replaced: bool = False) -> asyncio.Future[Any]:
        """Hand a folded batch (or one from :meth:`prepare`) to the child; return a future of its commit.

        Waits for the batch in flight first (so at most one is). The future resolves, once
        the child committed the batch and its offsets, to the stored rows the batch
        replaced or cleared (with ``collect_replaced``, else ``[]``), or raises
        XComViewError: then nothing of the batch was applied, and the writer refuses every
        later batch.
        """
        if isinstance(batch, ViewBatch):
            batch = self.prepare(batch, collect_replaced=collect_replaced)  # before the wait
        elif collect_replaced:
            raise TypeError("a prepared batch took collect_replaced from prepare(), not submit()")
        await self.drain()
        answer = self._send(batch.message)
        done = asyncio.ensure_future(self._replaced(answer))
        self._in_flight = done
        return done

    async def _replaced(self, answer: asyncio.Future[Any]) -> list[XComRecord]:
        return [XComRecord(*row) for row in await self._answer(answer)]

    async def apply(self, batch: ViewBatch, *, collect_replaced: bool = False) -> list[XComRecord]:
        """Write one batch and wait for its commit (like ViewWriter.apply)."""
        result: list[XComRecord] = await (await self.submit(batch, collect_replaced=collect_replaced))
        return result

    async def drain(self) -> None:
        """Wait for the batch in flight, if any (raises its error)."""
        in_flight = self._in_flight
        if in_flight is None:
            return
        try:
            await asyncio.shield(in_flight)  # a cancelled waiter leaves the batch in flight
        finally:
            if in_flight.done() and self._in_flight is in_flight:
                self._in_flight = None

    async def bulk_begin(self) -> None:
        """For a load into a fresh file: no fsync, secondary indexes built at the end."""
        await self._request(["bulk_begin"])

    async def bulk_end(self) -> int:
        """Build the secondary indexes, restore durability, checkpoint; return the row count."""
        rows: int = await self._request(["bulk_end"])
        return rows

    async def aclose(self) -> None:
        """Wait for the batch in flight, stop the child, release the lock. Idempotent.

        Cancelled or not, it closes the pipe and the lock; the child then exits on EOF
        (or is killed after 30 s)."""
        try:
            with contextlib.suppress(Exception):
                await self.drain()
        finally:
            conn, self._conn = self._conn, None
            if conn is not None:
                if self._loop is not None:
                    with contextlib.suppress(Exception):
                        self._loop.remove_reader(conn.fileno())
                with contextlib.suppress(OSError):
                    conn.send_bytes(_encode(["close"]))
                conn.close()  # EOF: the child closes the database and exits
            self._break(self._broken or XComViewError("the view writer is closed"))
            proc, self._proc = self._proc, None
            try:
                if proc is not None:
                    try:
                        await asyncio.to_thread(proc.wait, 30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        await asyncio.to_thread(proc.wait)
            finally:
                if proc is not None and proc.poll() is None:
                    proc.kill()  # cancelled while waiting: never leave a writer behind
                fd, self._lock_fd = self._lock_fd, None
                if fd is not None:
                    os.close(fd)

