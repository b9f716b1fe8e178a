"""History of one XCom from the view's version index, on a small and a large topic, against
the scan of the log; and what the index costs in the view file.

The *tracked* XCom is woven into a backlog while :func:`bench_backlog.produce` writes it
(:func:`write_tracked`): 13 events spread evenly through the topic, as a retried task leaves
them: try 1 pushes 3 versions, try 2 clears and pushes 2, a zombie try 1 pushes once more
(fenced), try 2 pushes 2, try 3 clears and pushes 3; 10 applied versions in all. Its history
is 13 entries long whatever the topic's size; the suite's 1,000,000-event backlog carries it
(the last drained view is the large view), and a topic a tenth of that size written here
carries it too (its view is rebuilt). :func:`bench_history` calls
``xcombus.audit.history(settings, dag, run, task, key, view=...)`` as a user would, a new
fetcher and consumer per call, alternately on the two views (the machine's drift hits both
alike), and with ``view`` a missing file, the scan of the partition from offset 0 (a few
calls: it is linear in the topic). Every call's answer is checked.

:func:`index_size` measures a view file's pages by table (SQLite's ``dbstat``): the whole file
and the index's tables per event. The suite's backlog pushes every XCom once, so its index is
empty by design (a current row is its own index entry); :func:`bench_index_size` writes a
backlog whose XComs are each pushed :data:`VERSIONS` times, what the index stores.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks import bench_backlog
from benchmarks.common import Bench, Samples, Values, percentile
from xcombus import Settings, XComBus
from xcombus.audit import history
from xcombus.rebuild import rebuild

DAG, RUN, TASK, KEY = "history_dag", "history__run", "tracked", "return_value"
#: The tracked XCom's events in log order: (try, "push" or "clear").
SCRIPT: tuple[tuple[int, str], ...] = (
    (1, "push"), (1, "push"), (1, "push"),
    (2, "clear"), (2, "push"), (2, "push"),
    (1, "push"),  # a zombie of try 1, after try 2 started: fenced
    (2, "push"), (2, "push"),
    (3, "clear"), (3, "push"), (3, "push"), (3, "push"),
)
#: What history says of each (the view's verdict).
EXPECTED = ("push", "push", "push", "clear", "push", "push", "fenced", "push", "push", "clear",
            "push", "push", "push")
TRACKED_EVENTS = len(SCRIPT)
#: The tracked XCom has a current row (try 3's last push) besides the backlog's rows.
TRACKED_ROWS = 1
#: Pushes per XCom of the backlog :func:`bench_index_size` writes.
VERSIONS = 4
#: Index tables (none of them in a view before schema 3).
INDEX_TABLES = ("xcom_version", "name", "ti_try")
WARMUP = 3


async def write_tracked(bus: XComBus, issued: Callable[[], int], events: int) -> int:
    """The tracked XCom's :data:`SCRIPT`, event ``n`` once ``n + 1`` thirteenths (fourteenths)
    of the backlog's pushes were issued, each awaited before the next (log order)."""
    for n, (try_number, op) in enumerate(SCRIPT):
        while issued() < events * (n + 1) // (len(SCRIPT) + 1):
            await asyncio.sleep(0.005)
        ti = bus.task_instance(DAG, RUN, TASK, try_number=try_number)
        if op == "clear":
            await ti.xcom_clear()
        else:
            await ti.xcom_push(KEY, f"version {n} of try {try_number}")
    return len(SCRIPT)


async def produce_with_tracked(bench: Bench, events: int) -> tuple[Settings, float]:
    """:func:`bench_backlog.produce` with the tracked XCom woven in (``events`` + 13 on the topic)."""
    return await bench_backlog.produce(bench, events,
                                       side=lambda bus, issued: write_tracked(bus, issued, events))


async def small_topic(bench: Bench, events: int) -> tuple[Settings, Path]:
    """A backlog of ``events`` with the tracked XCom, and a view of it (rebuilt)."""
    settings, _ = await produce_with_tracked(bench, events)
    view = bench.view_file("history-small")
    summary = await rebuild(settings, view)
    if summary.rows != events + TRACKED_ROWS:
        raise RuntimeError(f"the small view holds {summary.rows} rows; expected {events + TRACKED_ROWS}")
    return settings, view


