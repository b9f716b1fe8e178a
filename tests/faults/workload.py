"""The fault suite's load: pushers that record what the broker acknowledged, and the oracles
that say which acknowledged values a view lost, holds stale, or should have fenced.

``SOAK`` (``XCOMBUS_SOAK=1``) selects the long forms recorded in docs/reliability.md; the
bounded forms run by default.

In-process: :func:`push_until` (one pushing worker) and :func:`lost_and_stale` (its oracle).
As a process: ``python -m tests.faults.workload OUT.jsonl --pushes N --seed S``; it
pushes to a fixed set of task instances at try 1 (with an occasional clear), concurrently,
and writes one JSON line per *acknowledged* event: kind, task instance, try, key, value,
partition, offset. A push that raised is recorded as failed (it may or may not be in the
log). With ``--retried R --producers P --sync DIR`` the P producer processes also retry
task instances, try t of each in a different process than try t-1 (:func:`retry_plan`,
:func:`act_try`): a newer try starts with a clear or with a push, and the older try, now a
zombie, pushes after it (lines marked ``"zombie": true``).

The oracle (:func:`acknowledged`, :func:`expected_view`) folds the acknowledged events in
log order, by their receipts' ``(partition, offset)``, not by when a process wrote them:
fencing depends on the order of events of different processes in the log.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from xcombus import Receipt, TaskInstance, XComBus, XComBusError

SOAK = os.environ.get("XCOMBUS_SOAK") == "1"

TASKS = 40
KEYS = 5
#: The keys a retried task instance's tries push.
RETRY_KEYS = 4


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


async def produce(out: Path, pushes: int, seed: int, concurrency: int = 200, clear_every: int = 500, *,
                  retried: int = 0, producers: int = 1, sync: Path | None = None) -> None:
    """Push ``pushes`` events at try 1 (see the module docstring) and, with ``retried``, act
    out this producer's tries of the retried task instances (:func:`retry_plan`), writing
    one JSON line per acknowledged event to ``out``."""
    rng = random.Random(seed)
    lines: list[str] = []
    issued = Progress()  # retried task instances start along the load
    async with XComBus() as bus:
        sem = asyncio.Semaphore(concurrency)

        def record(ti: TaskInstance, event: dict[str, Any], r: Receipt | None, **extra: Any) -> None:
            if r is None:
                lines.append(json.dumps({"kind": "failed", **extra}))
                return
            event.update(ti=list(ti.key), partition=r.partition, offset=r.offset, **{"try": ti.try_number},
                         **extra)
            lines.append(json.dumps(event))

        async def one(i: int) -> None:
            ti = bus.task_instance("load", f"run_{i % 3}", f"t{rng.randrange(TASKS)}", rng.randrange(4))
            issued.advance()
            async with sem:
                if i % clear_every == clear_every - 1:
                    await event(ti, None, None, record)
                else:
                    await event(ti, f"k{rng.randrange(KEYS)}", f"{seed}:{i}", record)

        jobs = [one(i) for i in range(pushes)]
        if retried:
            if producers < 2 or sync is None:
                raise ValueError("retried task instances need two producers or more and a sync folder")
            for z in range(producers):
                for j in range(retried):
                    plan = retry_plan(z, j, pushes)
                    jobs += [act_try(bus, sync, z, j, t, plan, issued, record)
                             for t in range(1, len(plan.tries) + 1) if (z + t - 1) % producers == seed]
        await asyncio.gather(*jobs)
    out.write_text("\n".join(lines) + "\n")


_Record = Callable[..., None]


async def event(ti: TaskInstance, key: str | None, value: str | None, record: _Record, **extra: Any) -> None:
    """Push ``value`` under ``key`` (a clear when ``key`` is None) and record the receipt; a
    push that raised is recorded as failed (it may or may not be in the log)."""
    try:
        if key is None:
            r = await ti.xcom_clear()
            record(ti, {"kind": "clear"}, r, **extra)
        else:
            r = await ti.xcom_push(key, value)
            record(ti, {"kind": "push", "key": key, "value": value}, r, **extra)
    except XComBusError as exc:
        record(ti, {}, None, error=type(exc).__name__)


class TryPlan(NamedTuple):
    """What one try of a retried task instance does: its first event (``None``: a clear,
    else a push of that key), the keys it pushes after it, and the events it sends once the
    next try has started, as a zombie (keys it pushes, ``None`` for a clear): all fenced."""

    first: str | None
    keys: list[str]
    zombie: list[str | None]


class RetryPlan(NamedTuple):
    """A retried task instance: when its try 1 starts (after that many events of the load)
    and its tries, try 1 first."""

    start_after: int
    tries: list[TryPlan]


def retry_plan(zombie_seed: int, j: int, pushes: int) -> RetryPlan:
    """The plan of retried task instance ``j`` whose try 1 runs in producer ``zombie_seed``
    (try t in producer ``zombie_seed + t - 1``, modulo the producers): the same in every
    producer process, from the seeds alone."""
    rng = random.Random(f"retry:{zombie_seed}:{j}")
    count = 3 if rng.random() < 0.3 else 2
    tries = []
    for t in range(1, count + 1):
        first = None if t > 1 and rng.random() < 0.5 else f"k{rng.randrange(RETRY_KEYS)}"
        keys = [f"k{rng.randrange(RETRY_KEYS)}" for _ in range(rng.randrange(4))]
        zombie: list[str | None] = [None if rng.random() < 0.1 else f"k{rng.randrange(RETRY_KEYS)}"
                                    for _ in range(rng.randint(1, 5) if t < count else 0)]
        tries.append(TryPlan(first, keys, zombie))
    return RetryPlan(rng.randrange(pushes) if pushes else 0, tries)


async def act_try(bus: XComBus, sync: Path, zombie_seed: int, j: int, t: int, plan: RetryPlan,
                  issued: Progress, record: _Record) -> None:
    """Try ``t`` of a retried task instance, in this producer process: it starts once try
    t-1 (another process) has pushed its keys, pushes its own, and when try t+1 (another
    process again) has started, goes on pushing (and clearing) as a zombie.

    The processes wait for each other's acknowledgements (files in ``sync``), so the log
    order is the plan's: try t's first event after try t-1's keys, its zombie pushes after
    try t+1's first event (so exactly those are fenced), interleaved with try t+1's keys."""
    ti = bus.task_instance("retry", f"run_{zombie_seed}", f"t{j}", try_number=t)
    name = f"{zombie_seed}-{j}-t"
    this = plan.tries[t - 1]
    # The producers' loads go at about the same pace: every try waits for its turn there
    # first, so only the task instances in play poll for the files of other processes.
    await issued.reached(plan.start_after)
    if t > 1:
        await wait_for(sync / f"{name}{t - 1}-done")
    value = f"{zombie_seed}:{j}:t{t}"
    await event(ti, this.first, f"{value}:first" if this.first else None, record)
    (sync / f"{name}{t}-started").touch()
    for n, key in enumerate(this.keys):
        await event(ti, key, f"{value}:{n}", record)
    (sync / f"{name}{t}-done").touch()
    if this.zombie:
        await wait_for(sync / f"{name}{t + 1}-started")
        for n, zombie_key in enumerate(this.zombie):
            await event(ti, zombie_key, f"{value}:zombie{n}" if zombie_key else None, record, zombie=True)


async def wait_for(path: Path, timeout: float = 300) -> None:
    """Until another producer process creates ``path``."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear: did another producer process die?")
        await asyncio.sleep(0.05)


