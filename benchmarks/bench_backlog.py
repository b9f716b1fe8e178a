"""The 1,000,000-event figures: drain rate and peak RSS of the materializer, rebuild, and
pulls on the resulting million-row view.

The backlog is written once per run to its own topic and then only read (a topic is
immutable), so every repeat drains the same events into a fresh view file with a fresh
consumer group. Its shape is what an Airflow deployment produces: every event is a
*different* XCom (``runs x 10 tasks x 250 map indexes x 4 keys``, small string values),
so the view ends with one row per event and the materializer inserts every event, instead
of folding most of them away as a backlog of repeated pushes to a few keys would.

:func:`produce` can also write a backlog whose XComs are each pushed several times (what the
version index stores: every push but the current one), and weave a few other events in
(``side``: the tracked XCom of :mod:`benchmarks.bench_history`); :func:`drain` and
:func:`bench_rebuild` then check the rows the view must hold (``rows``) instead of one per event.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import (
    MATERIALIZER_CMD,
    REPO,
    WARMUP,
    Bench,
    Samples,
    Spawn,
    Values,
    end_offsets,
    materializer_env,
    percentile,
    timed,
    view_offsets,
)
from xcombus import Settings, XComBus
from xcombus.rebuild import rebuild

KEYS = ("return_value", "rows", "path", "checksum")
TASKS, MAP = 10, 250
PER_RUN = TASKS * MAP  # task instances per DAG run
PRODUCE_WORKERS = 1_000
RSS_SAMPLE_S = 0.02


def ident(i: int) -> tuple[str, str, int, str]:
    """Event ``i`` of the backlog -> (run_id, task_id, map_index, key)."""
    ti, key = divmod(i, len(KEYS))
    run, rest = divmod(ti, PER_RUN)
    task, map_index = divmod(rest, MAP)
    return f"backlog__{run:05d}", f"task_{task}", map_index, KEYS[key]


def value_of(i: int) -> str:
    return f"s3://bucket/k{i:08d}"  # 22 bytes


#: Writes extra events while the backlog is produced: given the bus and a function saying how
#: many backlog pushes have been issued so far, returns how many events it wrote.
Side = Callable[[XComBus, Callable[[], int]], Awaitable[int]]


async def produce(bench: Bench, events: int, *, versions: int = 1,
                  side: Side | None = None) -> tuple[Settings, float]:
    """Write the backlog; return its settings and the push rate achieved (pushes/s).

    ``versions`` > 1: ``events / versions`` XComs, each pushed ``versions`` times a pass apart
    (event ``i`` is XCom ``i % (events / versions)``), so every push but the last of each is
    replaced by a later batch. ``side`` runs beside the pushers (its events are on the topic
    too, and not counted in the rate)."""
    if events % versions:
        raise ValueError(f"events ({events}) must be a multiple of versions ({versions})")
    xcoms = events // versions
    settings = bench.fresh("backlog")
    issued = 0
    async with XComBus(settings) as bus:
        counter = iter(range(events))

        async def worker() -> None:
            nonlocal issued
            for i in counter:
                issued += 1
                run_id, task_id, map_index, key = ident(i % xcoms)
                await bus.task_instance("backlog_dag", run_id, task_id, map_index).xcom_push(key, value_of(i))

        async def beside() -> int:
            return 0 if side is None else await side(bus, lambda: issued)

        start = time.perf_counter()
        extra, *_ = await asyncio.gather(beside(), *(worker() for _ in range(PRODUCE_WORKERS)))
        elapsed = time.perf_counter() - start
    ends = await end_offsets(settings)
    if sum(ends.values()) != events + extra:
        raise RuntimeError(f"expected {events + extra} events on the topic, found {sum(ends.values())}")
    return settings, events / elapsed


def _vm_hwm_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _tree(ps: psutil.Process) -> list[psutil.Process]:
    try:
        return [ps, *ps.children(recursive=True)]
    except psutil.Error:
        return [ps]


def _cpu_s(p: psutil.Process) -> float:
    try:
        t = p.cpu_times()
    except psutil.Error:
        return float("nan")
    return t.user + t.system


def _tree_rss_mib(ps: psutil.Process) -> float:
    total = 0
    for p in _tree(ps):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            return float("nan")
    return total / 2**20


def drain(bench: Bench, backlog: Settings, events: int, *, rows: int | None = None,
          spawn: Spawn = subprocess.Popen) -> tuple[Values, Samples, Path]:
    """Run ``xcombus materialize`` on a fresh view until it applied the backlog's ``events``
    (every event on the topic) into ``rows`` rows (default: one per event).

    ``spawn`` starts the materializer process (``subprocess.Popen``'s signature): a profiler
    passes one that attaches to it.

    The clock runs from spawning the process (Python start-up, imports, opening the view,
    joining the group included) until the view's offsets reach the end offsets. Memory
    counts the materializer *and its view-writer child*: their summed RSS is sampled every
    20 ms with psutil, and the reported peak is the sum of each process's own high-water
    mark (``VmHWM`` in ``/proc/<pid>/status``, read before the processes stop), an upper
    bound of their peak together since the two peaks need not coincide.
    """
    view = bench.view_file("drain")
    settings = backlog.replace(view_path=str(view))
    out = open(bench.workdir / f"materializer-drain-{uuid.uuid4().hex[:8]}.log", "wb")  # noqa: SIM115
    conn: list[sqlite3.Connection | None] = [None]
    timeline: list[tuple[float, float, int]] = []  # (s since spawn, RSS MiB, events applied)
    start = time.perf_counter()
    proc = spawn(MATERIALIZER_CMD,
                 env=materializer_env(settings, f"bench-drain-{uuid.uuid4().hex[:8]}"),
                 cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    ps = psutil.Process(proc.pid)
    first: tuple[float, int] | None = None
    try:
        while True:
            now = time.perf_counter() - start
            applied = sum(view_offsets(view, conn).values())
            rss = _tree_rss_mib(ps)
            timeline.append((now, rss, applied))
            if applied and first is None:
                first = (now, applied)
            if applied >= events:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"the materializer exited with {proc.returncode}; see {out.name}")
            if now > 900:
                raise RuntimeError(f"the materializer did not catch up in 900 s ({applied} of {events})")
            time.sleep(RSS_SAMPLE_S)
        elapsed = time.perf_counter() - start
        procs = _tree(ps)
        hwms = [_vm_hwm_kib(p.pid) for p in procs]
        cpu = [_cpu_s(p) for p in procs]
        hwm = sum(h for h in hwms if h is not None) if None not in hwms else None
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()
        if conn[0] is not None:
            conn[0].close()
    with sqlite3.connect(f"file:{view}?mode=ro", uri=True) as db:
        found = db.execute("SELECT count(*) FROM xcom").fetchone()[0]
        applied_events = db.execute("SELECT sum(applied_events) FROM offsets").fetchone()[0]
    expected = events if rows is None else rows
    if applied_events != events or found != expected:
        raise RuntimeError(f"the view applied {applied_events} events into {found} rows; expected "
                           f"{events} into {expected}")
    assert first is not None
    peak = (hwm / 1024) if hwm is not None else max(r for _, r, _ in timeline)
    values = {
        "drain_rate": events / elapsed,
        "drain_rate_steady": (events - first[1]) / max(1e-9, elapsed - first[0]),
        "drain_first_s": first[0],
        "rss_peak": peak,
        "rss_sampled_peak": max(r for _, r, _ in timeline),
        "rss_peak_materializer": (hwms[0] or 0) / 1024,
        "rss_peak_writer": sum(h or 0 for h in hwms[1:]) / 1024,
        "drain_cpu_us_materializer": cpu[0] / events * 1e6,
        "drain_cpu_us_writer": sum(cpu[1:]) / events * 1e6,
        "drain_s": elapsed,
    }
    samples = {"rss_t": [t for t, _, _ in timeline], "rss_mib": [r for _, r, _ in timeline],
               "rss_applied": [float(a) for _, _, a in timeline]}
    return values, samples, view


async def bench_rebuild(bench: Bench, backlog: Settings, events: int, *, rows: int | None = None) -> Values:
    """``xcombus.audit.rebuild`` of the whole backlog into a fresh view file, in this process
    (``events`` and ``rows`` as for :func:`drain`)."""
    into = bench.view_file("rebuild")
    start = time.perf_counter()
    summary = await rebuild(backlog, into)
    elapsed = time.perf_counter() - start
    expected = events if rows is None else rows
    if summary.events != events or summary.rows != expected or summary.dead_letters:
        raise RuntimeError(f"rebuild applied {summary.events} events into {summary.rows} rows "
                           f"({summary.dead_letters} dead letters); expected {events} into {expected}")
    into.unlink(missing_ok=True)
    return {"rebuild_s": elapsed, "rebuild_rate": events / elapsed}


async def bench_big_view_pulls(backlog: Settings, view: Path, events: int) -> tuple[Values, Samples]:
    """Pulls of random single keys on the million-row view, from a process without a
    materializer (the deployment's shape: the view is another process's file)."""
    settings = backlog.replace(view_path=str(view))
    rng = random.Random(7)
    async with XComBus(settings) as bus:
        picks = []
        for _ in range(2 * (2_000 + WARMUP)):  # pulls of random XComs, made before the clock runs
            i = rng.randrange(events)
            run_id, task_id, map_index, key = ident(i)
            picks.append((bus.task_instance("backlog_dag", run_id, "downstream"), task_id, map_index,
                          key, value_of(i)))
        order = iter(picks)

        async def pull(consistency: Any) -> None:
            ti, task_id, map_index, key, expected = next(order)
            value = await ti.xcom_pull(task_ids=task_id, key=key, map_indexes=map_index,
                                       consistency=consistency)
            assert value == expected, (value, expected)

        ev = await timed(lambda: pull("eventual"), 2_000, WARMUP)
        ryw = await timed(lambda: pull("strong"), 2_000, WARMUP)
    return ({"big_pull_ev_p50": percentile(ev, 50) * 1e6, "big_pull_ryw_p50": percentile(ryw, 50) * 1e3},
            {"big_pull_ev": ev, "big_pull_ryw": ryw})

