"""Profile the hot paths behind the targets (not part of the timed suite).

    python -m benchmarks.profile_paths push     # CPU and GC per push, then cProfile of the push path
    python -m benchmarks.profile_paths drain    # py-spy on the materializer process, then cProfile of rebuild
    python -m benchmarks.profile_paths visible  # py-spy on the materializer at 5,000 pushes/s, + CPU split
    python -m benchmarks.profile_paths rebuild  # the same as drain

Needs a broker: ``XCOMBUS_BOOTSTRAP_SERVERS`` (else 127.0.0.1:29092). py-spy must be
installed (``pip install py-spy``). Profiles go to ``--out`` (default a temporary directory):
``.pstats`` for cProfile, collapsed stacks (``.txt``) for py-spy; a summary is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import cProfile
import gc
import io
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks import bench_backlog, bench_pipeline, bench_visible
from benchmarks.common import DAG, RUN, Bench, log
from xcombus import XComBus
from xcombus.events import validate_key


def _pstats_summary(prof: cProfile.Profile, path: Path, top: int = 25) -> None:
    prof.dump_stats(path)
    for order in ("tottime", "cumulative"):
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).strip_dirs().sort_stats(order).print_stats(top)
        print(f"--- top {top} by {order} ---")
        print("\n".join(buf.getvalue().splitlines()[6:6 + top + 3]))


def collapsed_summary(path: Path, top: int = 30) -> None:
    """Self time and inclusive time per function from py-spy's collapsed stacks."""
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].split("/")[-1] + ")"
                  if " (" in f else f for f in stack.split(";")]
        self_t[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    print(f"{total} samples")
    print(f"--- top {top} self ---")
    for f, n in self_t.most_common(top):
        print(f"{100 * n / total:5.1f}%  {f}")
    print(f"--- top {top} inclusive ---")
    for f, n in incl.most_common(top):
        print(f"{100 * n / total:5.1f}%  {f}")


class _Spies:
    """A ``spawn`` for the benches that attaches py-spy to every ``xcombus materialize``
    it starts (``--subprocesses``: its view-writer child too; each stack starts with its
    process) and reads the materializer's CPU time just before it is stopped."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.spies: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.cpu: dict[str, float] = {}

    def __call__(self, args: Any, *a: Any, **kw: Any) -> subprocess.Popen[bytes]:
        cpu = self.cpu

        class Watched(subprocess.Popen):  # type: ignore[type-arg]
            def send_signal(self, sig: int) -> None:
                with contextlib.suppress(psutil.Error):
                    t = psutil.Process(self.pid).cpu_times()
                    cpu["materializer"] = t.user + t.system
                super().send_signal(sig)

        proc: subprocess.Popen[bytes] = Watched(args, *a, **kw)
        if "materialize" in args:
            out = self.out_dir / f"materializer-{proc.pid}.txt"
            spy = subprocess.Popen([shutil.which("py-spy") or "py-spy", "record", "--pid", str(proc.pid),
                                    "--rate", "250", "--native", "--subprocesses", "--format", "raw",
                                    "-o", str(out)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.spies.append((spy, out))
        return proc

    def finish(self) -> list[Path]:
        """Wait for every py-spy to write its profile; return the profiles."""
        outs = []
        for spy, out in self.spies:
            spy.wait(60)
            outs.append(out)
        self.spies.clear()
        return outs


class _GcTimer:
    """Counts and times the collector's passes per generation (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.passes: collections.Counter[int] = collections.Counter()
        self.seconds: collections.Counter[int] = collections.Counter()
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.passes[info["generation"]] += 1
            self.seconds[info["generation"]] += time.perf_counter() - self._started

    def __enter__(self) -> _GcTimer:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


def _time_push_steps(bus: XComBus, ti: Any, n: int = 50_000) -> None:
    """The synchronous steps of one push, timed alone (best of 5, collector off).

    Reaches into private names on purpose: this splits ``xcom_push`` into its parts.
    """
    key, raw, partition = ti._key, ti._raw_key, ti._partition
    # Nothing is awaited in here, so the lane cannot send: the records queued by a round
    # are taken back out of it afterwards.
    lane = bus._publisher._lanes[partition]

    steps: dict[str, Any] = {
        "validate_key": lambda: validate_key("value"),
        "serialize the value (backend)": lambda: bus._serialize_value(
            5, key="value", task_id="t", dag_id="d", run_id="r", map_index=-1),
        "Push event + MessagePack": lambda: bus._encode_push("value", b"5", 1, None),
        "queue on the lane (future)": lambda: bus._publisher.submit(partition, raw, b"x" * 40),
        "all of it (bus._submit)": lambda: bus._submit(key, raw, partition, "value", 5, 1, None),
    }
    print(f"the synchronous steps of a push, µs each (best of 5 x {n:,}, collector off):")
    gc.disable()
    try:
        for name, step in steps.items():
            best = float("inf")
            for _ in range(5):
                queued = len(lane.futures)
                started = time.perf_counter()
                for _ in range(n):
                    step()
                best = min(best, time.perf_counter() - started)
                del lane.keys[queued:], lane.values[queued:], lane.futures[queued:]
            print(f"  {name:32s} {best / n * 1e6:.2f}")
    finally:
        gc.enable()


async def profile_push(bench: Bench, out: Path, pushes: int = 100_000) -> None:
    prof = cProfile.Profile()
    async with XComBus(bench.fresh("prof-push")) as bus:
        tis = [bus.task_instance(DAG, RUN, f"worker_{w}") for w in range(1_000)]
        await bench_pipeline.push_concurrently(tis, 2_000, 1_000, lambda i: "value")
        # First without the profiler: CPU per push, and how much of it the collector takes.
        with _GcTimer() as timer:
            cpu = time.process_time()
            elapsed = await bench_pipeline.push_concurrently(tis, pushes, 1_000, lambda i: "value")
            cpu = time.process_time() - cpu
        print(f"{pushes:,} pushes in {elapsed:.2f}s ({pushes / elapsed:,.0f}/s), "
              f"{cpu / pushes * 1e6:.2f} µs CPU per push; the garbage collector:")
        for gen in sorted(timer.passes):
            print(f"  generation {gen}: {timer.passes[gen]} passes, {timer.seconds[gen] * 1e3:.1f} ms, "
                  f"{timer.seconds[gen] / pushes * 1e6:.2f} µs per push")
        _time_push_steps(bus, tis[0])
        prof.enable()
        elapsed = await bench_pipeline.push_concurrently(tis, pushes, 1_000, lambda i: "value")
        prof.disable()
    print(f"{pushes:,} pushes in {elapsed:.2f}s under cProfile ({pushes / elapsed:,.0f}/s)")
    _pstats_summary(prof, out / "push.pstats")


async def profile_drain(bench: Bench, out: Path, events: int) -> None:
    backlog, _ = await bench_backlog.produce(bench, events)
    spies = _Spies(out)
    values, _, view = bench_backlog.drain(bench, backlog, events, spawn=spies)
    print(f"drain under py-spy: {values}")
    for path in spies.finish():
        collapsed_summary(path)
    prof = cProfile.Profile()
    prof.enable()
    started = time.perf_counter()
    await bench_backlog.bench_rebuild(bench, backlog, events)
    prof.disable()
    print(f"(rebuild of the same backlog under cProfile: {time.perf_counter() - started:.1f}s)")
    _pstats_summary(prof, out / "rebuild.pstats")
    view.unlink(missing_ok=True)


async def profile_visible(bench: Bench, out: Path, seconds: float) -> None:
    spies = _Spies(out)
    me = psutil.Process()
    home = os.environ.get("XCOMBUS_BROKER_HOME", "")
    broker = [p for p in psutil.process_iter(["cmdline"])
              if "kafka.Kafka" in " ".join(p.info["cmdline"] or [])
              and home in " ".join(p.info["cmdline"] or [])]
    t0 = me.cpu_times()
    b0 = [p.cpu_times() for p in broker]
    started = time.perf_counter()
    values, _ = await bench_visible.bench_visible(bench, 5_000, seconds, spawn=spies)
    wall = time.perf_counter() - started
    t1 = me.cpu_times()
    print(f"push -> visible under py-spy: {values}")
    pusher = (t1.user + t1.system - t0.user - t0.system) / wall
    print(f"CPU over {wall:.1f}s wall: pusher {pusher:.2f} cores, "
          f"materializer {spies.cpu.get('materializer', float('nan')) / wall:.2f} cores (incl. start-up)")
    for p, b in zip(broker, b0, strict=True):
        a = p.cpu_times()
        print(f"broker pid {p.pid}: {(a.user + a.system - b.user - b.system) / wall:.2f} cores")
    for path in spies.finish():
        collapsed_summary(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("what", choices=["push", "drain", "visible", "rebuild"])
    parser.add_argument("--events", type=int, default=200_000, help="backlog for drain/rebuild")
    parser.add_argument("--seconds", type=float, default=6.0, help="paced seconds for visible")
    parser.add_argument("--out", type=Path, help="where profiles go (default: a temporary directory)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="xcombus-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    bootstrap = os.environ.get("XCOMBUS_BOOTSTRAP_SERVERS", "127.0.0.1:29092")
    bench = Bench(bootstrap, out)
    log(f"profiles in {out}")
    if args.what == "push":
        asyncio.run(profile_push(bench, out))
    elif args.what in ("drain", "rebuild"):
        asyncio.run(profile_drain(bench, out, args.events))
    else:
        asyncio.run(profile_visible(bench, out, args.seconds))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
