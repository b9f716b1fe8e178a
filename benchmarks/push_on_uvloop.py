"""The push-throughput figure with uvloop as the event loop, in its own process.

    python -m benchmarks.push_on_uvloop --bootstrap HOST:PORT --workdir DIR [--pushes N] [--concurrency C]

Runs ``bench_pipeline.bench_push_throughput`` (the same function, fresh topic and bus) on
uvloop instead of asyncio's default loop and prints its result as JSON. A separate process
because an event loop is chosen once per process; the suite calls it in every
repeat, next to the same figure on the standard loop, when uvloop is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import uvloop

from benchmarks import bench_pipeline
from benchmarks.common import Bench


async def _measure(args: argparse.Namespace) -> dict[str, float]:
    bench = Bench(args.bootstrap, Path(args.workdir))
    try:
        values, _ = await bench_pipeline.bench_push_throughput(bench, args.pushes, args.concurrency)
    finally:
        await bench.delete_topics()
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--pushes", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=1_000)
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        print(json.dumps(runner.run(_measure(args))))


if __name__ == "__main__":
    main()
