"""Audit readers of the topic: ``python -m consumers.audit tail`` (installed: ``xcombus tail``).

``tail`` follows the topic and prints each event as one JSON line (pushes with their
value's light form, clears, and events that are not valid) until SIGTERM/SIGINT, or until
``--limit`` events were printed. It reads the topic, never the view.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from xcombus.process import exit_codes
from xcombus.services import tail_until_stopped
from xcombus.settings import Settings


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, follow the topic until stopped; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m consumers.audit",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tail", help="follow the topic, one JSON line per event")
    for name in ("dag-id", "run-id", "task-id", "key"):
        t.add_argument(f"--{name}")
    t.add_argument("--from-beginning", action="store_true", help="start at offset 0, not at the end")
    t.add_argument("--limit", type=int, help="stop after this many events")
    args = parser.parse_args(argv)
    with exit_codes("xcombus tail"):
        asyncio.run(tail_until_stopped(Settings.from_env(), limit=args.limit,
                                       from_beginning=args.from_beginning, dag_id=args.dag_id,
                                       run_id=args.run_id, task_id=args.task_id, key=args.key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
