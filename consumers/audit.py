"""Audit readers of the topic: ``python -m consumers.audit tail`` (also ``xcombus tail``).

``tail`` follows the topic and prints each event as one JSON line (pushes with their
value's light form, clears, and events that are not valid) until SIGTERM/SIGINT, or until
``--limit`` events were printed. It reads the topic, never the view.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

import msgspec

from xcombus.audit import AuditEvent, tail
from xcombus.errors import XComBusError, XComConfigError
from xcombus.settings import Settings

_encode = msgspec.json.Encoder(enc_hook=repr).encode


def render(event: AuditEvent) -> str:
    """One event as a JSON line."""
    return _encode(event).decode()


async def run_tail(settings: Settings, *, limit: int | None = None, from_beginning: bool = False,
                   dag_id: str | None = None, run_id: str | None = None, task_id: str | None = None,
                   key: str | None = None) -> int:
    """Print matching events until stopped; return how many were printed."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    printed = 0

    async def follow() -> None:
        nonlocal printed
        async for event in tail(settings, dag_id=dag_id, run_id=run_id, task_id=task_id, key=key,
                                from_beginning=from_beginning):
            print(render(event), flush=True)
            printed += 1
            if limit is not None and printed >= limit:
                return

    follower = asyncio.ensure_future(follow())
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({follower, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if not follower.done():
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
    else:
        follower.result()  # surface its error, if any
    return printed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m consumers.audit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tail", help="follow the topic, one JSON line per event")
    for name in ("dag-id", "run-id", "task-id", "key"):
        t.add_argument(f"--{name}")
    t.add_argument("--from-beginning", action="store_true", help="start at offset 0, not at the end")
    t.add_argument("--limit", type=int, help="stop after this many events")
    args = parser.parse_args(argv)
    try:
        asyncio.run(run_tail(Settings.from_env(), limit=args.limit, from_beginning=args.from_beginning,
                             dag_id=args.dag_id, run_id=args.run_id, task_id=args.task_id, key=args.key))
    except XComConfigError as exc:
        print(f"xcombus tail: {exc}", file=sys.stderr)
        return 2
    except XComBusError as exc:
        print(f"xcombus tail: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
