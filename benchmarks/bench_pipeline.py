"""The cheap xcombus figures: push throughput and latency, pull latency, fan-in.

Each function measures one figure once, on a fresh topic and view file, and returns
``(values, samples)``: figure id -> value, and figure id -> raw samples (seconds) for plots.
``benchmarks/suite.py`` repeats them and writes docs/benchmarks.md. Figure ids come from
``figures.py``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.common import DAG, REPO, RUN, SMALL_STR, WARMUP, Bench, Samples, Values, percentile, timed
from benchmarks.figures import push_tput
from xcombus import TaskInstance, XComBus

LATENCY_SAMPLES = 2_000  # timed operations per repeat for the latency figures
FANIN_WIDTH = 1_000  # mapped task instances in the fan-in figure
FANIN_SAMPLES = 200


async def push_concurrently(tis: Sequence[TaskInstance], total: int, workers: int,
                            key_of: Callable[[int], str], value_of: Callable[[int], Any] = lambda i: i,
                            ) -> float:
    """Push ``total`` values from ``workers`` coroutines; return the elapsed seconds.

    Push ``i`` goes to task instance ``tis[i % len(tis)]`` under key ``key_of(i)``; each
    coroutine awaits its push (the broker's acknowledgement) before taking the next.
    """
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:  # a shared iterator: each push is taken exactly once
            await tis[i % len(tis)].xcom_push(key_of(i), value_of(i))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return time.perf_counter() - start


#: A value shaped like a real XCom: a record with nested lists and a dict (340 bytes of JSON).
RECORD = {"run": "scheduled__2026-11-24T00:00:00+00:00", "rows": 1_234, "ok": True,
          "ratio": 0.875, "path": "s3://bucket/exports/2026/11/24/part-00017.parquet",
          "columns": ["id", "city", "temp_c", "measured_at", "station", "quality"],
          "stats": {"min": -12.5, "max": 31.0, "mean": 14.2, "nulls": 0},
          "partitions": list(range(24))}


async def bench_push_throughput(bench: Bench, pushes: int, concurrency: int, *,
                                record: bool = False) -> tuple[Values, Samples]:
    """``concurrency`` task instances, one coroutine each, push small ints (or RECORDs)
    until ``pushes``."""
    value_of: Callable[[int], Any] = (lambda i: RECORD) if record else (lambda i: i)
    async with XComBus(bench.fresh("push")) as bus:
        tis = [bus.task_instance(DAG, RUN, f"worker_{w}") for w in range(concurrency)]
        await push_concurrently(tis, concurrency, concurrency, lambda i: "value", value_of)  # connect
        elapsed = await push_concurrently(tis, pushes, concurrency, lambda i: "value", value_of)
    return {push_tput(concurrency, record=record): pushes / elapsed}, {}


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


async def bench_push_throughput_uvloop(bench: Bench, pushes: int, concurrency: int) -> tuple[Values, Samples]:
    """The same figure with uvloop as the event loop (``push_on_uvloop.py``, its own process)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.push_on_uvloop",
        "--bootstrap", bench.bootstrap, "--workdir", str(bench.workdir),
        "--pushes", str(pushes), "--concurrency", str(concurrency), cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    if proc.returncode != 0:
        raise RuntimeError(f"push_on_uvloop.py failed ({proc.returncode}): {err.decode()[-2000:]}")
    measured = json.loads(out.decode().strip().splitlines()[-1])
    return {push_tput(concurrency, uvloop=True): measured[push_tput(concurrency)]}, {}


async def bench_push_latency(bench: Bench) -> tuple[Values, Samples]:
    async with XComBus(bench.fresh("pushlat")) as bus:
        ti = bus.task_instance(DAG, RUN, "sequential")
        lat = await timed(lambda: ti.xcom_push("value", SMALL_STR), LATENCY_SAMPLES, WARMUP)
    return ({"push_lat_p50": percentile(lat, 50) * 1e3, "push_lat_p99": percentile(lat, 99) * 1e3},
            {"push_lat": lat})


async def bench_pull_eventual(bench: Bench) -> tuple[Values, Samples]:
    async with XComBus(bench.fresh("pull"), materialize=True) as bus:
        up = bus.task_instance(DAG, RUN, "extract")
        await up.xcom_push("value", SMALL_STR)
        down = bus.task_instance(DAG, RUN, "load")
        if await down.xcom_pull(task_ids="extract", key="value", map_indexes=-1) != SMALL_STR:
            raise RuntimeError("the read-your-writes pull did not return the pushed value")

        async def pull() -> None:
            value = await down.xcom_pull(task_ids="extract", key="value", map_indexes=-1,
                                         consistency="eventual")
            assert value == SMALL_STR

        lat = await timed(pull, LATENCY_SAMPLES, WARMUP)
    return ({"pull_ev_p50": percentile(lat, 50) * 1e6, "pull_ev_p99": percentile(lat, 99) * 1e6},
            {"pull_ev": lat})


async def bench_pull_strong(bench: Bench) -> tuple[Values, Samples]:
    async with XComBus(bench.fresh("pullryw"), materialize=True) as bus:
        await bus.task_instance(DAG, RUN, "extract").xcom_push("value", SMALL_STR)
        down = bus.task_instance(DAG, RUN, "load")

        async def pull() -> None:
            value = await down.xcom_pull(task_ids="extract", key="value", map_indexes=-1)
            assert value == SMALL_STR

        lat = await timed(pull, LATENCY_SAMPLES, WARMUP)
    return ({"pull_ryw_p50": percentile(lat, 50) * 1e3, "pull_ryw_p99": percentile(lat, 99) * 1e3},
            {"pull_ryw": lat})


async def bench_fanin(bench: Bench) -> tuple[Values, Samples]:
    """Fan-in over 1,000 map indexes, read-your-writes (the default) and eventual."""
    async with XComBus(bench.fresh("fanin"), materialize=True) as bus:
        await asyncio.gather(*(bus.task_instance(DAG, RUN, "mapped", i).xcom_push("return_value", i)
                               for i in range(FANIN_WIDTH)))
        down = bus.task_instance(DAG, RUN, "reduce")
        expected = list(range(FANIN_WIDTH))
        if await down.xcom_pull(task_ids="mapped") != expected:  # read-your-writes: waits once
            raise RuntimeError("the fan-in pull did not return every map index in order")

        async def strong() -> None:
            assert await down.xcom_pull(task_ids="mapped") == expected

        async def eventual() -> None:
            assert await down.xcom_pull(task_ids="mapped", consistency="eventual") == expected

        lat_strong = await timed(strong, FANIN_SAMPLES, 20)
        lat_eventual = await timed(eventual, FANIN_SAMPLES, 20)
    return ({"fanin_ryw_p50": percentile(lat_strong, 50) * 1e3,
             "fanin_ev_p50": percentile(lat_eventual, 50) * 1e3},
            {"fanin_ryw": lat_strong, "fanin_ev": lat_eventual})
