"""Push -> visible in the view, under a sustained paced load, across processes.

Three processes besides the broker:

- this one pushes at a fixed rate (``rate`` pushes/s for ``duration`` s) through one
  ``XComBus`` without a materializer, recording for every push the moment it was called
  and its receipt ``(partition, offset)``;
- the materializer runs as its own process, ``xcombus materialize``, with
  the default settings (a fresh view file and consumer group);
- a reader process (``python -m benchmarks.bench_visible --poll VIEW``) polls the view
  read-only every ``POLL_S`` and records each change of the ``offsets`` table with its
  time. Rows and offsets are committed in one transaction, so the row of a push is visible
  to a reader from the first poll at which ``next_offset`` of its partition is above the
  push's offset.

The latency of a push is that first poll time minus the time the push was called (both
``CLOCK_MONOTONIC``, one clock for every process on the machine). The reader's poll
interval adds up to ``POLL_S`` to each figure.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    DAG,
    MATERIALIZER_CMD,
    REPO,
    RUN,
    Bench,
    Samples,
    Spawn,
    Values,
    end_offsets,
    materializer_env,
    percentile,
    view_offsets,
)
from xcombus import XComBus

POLL_S = 0.0005
TASKS, MAP = 50, 20  # 1,000 task instances, pushed round robin


def poller_main(view: Path, out: Path) -> None:
    """Poll the view's offsets until SIGTERM; write ``t_ns partition next_offset`` lines."""
    stop = False

    def on_term(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    conn: list[sqlite3.Connection | None] = [None]
    last: dict[int, int] = {}
    events: list[tuple[int, int, int]] = []
    ready = out.with_suffix(".ready")
    ready.write_text("ready\n")
    while not stop:
        now = time.monotonic_ns()
        offsets = view_offsets(view, conn)
        for p, o in offsets.items():
            if last.get(p) != o:
                last[p] = o
                events.append((now, p, o))
        time.sleep(POLL_S)
    out.write_text("".join(f"{t} {p} {o}\n" for t, p, o in events))


def _visible_times(timeline: list[tuple[int, int, int]], parts: np.ndarray, offs: np.ndarray) -> np.ndarray:
    """For each push, the first poll time at which its partition's next_offset > offset."""
    out = np.full(len(parts), -1, dtype=np.int64)
    by_part: dict[int, tuple[list[int], list[int]]] = {}
    for t, p, o in timeline:
        times, offsets = by_part.setdefault(p, ([], []))
        times.append(t)
        offsets.append(o)
    for p, (times, offsets) in by_part.items():
        mask = parts == p
        # next_offset is non-decreasing per partition: the first entry with o > offset.
        idx = np.searchsorted(np.asarray(offsets), offs[mask], side="right")
        ok = idx < len(times)
        vals = np.full(mask.sum(), -1, dtype=np.int64)
        vals[ok] = np.asarray(times, dtype=np.int64)[idx[ok]]
        out[mask] = vals
    return out


async def _wait_view(view: Path, ends: dict[int, int], timeout: float) -> None:
    conn: list[sqlite3.Connection | None] = [None]
    deadline = time.monotonic() + timeout
    while True:
        applied = view_offsets(view, conn)
        if all(applied.get(p, 0) >= o for p, o in ends.items() if o > 0):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"the view did not catch up within {timeout}s: {applied} of {ends}")
        await asyncio.sleep(0.01)
    if conn[0] is not None:
        conn[0].close()


async def bench_visible(bench: Bench, rate: int, duration: float, *,
                        spawn: Spawn = subprocess.Popen) -> tuple[Values, Samples]:
    """``rate`` pushes/s for ``duration`` s; ``spawn`` starts the materializer process
    (``subprocess.Popen``'s signature: a profiler passes one that attaches to it)."""
    settings = bench.fresh("visible")
    view = Path(settings.view_path)
    timeline_file = bench.workdir / f"timeline-{uuid.uuid4().hex[:8]}.txt"
    n = int(rate * duration)
    starts = np.zeros(n, dtype=np.int64)
    acks = np.zeros(n, dtype=np.int64)
    parts = np.zeros(n, dtype=np.int64)
    offs = np.zeros(n, dtype=np.int64)
    mat_log = open(bench.workdir / f"materializer-visible-{uuid.uuid4().hex[:8]}.log", "wb")  # noqa: SIM115
    mat: subprocess.Popen[bytes] | None = None
    poller: subprocess.Popen[bytes] | None = None
    try:
        async with XComBus(settings) as bus:  # creates the topic
            mat = spawn(
                MATERIALIZER_CMD,
                env=materializer_env(settings, f"bench-visible-{uuid.uuid4().hex[:8]}"),
                cwd=REPO, stdout=mat_log, stderr=subprocess.STDOUT)
            tis = [bus.task_instance(DAG, RUN, f"task_{t}", m) for t in range(TASKS) for m in range(MAP)]
            # Warm up: every task instance once, then wait until the view holds it all.
            await asyncio.gather(*(ti.xcom_push("value", -1) for ti in tis))
            await _wait_view(view, await end_offsets(settings), 60)
            poller = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_visible", "--poll",
                                       str(view), "--out", str(timeline_file)], cwd=REPO)
            while not timeline_file.with_suffix(".ready").exists():
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)

            async def one(i: int) -> None:
                starts[i] = time.monotonic_ns()
                receipt = await tis[i % len(tis)].xcom_push("value", i)
                acks[i] = time.monotonic_ns()
                parts[i], offs[i] = receipt.partition, receipt.offset

            tasks: set[asyncio.Future[None]] = set()  # only those in flight: a small heap
            t0 = time.monotonic_ns()
            i = 0
            while i < n:
                due = min(n, (time.monotonic_ns() - t0) * rate // 1_000_000_000 + 1)
                while i < due:
                    task = asyncio.ensure_future(one(i))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    i += 1
                await asyncio.sleep(0.0005)
            while tasks:
                await asyncio.gather(*list(tasks))
            pushed_s = (time.monotonic_ns() - t0) / 1e9
            await _wait_view(view, await end_offsets(settings), 60)
            await asyncio.sleep(0.05)
    finally:
        for proc in (poller, mat):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (poller, mat):
            if proc is not None:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        mat_log.close()
    timeline = [tuple(map(int, line.split())) for line in timeline_file.read_text().splitlines()]
    visible = _visible_times(timeline, parts, offs)  # type: ignore[arg-type]
    if (visible < 0).any():
        raise RuntimeError(f"{int((visible < 0).sum())} pushes never appeared in the view")
    lat = ((visible - starts) / 1e9).tolist()
    ack = ((acks - starts) / 1e9).tolist()
    values = {
        "visible_p50": percentile(lat, 50) * 1e3,
        "visible_p99": percentile(lat, 99) * 1e3,
        "visible_max": max(lat) * 1e3,
        "visible_rate": n / pushed_s,
        "visible_ack_p50": percentile(ack, 50) * 1e3,
        "visible_ack_p99": percentile(ack, 99) * 1e3,
        "visible_commits": float(len(timeline)),
    }
    return values, {"visible": lat, "visible_ack": ack}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the view poller of the push -> visible figure")
    parser.add_argument("--poll", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    poller_main(args.poll, args.out)
