"""The view's writer in a child process: :class:`ViewWriterProcess`, an async proxy.

The parent keeps everything that decides *what* to write (fold, offsets, Kafka); the child
(``xcombus/_writer_child.py``) runs :class:`xcombus.store.ViewStore`'s transactions, so
folding the next batch and writing this one run on two cores. Why a process, and the
transaction itself, are described in :mod:`xcombus.store`.

The writer lock (``flock`` on ``<view>.lock``) is taken by the parent, so a second writer
fails fast with XComViewLockedError in the caller, and the locked file descriptor is
inherited by the child, so the lock lasts as long as either of them lives: a child still
finishing a transaction after its parent died keeps a new materializer out (and on Linux
the kernel kills the child with its parent: ``PR_SET_PDEATHSIG`` follows the thread that
started the child, the event loop's, which outlives the writer).

The child is a fresh interpreter running one file, never a fork: the parent runs an event
loop and threads. Not ``multiprocessing``'s spawn either: that re-imports the parent's
``__main__`` in the child, which runs the top level of any script that starts an
in-process materializer without an ``if __name__ == "__main__"`` guard.
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
from typing import cast

import msgspec

from .errors import XComViewError
from .records import XComRecord
from .store import EncodedBatch, ViewBatch, acquire_write_lock, encode_batch

__all__ = ["ViewWriterProcess"]

_CHILD = Path(__file__).resolve().with_name("_writer_child.py")

#: Longest wait for the child's answer to one request: a batch commits in well under a
#: second, so a child that stays silent this long is stuck (a hung disk, SIGSTOP) and is
#: killed rather than left to hang the materializer without a bound.
_ANSWER_TIMEOUT = 120.0

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


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
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Answers arrive in request order: one future per request sent (a decoded
        #: MessagePack payload).
        self._waiting: collections.deque[asyncio.Future[object]] = collections.deque()
        self._in_flight: asyncio.Future[list[XComRecord]] | None = None
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
            conn = self._conn = Connection(ours.detach())
            try:
                self._proc = subprocess.Popen(
                    [sys.executable, "-P", str(_CHILD), str(theirs.fileno()),
                     str(os.getpid()), str(self.path)],
                    pass_fds=(theirs.fileno(), self._lock_fd), stdin=subprocess.DEVNULL)
            finally:
                theirs.close()
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(conn.fileno(), self._on_readable)
            await self._request(["open", self.topic])
        except BaseException:
            await self.aclose()
            raise

    # -- requests ------------------------------------------------------------------------

    def _send(self, message: list[object]) -> asyncio.Future[object]:
        if self._broken is not None:
            raise self._broken
        if self._conn is None or self._loop is None:
            raise XComViewError("the view writer is not open")
        future: asyncio.Future[object] = self._loop.create_future()
        try:
            self._conn.send_bytes(_encode(message))
        except OSError as exc:  # the child is gone (EPIPE, ECONNRESET)
            raise self._break(XComViewError(self._died(exc))) from exc
        self._waiting.append(future)
        return future

    async def _request(self, message: list[object]) -> object:
        """Send one request (after the batch in flight) and wait for its answer."""
        await self.drain()
        return await self._answer(self._send(message))

    async def _answer(self, future: asyncio.Future[object]) -> object:
        """The child's answer, within _ANSWER_TIMEOUT; a silent child is killed."""
        try:
            return await asyncio.wait_for(asyncio.shield(future), _ANSWER_TIMEOUT)
        except TimeoutError:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                proc.kill()
            raise self._break(XComViewError(
                f"the view writer process did not answer within {_ANSWER_TIMEOUT:g}s and was "
                f"killed (is the disk under {self.path.parent} hung?); the batch in flight may "
                "or may not have committed: the view's stored offsets decide where a restarted "
                "materializer resumes")) from None

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

    def _break(self, error: XComViewError) -> XComViewError:
        """The child failed or died: fail what waits, refuse what comes; return the error
        every later request raises (the first one)."""
        if self._broken is None:
            self._broken = error
        broken = self._broken
        if self._loop is not None and self._conn is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._conn.fileno())
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(broken)
        return broken

    # -- the writer's operations -----------------------------------------------------------

    async def offsets(self) -> dict[int, int]:
        """partition -> next offset to apply, as committed."""
        return cast(dict[int, int], await self._request(["offsets"]))

    @staticmethod
    def encode(batch: ViewBatch, *, collect_replaced: bool = False) -> EncodedBatch:
        """Sort and encode a folded batch for the child, without waiting for anything.

        This is CPU work of the parent: done while the previous batch commits, it does not
        leave the child idle between two batches.
        """
        return encode_batch(batch, collect_replaced=collect_replaced)

    async def submit(self, batch: ViewBatch | EncodedBatch, *,
                     collect_replaced: bool = False) -> asyncio.Future[list[XComRecord]]:
        """Hand a folded batch (or one from :meth:`encode`) to the child; return a future of its commit.

        Waits for the batch in flight first (so at most one is). The future resolves, once
        the child committed the batch and its offsets, to the stored rows the batch
        replaced or cleared (with ``collect_replaced``, else ``[]``), or raises
        XComViewError: then nothing of the batch was applied, and the writer refuses every
        later batch.
        """
        if isinstance(batch, ViewBatch):
            batch = self.encode(batch, collect_replaced=collect_replaced)  # before the wait
        elif collect_replaced:
            raise TypeError("an encoded batch took collect_replaced from encode(), not submit()")
        await self.drain()
        answer = self._send(["write", batch])
        done = asyncio.ensure_future(self._replaced(answer))
        self._in_flight = done
        return done

    async def _replaced(self, answer: asyncio.Future[object]) -> list[XComRecord]:
        rows = cast(list[list[object]], await self._answer(answer))
        return [XComRecord._make(row) for row in rows]

    async def write(self, batch: ViewBatch, *, collect_replaced: bool = False) -> list[XComRecord]:
        """Write one batch and wait for its commit (:meth:`xcombus.store.ViewStore.write`)."""
        return await (await self.submit(batch, collect_replaced=collect_replaced))

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

    async def begin_bulk_load(self) -> None:
        """For a load into a fresh file: no fsync, secondary indexes built at the end."""
        await self._request(["begin_bulk_load"])

    async def end_bulk_load(self) -> int:
        """Build the secondary indexes, restore durability, checkpoint; return the row count."""
        return cast(int, await self._request(["end_bulk_load"]))

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

