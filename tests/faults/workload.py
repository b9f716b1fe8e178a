"""The fault suite's load: pushers that record what the broker acknowledged, and the oracles
that say which acknowledged values a view lost or holds stale.

``SOAK`` (``XCOMBUS_SOAK=1``) selects the long forms recorded in docs/reliability.md; the
bounded forms run by default.

In-process: :func:`push_until` (one pushing worker) and :func:`lost_and_stale` (its oracle).
As a process: ``python -m tests.faults.workload OUT.jsonl --pushes N --seed S``; it
pushes to a fixed set of task instances (with an occasional clear), concurrently, and
writes one JSON line per *acknowledged* event: task instance, key, value, partition,
offset. A push that raised is recorded as failed (it may or may not be in the log).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from xcombus import XComBus, XComBusError

SOAK = os.environ.get("XCOMBUS_SOAK") == "1"

TASKS = 40
KEYS = 5


class Acked(NamedTuple):
    """One push the broker acknowledged: where its receipt put it, what it was, and when."""

    partition: int
    offset: int
    key: str
    value: str
    at: float


async def push_until(bus: XComBus, stop: asyncio.Event, worker: int, acked: list[Acked],
                     failed: list[tuple[str, str]]) -> None:
    """Push ``k<worker>-<i % 10>`` = ``"<worker>:<i>"`` until ``stop`` is set, recording each
    acknowledgement in ``acked`` and each failure as (error type, value) in ``failed``."""
    i = 0
    while not stop.is_set():
        key, value = f"k{worker}-{i % 10}", f"{worker}:{i}"
        try:
            r = await bus.task_instance("d", "r", f"t{worker}").xcom_push(key, value)
            acked.append(Acked(r.partition, r.offset, key, value, time.monotonic()))
        except XComBusError as exc:  # a clear error, never a silent drop
            failed.append((type(exc).__name__, value))
            await asyncio.sleep(0.2)
        i += 1


def lost_and_stale(acked: Iterable[Acked],
                   rows: Mapping[str, tuple[int, int, Any]]) -> tuple[list[str], list[str]]:
    """Keys whose latest acknowledged push (by log position) the view lacks, and keys whose
    row is older than it. ``rows``: key -> (partition, offset, value) as the view holds it."""
    latest: dict[str, tuple[int, int, str]] = {}
    for a in acked:
        if (a.partition, a.offset) > latest.get(a.key, (-1, -1, ""))[:2]:
            latest[a.key] = (a.partition, a.offset, a.value)
    lost = [k for k in latest if k not in rows]
    stale = [k for k, (p, o, _) in latest.items() if k in rows and rows[k][:2] < (p, o)]
    return lost, stale


async def produce(out: Path, pushes: int, seed: int, concurrency: int = 200, clear_every: int = 500) -> None:
    rng = random.Random(seed)
    lines: list[str] = []
    failed = 0
    async with XComBus() as bus:
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            nonlocal failed
            ti = bus.task_instance("load", f"run_{i % 3}", f"t{rng.randrange(TASKS)}", rng.randrange(4))
            async with sem:
                try:
                    if i % clear_every == clear_every - 1:
                        r = await ti.xcom_clear()
                        event: dict[str, Any] = {"kind": "clear"}
                    else:
                        key, value = f"k{rng.randrange(KEYS)}", f"{seed}:{i}"
                        r = await ti.xcom_push(key, value)
                        event = {"kind": "push", "key": key, "value": value}
                except XComBusError as exc:
                    failed += 1
                    lines.append(json.dumps({"kind": "failed", "error": type(exc).__name__}))
                    return
            event.update(ti=list(ti.key), partition=r.partition, offset=r.offset)
            lines.append(json.dumps(event))

        await asyncio.gather(*(one(i) for i in range(pushes)))
    out.write_text("\n".join(lines) + "\n")


def oracle(files: list[Path]) -> tuple[dict[tuple[Any, ...], str], int]:
    """The view the acknowledged events imply: latest push per XCom by log order, clears
    applied. Returns (rows, acknowledged event count)."""
    events = []
    for f in files:
        for line in f.read_text().splitlines():
            e = json.loads(line)
            if e["kind"] != "failed":
                events.append(e)
    events.sort(key=lambda e: (e["partition"], e["offset"]))
    rows: dict[tuple[Any, ...], str] = {}
    for e in events:
        ti = tuple(e["ti"])
        if e["kind"] == "clear":
            for ident in [k for k in rows if k[:4] == ti]:
                del rows[ident]
        else:
            rows[(*ti, e["key"])] = e["value"]
    return rows, len(events)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--pushes", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(produce(args.out, args.pushes, args.seed))


if __name__ == "__main__":
    main()
