"""What a bare await costs on each event loop: the floor under a push's CPU.

    python benchmarks/experiment_loop_floor.py [--awaits N] [--rounds R]

No broker, no xcombus: 1,000 coroutines each await a fresh future, again and again, while
one resolver task completes every pending future once per turn of the loop, as the
publisher's lanes do when a batch is acknowledged. What is left is asyncio's part of a
push: a future, ``set_result`` scheduling the waiter, the loop running it, the task
stepping its coroutine. Each round runs asyncio's loop and uvloop (when installed) in
fresh processes, alternating, and prints CPU µs per await.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time


async def _waiters(awaits: int, concurrency: int) -> float:
    loop = asyncio.get_running_loop()
    pending: list[asyncio.Future[None]] = []
    todo = iter(range(awaits))

    async def waiter() -> None:
        for _ in todo:
            fut = loop.create_future()
            pending.append(fut)
            await fut

    async def resolver() -> None:
        while True:
            await asyncio.sleep(0)
            batch = pending[:]
            pending.clear()
            for fut in batch:
                fut.set_result(None)

    resolving = loop.create_task(resolver())
    started = time.process_time()
    await asyncio.gather(*(waiter() for _ in range(concurrency)))
    cpu = time.process_time() - started
    resolving.cancel()
    return cpu / awaits * 1e6


def _child(loop_name: str, awaits: int) -> None:
    factory = None
    if loop_name == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        print(json.dumps({"loop": loop_name, "cpu_us_per_await": runner.run(_waiters(awaits, 1_000))}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--awaits", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.awaits)
        return
    try:
        import uvloop  # noqa: F401
        loops = ["asyncio", "uvloop"]
    except ImportError:
        loops = ["asyncio"]
    results: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(args.rounds):
        for name in loops:
            out = subprocess.run([sys.executable, __file__, "--child", name, "--awaits", str(args.awaits)],
                                 check=True, capture_output=True, text=True, timeout=300).stdout
            results[name].append(json.loads(out)["cpu_us_per_await"])
    for name, values in results.items():
        print(f"{name:8s} CPU per await: " + ", ".join(f"{v:.2f}" for v in values) + " µs")


if __name__ == "__main__":
    main()
