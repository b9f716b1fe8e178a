"""An experiment behind ``XCOMBUS_COMPRESSION``'s default: what each Kafka codec does to
push throughput, the pusher's CPU and the topic's size. Not part of the timed suite.

    python -m benchmarks.experiments.topic_compression --log-dir DIR [--rounds 3] [CODEC ...]

Needs a broker on ``XCOMBUS_BOOTSTRAP_SERVERS`` (default 127.0.0.1:29092) and its data
directory (``--log-dir``: for ``xcombus broker start`` it is ``~/.cache/xcombus/broker-PORT/data``),
whose ``*.log`` segment files give the bytes the topic takes per event. Each round pushes
100,000 backlog-like values (22-byte strings) from 1,000 task instances with each codec,
on a fresh topic, in alternating order, after 20,000 untimed pushes; it prints pushes/s,
CPU µs per push (``time.process_time``) and log bytes per event, then the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import bench_pipeline
from benchmarks.common import DAG, RUN, Bench
from xcombus import XComBus

PUSHES = 100_000
WARMUP = 20_000


async def one(bench: Bench, codec: str, log_dir: Path) -> tuple[float, float, float]:
    settings = bench.fresh("compression", compression=codec)
    async with XComBus(settings) as bus:
        tis = [bus.task_instance(DAG, RUN, f"worker_{w}") for w in range(1_000)]
        await bench_pipeline.push_concurrently(tis, WARMUP, 1_000, lambda i: "value")
        cpu = time.process_time()
        elapsed = await bench_pipeline.push_concurrently(
            tis, PUSHES, 1_000, lambda i: "value", lambda i: f"s3://bucket/k{i:08d}")
        cpu = time.process_time() - cpu
    size = sum(f.stat().st_size for f in log_dir.glob(f"{settings.topic}-*/*.log"))
    return PUSHES / elapsed, cpu / PUSHES * 1e6, size / (PUSHES + WARMUP)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--log-dir", type=Path, required=True, help="the broker's data directory")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("codecs", nargs="*", default=["none", "lz4", "zstd", "gzip"])
    args = parser.parse_args()
    bench = Bench(os.environ.get("XCOMBUS_BOOTSTRAP_SERVERS", "127.0.0.1:29092"),
                  Path(tempfile.mkdtemp(prefix="xcombus-compression-")))
    results: dict[str, list[tuple[float, float, float]]] = {c: [] for c in args.codecs}
    try:
        for r in range(args.rounds):
            for codec in args.codecs if r % 2 == 0 else args.codecs[::-1]:
                tput, cpu, size = await one(bench, codec, args.log_dir)
                results[codec].append((tput, cpu, size))
                print(f"{codec:5s} {tput:9,.0f} pushes/s  {cpu:5.2f} µs CPU/push  {size:6.1f} B/event",
                      flush=True)
    finally:
        await bench.delete_topics()
    for codec, rows in results.items():
        print(f"median {codec:5s} {statistics.median(r[0] for r in rows):9,.0f} pushes/s  "
              f"{statistics.median(r[1] for r in rows):5.2f} µs CPU/push  "
              f"{statistics.median(r[2] for r in rows):6.1f} B/event")


if __name__ == "__main__":
    asyncio.run(main())
