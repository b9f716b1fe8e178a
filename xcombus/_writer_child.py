"""The view writer's child process: a serve loop around :class:`xcombus.store.ViewStore`.

Started by :class:`xcombus.writer.ViewWriterProcess` as
``python -P <this file> CONN_FD PARENT_PID PATH`` (``-P``: its own folder is not put on
``sys.path``, so the package's modules cannot shadow standard ones). It loads
``store.py`` from its own folder without running ``xcombus/__init__.py``
(:func:`_load`), so the child is the same version as its parent and holds only what
writing SQLite needs; why the writes run in a process at all is in :mod:`xcombus.store`.

Protocol: request → answer, in order, MessagePack arrays over a socket pair (length-
prefixed frames of :class:`multiprocessing.connection.Connection`); rows are plain
strings, ints, bytes and None, never pickled objects.

- ``["open", topic]`` → ``["ok", None]``;
- ``["write", encoded batch]`` (:class:`xcombus.store.EncodedBatch`) → ``["ok", replaced rows]``;
- ``["offsets"]`` → ``["ok", {partition: next_offset}]``;
- ``["begin_bulk_load"]`` / ``["end_bulk_load"]`` → ``["ok", None]`` / ``["ok", row count]``;
- ``["close"]`` or EOF → the child closes the database and exits;
- any failure → ``["error", message]``, then the child exits: nothing may be applied on
  top of a batch that did not commit.

The writer lock's descriptor is inherited from the parent (``pass_fds``) and stays open,
so the lock is held until both processes have exited.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import types
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:  # for the type checker only: at run time they come from _load_store()
    from xcombus.errors import XComViewError
    from xcombus.store import EncodedBatch, ViewStore

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


def _load(name: str) -> types.ModuleType:
    """The module ``name`` of this file's folder, as ``xcombus.<name>``, without running
    ``xcombus/__init__.py``.

    A bare package object stands in for ``xcombus``, so the store's relative imports of
    its two leaf modules (``errors``, ``records``) resolve to this folder's files too.
    """
    if "xcombus" not in sys.modules:
        package = types.ModuleType("xcombus")
        package.__path__ = [str(Path(__file__).resolve().parent)]
        sys.modules["xcombus"] = package
    return importlib.import_module(f"xcombus.{name}")


def serve(conn: Connection, path: str, store: types.ModuleType, errors: types.ModuleType) -> None:
    """Answer requests until ``close``, EOF or a failure (``store``, ``errors``: the
    modules :func:`_load` returns)."""
    view_store: type[ViewStore] = store.ViewStore
    encoded_batch: type[EncodedBatch] = store.EncodedBatch
    view_error: type[XComViewError] = errors.XComViewError
    view: ViewStore | None = None
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
                answer: object = None
                if op == "open":
                    view = view_store.open(path, topic=message[1], lock=False)
                elif view is None:
                    raise RuntimeError("the view writer is not open")
                elif op == "write":
                    answer = view.write_encoded(encoded_batch(*message[1]))
                elif op == "offsets":
                    answer = view.offsets()
                elif op == "begin_bulk_load":
                    view.begin_bulk_load()
                elif op == "end_bulk_load":
                    answer = view.end_bulk_load()
                else:
                    raise RuntimeError(f"unknown request {op!r}")
            except Exception as exc:  # every failure goes back to the parent, with its reason
                error = exc if isinstance(exc, view_error) else store.write_error(path, exc)
                with contextlib.suppress(OSError):
                    conn.send_bytes(_encode(["error", str(error)]))
                return
            try:
                conn.send_bytes(_encode(["ok", answer]))
            except OSError:
                return  # the parent is gone or closed the pipe: what committed stays committed
    finally:
        if view is not None:
            view.close()


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
    serve(Connection(int(argv[0])), argv[2], _load("store"), _load("errors"))


if __name__ == "__main__":
    main(sys.argv[1:])