async def _call(settings: Settings, view: Path) -> float:
    start = time.perf_counter()
    events = await history(settings, DAG, RUN, TASK, KEY, view=view)
    elapsed = time.perf_counter() - start
    kinds = tuple(e.kind for e in events)
    if kinds != EXPECTED:
        raise RuntimeError(f"history of the tracked XCom (view {view.name}) listed {kinds}; "
                           f"expected {EXPECTED}")
    return elapsed


async def bench_history(small: Settings, small_view: Path, big: Settings, big_view: Path, *,
                        calls: int = 50, budget_s: float = 60, scan_calls: int = 3) -> tuple[Values, Samples]:
    """History of the tracked XCom from the index on both views, ``calls`` pairs of calls (fewer,
    but at least 5, if they take more than ``budget_s``), then by scanning the log."""
    absent = big_view.with_name("no-view-here.db")  # view=<missing file>: the scan
    for _ in range(WARMUP):
        await _call(small, small_view)
        await _call(big, big_view)
    lat_small: list[float] = []
    lat_big: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(lat_big) < calls and (len(lat_big) < 5 or time.perf_counter() < deadline):
        lat_small.append(await _call(small, small_view))
        lat_big.append(await _call(big, big_view))
    scan_small: list[float] = []
    scan_big: list[float] = []
    for _ in range(scan_calls):
        scan_small.append(await _call(small, absent))
        scan_big.append(await _call(big, absent))
    p50_small, p50_big = percentile(lat_small, 50), percentile(lat_big, 50)
    return ({"history_p50": p50_big * 1e3, "history_p99": percentile(lat_big, 99) * 1e3,
             "history_small_p50": p50_small * 1e3, "history_small_p99": percentile(lat_small, 99) * 1e3,
             "history_size_ratio": p50_big / p50_small,
             "history_scan_s": percentile(scan_big, 50), "history_scan_small_s": percentile(scan_small, 50)},
            {"history_big": lat_big, "history_small": lat_small})


def index_size(view: Path, events: int) -> dict[str, float]:
    """The view file's bytes per event (its pages, so whatever the WAL holds) and the version
    index's (its tables' pages), and the index's rows."""
    with sqlite3.connect(f"file:{view}?mode=ro", uri=True) as db:
        pages = dict(db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall())
        rows = db.execute("SELECT count(*) FROM xcom_version").fetchone()[0]
    index = sum(size for name, size in pages.items() if name in INDEX_TABLES)
    return {"view_bytes": sum(pages.values()) / events, "index_bytes": index / events,
            "index_rows": float(rows), "index_bytes_per_row": index / rows if rows else 0.0}


def backlog_index_size(view: Path, events: int) -> Values:
    """:func:`index_size` of the suite's drained backlog (``events`` on its topic)."""
    size = index_size(view, events)
    return {"view_bytes_per_event": size["view_bytes"], "index_bytes_per_event": size["index_bytes"]}


async def bench_index_size(bench: Bench, events: int) -> Values:
    """A backlog of ``events`` pushes to ``events / VERSIONS`` XComs, drained by ``xcombus
    materialize`` (the live path, batch by batch): the index's bytes per event and per row,
    the view's bytes per event, and the drain's rate."""
    settings, _ = await bench_backlog.produce(bench, events, versions=VERSIONS)
    values, _, view = bench_backlog.drain(bench, settings, events, rows=events // VERSIONS)
    try:
        size = index_size(view, events)
    finally:
        for p in view.parent.glob(view.name + "*"):
            p.unlink(missing_ok=True)
    if size["index_rows"] != events - events // VERSIONS:
        raise RuntimeError(f"the index holds {size['index_rows']:.0f} rows; expected every replaced push, "
                           f"{events - events // VERSIONS}")
    return {"index_bytes_per_event_versions": size["index_bytes"],
            "index_bytes_per_row_versions": size["index_bytes_per_row"],
            "view_bytes_per_event_versions": size["view_bytes"],
            "drain_rate_versions": values["drain_rate"]}