class Progress:
    """How many events of its load a producer has started, with awaitable thresholds."""

    def __init__(self) -> None:
        self.count = 0
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []

    def advance(self) -> None:
        """One more event started."""
        self.count += 1
        while self._waiting and self._waiting[0][0] <= self.count:
            heapq.heappop(self._waiting)[2].set_result(None)

    async def reached(self, count: int) -> None:
        """Until ``count`` events have started."""
        if self.count >= count:
            return
        waiting = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (count, id(waiting), waiting))
        await waiting


class Expected(NamedTuple):
    """The view the acknowledged events imply, folded by the fencing rule."""

    #: XCom identity (dag, run, task, map index, key) -> (value, try, partition, offset).
    rows: dict[tuple[Any, ...], tuple[str, int, int, int]]
    #: Task instance -> its current try, where above 1 (the view's ti_try).
    tries: dict[tuple[Any, ...], int]
    #: ``(partition, offset)`` of the fenced pushes and clears.
    fenced_pushes: set[tuple[int, int]]
    fenced_clears: set[tuple[int, int]]
    #: Task instance -> its events ``(partition, offset, kind, key, try, fenced)`` in log order.
    history: dict[tuple[Any, ...], list[tuple[int, int, str, str | None, int, bool]]]
    #: Events folded.
    events: int


