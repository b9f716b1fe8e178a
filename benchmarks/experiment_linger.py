"""An experiment behind the publisher's ``linger_ms=0``: what a linger would do to push
throughput and single-push latency. Not part of the timed suite.

    python benchmarks/experiment_linger.py [--rounds 3] [LINGER_MS ...]

Needs a broker on ``XCOMBUS_BOOTSTRAP_SERVERS`` (default 127.0.0.1:29092). The publisher
batches on its own (a lane per partition hands aiokafka whole batches, and the next batch
fills while one is on the wire), so a linger can only add waiting; this measures how much.
Each round runs, for each linger in alternating order on fresh topics, the suite's two push
figures: 100,000 pushes from 1,000 task instances (pushes/s, CPU µs per push) and 2,000
sequential pushes (latency p50/p99). The linger is set on aiokafka's producer, which the
publisher creates; nothing else changes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_pipeline
from common import DAG, RUN, Bench

import xcombus.producer
from xcombus import XComBus

PUSHES = 100_000


class _Lingering:
    """Stands in for aiokafka's producer class in xcombus.producer: same, plus a linger."""

    linger_ms = 0
    real = xcombus.producer.AIOKafkaProducer

    def __new__(cls, **options: Any) -> Any:  # type: ignore[misc]
        return cls.real(**{**options, "linger_ms": cls.linger_ms})


async def one(bench: Bench) -> tuple[float, float, float, float]:
    async with XComBus(bench.fresh("linger")) as bus:
        tis = [bus.task_instance(DAG, RUN, f"worker_{w}") for w in range(1_000)]
        await bench_pipeline.push_concurrently(tis, 20_000, 1_000, lambda i: "value")
        cpu = time.process_time()
        elapsed = await bench_pipeline.push_concurrently(tis, PUSHES, 1_000, lambda i: "value")
        cpu = time.process_time() - cpu
    values, _ = await bench_pipeline.bench_push_latency(bench)
    return PUSHES / elapsed, cpu / PUSHES * 1e6, values["push_lat_p50"], values["push_lat_p99"]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("lingers", nargs="*", type=int, default=[0, 2, 5])
    args = parser.parse_args()
    bench = Bench(os.environ.get("XCOMBUS_BOOTSTRAP_SERVERS", "127.0.0.1:29092"),
                  Path(tempfile.mkdtemp(prefix="xcombus-linger-")))
    results: dict[int, list[tuple[float, float, float, float]]] = {ms: [] for ms in args.lingers}
    xcombus.producer.AIOKafkaProducer = _Lingering  # type: ignore[misc]
    try:
        for r in range(args.rounds):
            for ms in args.lingers if r % 2 == 0 else args.lingers[::-1]:
                _Lingering.linger_ms = ms
                measured = await one(bench)
                results[ms].append(measured)
                print(f"linger {ms:2d} ms: {measured[0]:9,.0f} pushes/s  {measured[1]:5.2f} µs CPU/push  "
                      f"latency p50 {measured[2]:.2f} ms  p99 {measured[3]:.2f} ms", flush=True)
            await bench.delete_topics()
    finally:
        xcombus.producer.AIOKafkaProducer = _Lingering.real  # type: ignore[misc]
        await bench.delete_topics()
    print("medians:")
    for ms, rows in results.items():
        tput, cpu, p50, p99 = (statistics.median(col) for col in zip(*rows, strict=True))
        print(f"linger {ms:2d} ms: {tput:9,.0f} pushes/s  {cpu:5.2f} µs CPU/push  "
              f"latency p50 {p50:.2f} ms  p99 {p99:.2f} ms")


if __name__ == "__main__":
    asyncio.run(main())
