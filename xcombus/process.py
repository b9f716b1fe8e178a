"""How an xcombus process runs: one error-to-exit-code mapping and one way to run until stopped.

Every ``xcombus`` command and every long-running process (``xcombus materialize``,
``xcombus tail`` and their scripts in consumers/) ends the same way:

- exit 0: done, or stopped by SIGTERM/SIGINT after finishing cleanly;
- exit 1: failed with an :class:`~xcombus.errors.XComBusError`, whose message (it says what
  to do) is printed as ``PROG: message`` on stderr, without a traceback;
- exit 2: bad configuration (:class:`~xcombus.errors.XComConfigError`) or bad usage.

:func:`run_until_stopped` owns the signals of a long-running process: SIGTERM and SIGINT ask
the work to stop (or cancel it), SIGUSR1 logs what every task is waiting on.

This module imports only the standard library and :mod:`xcombus.errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from .errors import XComBusError, XComConfigError

__all__ = ["EXIT_CONFIG", "EXIT_FAILED", "configure_logging", "dump_tasks", "exit_codes",
           "freeze_startup_objects", "run_until_stopped"]

T = TypeVar("T")

#: Exit code of a process that failed with an XComBusError.
EXIT_FAILED = 1
#: Exit code of a process started with a bad configuration or bad arguments.
EXIT_CONFIG = 2

log = logging.getLogger("xcombus.process")


@contextlib.contextmanager
def exit_codes(prog: str, *, failed: int = EXIT_FAILED) -> Iterator[None]:
    """Turn xcombus errors into a message on stderr and an exit code (``SystemExit``).

    A context manager and a decorator. ``failed`` is the code for an XComBusError, for
    commands where 1 already means something else (``xcombus verify``: "views differ").
    """
    try:
        yield
    except XComConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    except XComBusError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        raise SystemExit(failed) from None


def configure_logging(level: str) -> None:
    """Log to stderr at ``level`` (a name such as INFO), with time, level and logger."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def freeze_startup_objects() -> None:
    """For processes that allocate many short-lived objects after start-up: move everything
    alive now out of the collector's sight and collect the young generation less often."""
    # Start-up objects never die; scanning them again on every young collection is pure
    # cost in a fold loop (docs/benchmarks.md).
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def dump_tasks() -> None:
    """Log the stack of every asyncio task of the running loop (for "it stopped moving")."""
    for task in asyncio.all_tasks():
        buffer = io.StringIO()
        task.print_stack(limit=12, file=buffer)
        log.warning("task %s:\n%s", task.get_name(), buffer.getvalue())


async def run_until_stopped(work: Awaitable[T], *, stop: Callable[[], object] | None = None) -> T | None:
    """Run ``work`` until it returns or SIGTERM/SIGINT arrives; return its result, or None
    when a signal ended it.

    On a signal, ``stop()`` is called when given (the work then finishes what it holds and
    returns by itself), else the work is cancelled. SIGUSR1 logs every task's stack
    (:func:`dump_tasks`). The handlers are removed when this returns.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    stopped = False

    def on_signal() -> None:
        nonlocal stopped
        stopped = True
        if stop is not None:
            stop()
        else:
            task.cancel()

    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, on_signal)
    loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
    try:
        return await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if stopped and task.cancelled() and not (current is not None and current.cancelling()):
            return None
        raise
    finally:
        for sig in (*signals, signal.SIGUSR1):
            loop.remove_signal_handler(sig)
