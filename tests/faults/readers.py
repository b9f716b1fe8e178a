"""A reader process for scenario 5: pulls in a loop, checks what it reads, reports latency.

``python -m tests.faults.readers OUT.json --seconds S``: read-your-writes pulls of random
keys; every value must be one that was pushed, and per key never older than the last one
this reader saw (monotonic reads). Writes {reads, errors, regressions, p50_ms, p99_ms}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path

from xcombus import XComBus, XComBusError

TASKS, KEYS = 20, 5


async def read(out: Path, seconds: float, seed: int) -> None:
    rng = random.Random(seed)
    latencies: list[float] = []
    errors: list[str] = []
    regressions = 0
    last: dict[tuple[int, int], int] = {}
    async with XComBus() as bus:
        ti = bus.task_instance("load", "r", "reader")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            t, k = rng.randrange(TASKS), rng.randrange(KEYS)
            started = time.perf_counter()
            try:
                value = await ti.xcom_pull(task_ids=f"t{t}", key=f"k{k}", map_indexes=None)
            except XComBusError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append(time.perf_counter() - started)
            if value is not None:
                assert isinstance(value, int), value
                if value < last.get((t, k), -1):
                    regressions += 1
                last[(t, k)] = value
    latencies.sort()
    out.write_text(json.dumps({
        "reads": len(latencies), "errors": errors[:5], "error_count": len(errors),
        "regressions": regressions,
        "p50_ms": latencies[len(latencies) // 2] * 1000 if latencies else None,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else None}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(read(args.out, args.seconds, args.seed))


if __name__ == "__main__":
    main()
