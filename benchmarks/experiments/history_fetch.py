"""What the fetch size of ``EventFetcher`` does to ``audit.history`` from the version index.

    python -m benchmarks.experiments.history_fetch [--events 100000] [--calls 15]
        [--bootstrap 127.0.0.1:29092]

Writes a backlog with ``bench_history``'s tracked XCom (13 events spread through it), rebuilds
a view, then times ``xcombus.audit.history(..., view=...)`` with the fetch size history uses
(``fetch.ONE_BATCH``: the broker returns the one record batch holding the offset) and with
the reference pulls' ``fetch.NEIGHBOURS`` (up to 1 MiB per partition fetch: every fetch of one
indexed record brings back and decodes the records after it), alternately, p50 of ``--calls``
each.
benchmarks/analysis.md cites it (Issue 14).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import xcombus.fetch
from benchmarks import bench_history
from benchmarks.common import Bench, percentile
from xcombus.audit import history
from xcombus.rebuild import rebuild

_Consumer = xcombus.fetch.AIOKafkaConsumer
#: The fetch size forced on the fetcher's consumer (None: as the fetcher sets it).
_LIMIT: list[int | None] = [None]


def _consumer(*args: Any, **kwargs: Any) -> Any:
    if _LIMIT[0] is not None:
        kwargs["max_partition_fetch_bytes"] = _LIMIT[0]
    return _Consumer(*args, **kwargs)


async def run(events: int, calls: int, bootstrap: str) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="xcombus-history-fetch-"))
    try:
        bench = Bench(bootstrap, workdir)
        settings, _ = await bench_history.produce_with_tracked(bench, events)
        view = bench.view_file("history")
        await rebuild(settings, view)
        xcombus.fetch.AIOKafkaConsumer = _consumer  # type: ignore[misc]
        out: dict[str, list[float]] = {}
        for limit in (None, xcombus.fetch.NEIGHBOURS, None, xcombus.fetch.NEIGHBOURS):
            _LIMIT[0] = limit
            lat = []
            for _ in range(calls):
                start = time.perf_counter()
                found = await history(settings, bench_history.DAG, bench_history.RUN, bench_history.TASK,
                                      bench_history.KEY, view=view)
                lat.append(time.perf_counter() - start)
                assert tuple(e.kind for e in found) == bench_history.EXPECTED
            out.setdefault("one batch (as history reads)" if limit is None else "1 MiB", []).append(
                percentile(lat, 50) * 1e3)
        for name, p50s in out.items():
            print(f"{events:,} events, fetch size {name}: history p50 " + ", ".join(f"{v:.1f}" for v in p50s)
                  + " ms")
    finally:
        xcombus.fetch.AIOKafkaConsumer = _Consumer  # type: ignore[misc]
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=15)
    parser.add_argument("--bootstrap", default=os.environ.get("XCOMBUS_BOOTSTRAP_SERVERS", "127.0.0.1:29092"))
    args = parser.parse_args()
    asyncio.run(run(args.events, args.calls, args.bootstrap))


if __name__ == "__main__":
    main()