def acknowledged(files: Iterable[Path]) -> list[dict[str, Any]]:
    """The acknowledged events of the producers' files, in log order (partition, offset):
    the order a view folds them in, whichever process wrote them when."""
    events = []
    for f in files:
        for line in f.read_text().splitlines():
            e = json.loads(line)
            if e["kind"] != "failed":
                events.append(e)
    events.sort(key=lambda e: (e["partition"], e["offset"]))
    return events


def expected_view(events: Iterable[Mapping[str, Any]], until: Mapping[int, int] | None = None) -> Expected:
    """Fold acknowledged events (in log order) by the fencing rule of docs/semantics.md,
    independently of xcombus.fold: per task instance the current try is the highest of its
    pushes and clears so far (a try below 1 counts as 1); an older try's event is fenced; a
    newer try's event first drops the task instance's rows; a clear drops them all.
    ``until``: partition -> first offset not folded (a view's offsets), else everything."""
    by_ti: dict[tuple[Any, ...], dict[str, tuple[str, int, int, int]]] = {}
    tries: dict[tuple[Any, ...], int] = {}
    fenced_pushes: set[tuple[int, int]] = set()
    fenced_clears: set[tuple[int, int]] = set()
    history: dict[tuple[Any, ...], list[tuple[int, int, str, str | None, int, bool]]] = {}
    count = 0
    for e in events:
        position = (e["partition"], e["offset"])
        if until is not None and position[1] >= until.get(position[0], 0):
            continue
        count += 1
        ti, try_number = tuple(e["ti"]), e.get("try", 1)
        effective, current = max(try_number, 1), tries.get(ti, 1)
        fenced = effective < current
        history.setdefault(ti, []).append((*position, e["kind"], e.get("key"), try_number, fenced))
        if fenced:
            (fenced_pushes if e["kind"] == "push" else fenced_clears).add(position)
            continue
        if effective > current:
            by_ti.pop(ti, None)
            tries[ti] = effective
        if e["kind"] == "clear":
            by_ti.pop(ti, None)
        else:
            by_ti.setdefault(ti, {})[e["key"]] = (e["value"], try_number, *position)
    rows = {(*ti, key): row for ti, keyed in by_ti.items() for key, row in keyed.items()}
    return Expected(rows, {ti: t for ti, t in tries.items() if t > 1}, fenced_pushes, fenced_clears, history,
                    count)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--pushes", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0, help="this producer's number (0 .. producers-1)")
    parser.add_argument("--retried", type=int, default=0,
                        help="retried task instances whose try 1 this producer runs")
    parser.add_argument("--producers", type=int, default=1)
    parser.add_argument("--sync", type=Path, help="a folder the producer processes share")
    args = parser.parse_args()
    asyncio.run(produce(args.out, args.pushes, args.seed, retried=args.retried, producers=args.producers,
                        sync=args.sync))


if __name__ == "__main__":
    main()
