"""Benchmark xcombus's hot paths against a real Kafka broker; write docs/benchmarks.md.

    python benchmarks/bench_pipeline.py [--repeats 3] [--pushes 100000] [--backlog 200000]
                                        [--out docs/benchmarks.md]

The broker is ``XCOMBUS_BOOTSTRAP_SERVERS`` when set; otherwise a local broker
(:class:`xcombus.broker.LocalBroker`) is started in a temporary directory and stopped at
the end. Every figure is measured ``--repeats`` times, each time on a fresh topic and a
fresh view file, and reported as the median with the min and max over the repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import shlex
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from xcombus import Materializer, Settings, TaskInstance, XComBus
from xcombus.broker import KAFKA_VERSION, LocalBroker
from xcombus.watermarks import EndOffsets

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "docs" / "benchmarks.md"
LOCAL_PORT = 29092

DAG, RUN = "bench_dag", "manual__2026-01-01T00:00:00+00:00"
WORKERS = 200  # concurrent task instances pushing in figure 1 and for the backlog
LATENCY_SAMPLES = 2_000  # timed operations per repeat for the latency figures
WARMUP = 200  # untimed operations before each latency series
FANIN_WIDTH = 1_000  # mapped task instances in figure 6
FANIN_SAMPLES = 200
BACKLOG_TASKS, BACKLOG_MAP, BACKLOG_KEYS = 100, 10, ("rows", "path", "checksum", "return_value")
SMALL_STR = "s3://bucket/key-0001"  # 20 bytes


# -- results ----------------------------------------------------------------------------------
@dataclass
class Row:
    """One line of the results table: a figure and its value in every repeat."""

    figure: str
    unit: str
    values: list[float] = field(default_factory=list)


ROWS: tuple[tuple[str, str], ...] = (
    ("1. push throughput (200 concurrent task instances)", "pushes/s"),
    ("2. push latency p50 (sequential)", "ms"),
    ("2. push latency p99 (sequential)", "ms"),
    ("3. materializer drain rate (incl. start-up)", "events/s"),
    ("3. materializer start-up to first applied batch", "ms"),
    ("4. pull latency p50, eventual", "µs"),
    ("4. pull latency p99, eventual", "µs"),
    ("5. pull latency p50, read-your-writes", "ms"),
    ("5. pull latency p99, read-your-writes", "ms"),
    ("6. fan-in pull of 1,000 map indexes p50, eventual", "ms"),
)


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def fmt(value: float) -> str:
    """Three significant digits, thousands separated for large numbers."""
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


# -- the harness ----------------------------------------------------------------------------
class Bench:
    """Makes fresh settings (topic + view file) per figure and repeat; remembers the topics."""

    def __init__(self, bootstrap: str, workdir: Path) -> None:
        self.bootstrap = bootstrap
        self.workdir = workdir
        self.topics: list[str] = []

    def fresh(self, label: str) -> Settings:
        suffix = uuid.uuid4().hex[:12]
        topic = f"xcombus.bench.{label}.{suffix}"
        self.topics.append(topic)
        # An empty environment: the figures are for the default settings, whatever the
        # caller's XCOMBUS_* variables say (except where the broker is).
        return Settings.from_env({}, bootstrap_servers=self.bootstrap, topic=topic,
                                 view_path=str(self.workdir / f"{label}-{suffix}.db"))

    async def delete_topics(self) -> None:
        """Best effort: leave an external broker as it was."""
        if not self.topics:
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="xcombus-bench")
        try:
            await asyncio.wait_for(admin.start(), 10)
            await asyncio.wait_for(admin.delete_topics(self.topics), 30)
        except Exception as exc:  # cleanup only: report and carry on
            print(f"note: could not delete benchmark topics: {exc!r}", file=sys.stderr)
        finally:
            with contextlib.suppress(Exception):
                await admin.close()


async def push_concurrently(tis: Sequence[TaskInstance], total: int,
                            key_of: Callable[[int], str]) -> float:
    """Push ``total`` small values from ``WORKERS`` coroutines; return the elapsed seconds.

    Push ``i`` goes to task instance ``tis[i % len(tis)]`` under key ``key_of(i)``.
    """
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:  # a shared iterator: each push is taken exactly once
            await tis[i % len(tis)].xcom_push(key_of(i), i)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    return time.perf_counter() - start


async def timed(op: Callable[[], Awaitable[object]], samples: int, warmup: int = WARMUP) -> list[float]:
    """Run ``op`` sequentially ``warmup`` times untimed, then ``samples`` times; seconds each."""
    for _ in range(warmup):
        await op()
    out: list[float] = []
    for _ in range(samples):
        start = time.perf_counter()
        await op()
        out.append(time.perf_counter() - start)
    return out


async def end_offsets(settings: Settings) -> dict[int, int]:
    offsets = EndOffsets(settings)
    try:
        return await offsets.get(range(settings.partitions), settings.connect_timeout)
    finally:
        await offsets.aclose()


# -- the figures ----------------------------------------------------------------------------
async def bench_push_throughput(bench: Bench, pushes: int) -> dict[str, float]:
    async with XComBus(bench.fresh("push")) as bus:
        tis = [bus.task_instance(DAG, RUN, f"worker_{w}") for w in range(WORKERS)]
        await push_concurrently(tis, WORKERS, lambda i: "value")  # connect every partition
        elapsed = await push_concurrently(tis, pushes, lambda i: "value")
    return {ROWS[0][0]: pushes / elapsed}


async def bench_push_latency(bench: Bench) -> dict[str, float]:
    async with XComBus(bench.fresh("pushlat")) as bus:
        ti = bus.task_instance(DAG, RUN, "sequential")
        lat = await timed(lambda: ti.xcom_push("value", SMALL_STR), LATENCY_SAMPLES)
    return {ROWS[1][0]: percentile(lat, 50) * 1e3, ROWS[2][0]: percentile(lat, 99) * 1e3}


async def bench_drain(bench: Bench, backlog: int) -> dict[str, float]:
    settings = bench.fresh("drain")
    async with XComBus(settings) as bus:
        tis = [bus.task_instance(DAG, RUN, f"task_{t}", m)
               for t in range(BACKLOG_TASKS) for m in range(BACKLOG_MAP)]
        await push_concurrently(
            tis, backlog, lambda i: BACKLOG_KEYS[(i // len(tis)) % len(BACKLOG_KEYS)])
    ends = {p: o for p, o in (await end_offsets(settings)).items() if o > 0}
    if sum(ends.values()) != backlog:
        raise RuntimeError(f"expected {backlog} events on the topic, found {sum(ends.values())}")

    start = time.perf_counter()
    first_batch: float | None = None
    async with Materializer(settings) as mat:
        while True:
            applied = mat.applied
            if first_batch is None and applied:
                first_batch = time.perf_counter()
            if all(applied.get(p, 0) >= o for p, o in ends.items()):
                break
            task = mat.task
            if task is not None and task.done():
                raise RuntimeError(f"the materializer stopped: {task.exception()!r}")
            if time.perf_counter() - start > 300:
                raise RuntimeError(f"the materializer did not catch up: {applied} of {ends}")
            await mat.wait_progress(0.05)
        elapsed = time.perf_counter() - start
        applied_events, dead = mat.events_applied, mat.dead_letters
    if applied_events != backlog or dead:
        raise RuntimeError(f"applied {applied_events} events ({dead} dead letters), expected {backlog}")
    with contextlib.closing(sqlite3.connect(settings.view_path)) as db:
        rows = db.execute("SELECT count(*) FROM xcom").fetchone()[0]
    expected_rows = len({(i % len(tis), (i // len(tis)) % len(BACKLOG_KEYS)) for i in range(backlog)})
    if rows != expected_rows:
        raise RuntimeError(f"the view holds {rows} XComs, expected {expected_rows}")
    assert first_batch is not None
    return {ROWS[3][0]: backlog / elapsed, ROWS[4][0]: (first_batch - start) * 1e3}


async def bench_pull_eventual(bench: Bench) -> dict[str, float]:
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

        lat = await timed(pull, LATENCY_SAMPLES)
    return {ROWS[5][0]: percentile(lat, 50) * 1e6, ROWS[6][0]: percentile(lat, 99) * 1e6}


async def bench_pull_strong(bench: Bench) -> dict[str, float]:
    async with XComBus(bench.fresh("pullryw"), materialize=True) as bus:
        await bus.task_instance(DAG, RUN, "extract").xcom_push("value", SMALL_STR)
        down = bus.task_instance(DAG, RUN, "load")

        async def pull() -> None:
            value = await down.xcom_pull(task_ids="extract", key="value", map_indexes=-1)
            assert value == SMALL_STR

        lat = await timed(pull, LATENCY_SAMPLES)
    return {ROWS[7][0]: percentile(lat, 50) * 1e3, ROWS[8][0]: percentile(lat, 99) * 1e3}


async def bench_fanin(bench: Bench) -> dict[str, float]:
    async with XComBus(bench.fresh("fanin"), materialize=True) as bus:
        await asyncio.gather(*(bus.task_instance(DAG, RUN, "mapped", i).xcom_push("return_value", i)
                               for i in range(FANIN_WIDTH)))
        down = bus.task_instance(DAG, RUN, "reduce")
        expected = list(range(FANIN_WIDTH))
        if await down.xcom_pull(task_ids="mapped") != expected:  # read-your-writes: waits once
            raise RuntimeError("the fan-in pull did not return every map index in order")

        async def pull() -> None:
            values = await down.xcom_pull(task_ids="mapped", consistency="eventual")
            assert values == expected

        lat = await timed(pull, FANIN_SAMPLES, warmup=20)
    return {ROWS[9][0]: percentile(lat, 50) * 1e3}


# -- running and reporting ----------------------------------------------------------------
async def run_all(bench: Bench, args: argparse.Namespace) -> list[Row]:
    rows = {name: Row(name, unit) for name, unit in ROWS}
    figures: list[tuple[str, Callable[[], Awaitable[dict[str, float]]]]] = [
        ("push throughput", lambda: bench_push_throughput(bench, args.pushes)),
        ("push latency", lambda: bench_push_latency(bench)),
        ("materializer drain", lambda: bench_drain(bench, args.backlog)),
        ("pull eventual", lambda: bench_pull_eventual(bench)),
        ("pull read-your-writes", lambda: bench_pull_strong(bench)),
        ("fan-in pull", lambda: bench_fanin(bench)),
    ]
    try:
        # Warm the broker's JIT, its group coordinator (the first consumer group creates
        # __consumer_offsets) and the client code paths; nothing here is recorded.
        started = time.perf_counter()
        await bench_push_throughput(bench, min(args.pushes, 20_000))
        await bench_drain(bench, min(args.backlog, 20_000))
        log(f"warm-up done in {time.perf_counter() - started:.1f}s")
        for repeat in range(1, args.repeats + 1):
            for label, figure in figures:
                started = time.perf_counter()
                result = await figure()
                for name, value in result.items():
                    rows[name].values.append(value)
                shown = ", ".join(f"{fmt(v)} {rows[n].unit}" for n, v in result.items())
                log(f"repeat {repeat}/{args.repeats} {label}: {shown} "
                    f"({time.perf_counter() - started:.1f}s)")
    finally:
        if args.external:
            await bench.delete_topics()
    return list(rows.values())


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def table(rows: Sequence[Row]) -> list[list[str]]:
    out = [["figure", "median", "min", "max", "unit", "repeats"]]
    for row in rows:
        out.append([row.figure, fmt(statistics.median(row.values)), fmt(min(row.values)),
                    fmt(max(row.values)), row.unit, str(len(row.values))])
    return out


def print_table(cells: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    for n, r in enumerate(cells):
        print("  ".join(c.ljust(w) if i in (0, 4) else c.rjust(w)
                        for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def machine_facts(args: argparse.Namespace) -> list[tuple[str, str]]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:", 1)[1].split()[0])
        mem = f"{kib / 1024 / 1024:.1f} GiB"
    kafka = (f"external broker at {args.bootstrap} (xcombus.broker.KAFKA_VERSION is {KAFKA_VERSION})"
             if args.external else f"Apache Kafka {KAFKA_VERSION} (KRaft, single node, local, "
             "started by the benchmark)")
    facts = [
        ("CPUs (nproc)", str(len(os.sched_getaffinity(0)))),
        ("CPU model", cpu),
        ("memory", mem or "unknown"),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("aiokafka", version("aiokafka")),
        ("msgspec", version("msgspec")),
        ("aiosqlite", version("aiosqlite")),
        ("SQLite", sqlite3.sqlite_version),
        ("Kafka", kafka),
    ]
    return facts


def how_measured(args: argparse.Namespace) -> list[tuple[str, str]]:
    keys = len(BACKLOG_KEYS)
    return [
        ("1. Push throughput",
         f"One process, one `XComBus` without a materializer. {WORKERS} coroutines, each "
         f"owning its own task instance, push small ints (`await ti.xcom_push('value', i)`) "
         f"in a loop until {args.pushes:,} pushes in total have returned, i.e. every one was "
         "acknowledged by the broker (`acks=all`, idempotent producer). Throughput is pushes "
         "divided by the wall time from the first push to the last acknowledgement, after "
         f"{WORKERS} untimed pushes that connect every partition. Each coroutine awaits its "
         f"acknowledgement before its next push, so at most {WORKERS} pushes are in flight and "
         "the figure is that concurrency divided by the time one batch round trip takes."),
        ("2. Push latency",
         f"One task instance awaits `xcom_push` of a 20-byte string {LATENCY_SAMPLES:,} times "
         f"in a row after {WARMUP} untimed pushes; each push is timed from the call until it "
         "returns (broker acknowledgement included). With nothing else in flight every push "
         "is its own one-record batch and a full produce round trip."),
        ("3. Materializer drain rate",
         f"First {args.backlog:,} pushes are written to a fresh topic: {BACKLOG_TASKS} tasks x "
         f"{BACKLOG_MAP} map indexes = {BACKLOG_TASKS * BACKLOG_MAP:,} task instances x "
         f"{keys} keys, so each XCom is pushed about "
         f"{args.backlog // (BACKLOG_TASKS * BACKLOG_MAP * keys)} times. Then the topic's end "
         "offsets are read (`xcombus.watermarks.EndOffsets`), and the clock runs from entering "
         "`async with Materializer(settings)` (a fresh view file and consumer group) until "
         "`materializer.applied` reaches every end offset. The rate is backlog / that time, so "
         "it includes opening the view and joining the consumer group; the second row is the "
         "time from entering `async with` until the first batch was committed to the view. The "
         "run checks that every event was applied and the view holds one row per XCom."),
        ("4. Pull latency, eventual",
         "An `XComBus(materialize=True)` pushes one value and reads it back once with "
         "read-your-writes; then `xcom_pull(task_ids='extract', key='value', map_indexes=-1, "
         f"consistency='eventual')` is timed {LATENCY_SAMPLES:,} times after {WARMUP} untimed "
         "pulls. An eventual pull is one indexed SQLite query on the view plus deserializing "
         "the value; it does not contact the broker."),
        ("5. Pull latency, read-your-writes",
         "As 4 but with the default `consistency='strong'`, on an idle topic (the one push is "
         "long applied). Each pull asks the broker for the end offset of the task instance's "
         "partition (a ListOffsets round trip), compares it with the in-process "
         "materializer's applied offsets, then queries the view: the round trip dominates."),
        ("6. Fan-in pull",
         f"`return_value` is pushed for map indexes 0..{FANIN_WIDTH - 1} of task `mapped`, one "
         "read-your-writes pull waits until all are in the view, then "
         f"`xcom_pull(task_ids='mapped', consistency='eventual')` (every map index, in order, "
         f"{FANIN_WIDTH:,} values) is timed {FANIN_SAMPLES} times after 20 untimed pulls."),
    ]


def markdown(rows: Sequence[Row], args: argparse.Namespace, command: str, wall: float) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Measured on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `benchmarks/bench_pipeline.py` "
        f"in {wall / 60:.1f} minutes.",
        "",
        "Timings come from a noisy 2-core machine on which the Kafka broker (a JVM) shares "
        "the CPUs with the benchmark, so producer, broker and materializer compete for the "
        "same two cores: read the figures as orders of magnitude, not as limits of xcombus "
        "or Kafka. Tests never assert timings.",
        "",
        "## Machine",
        "",
        *[f"- {name}: {value}" for name, value in machine_facts(args)],
        "",
        "## Command",
        "",
        "```",
        command,
        "```",
        "",
        f"Every figure was measured {args.repeats} time{'s' if args.repeats > 1 else ''}, "
        "each time on a fresh topic "
        "(6 partitions, the default settings and the default `MsgspecXCom` backend) and a "
        "fresh view file; the table gives the median and the range over the repeats. "
        "Latency rows give a percentile within each repeat, then the median of those. "
        "Untimed warm-up runs of figures 1 and 3 (at most 20,000 events each) come first.",
        "",
        "## Results",
        "",
    ]
    cells = table(rows)
    lines.append("| " + " | ".join(cells[0]) + " |")
    lines.append("|" + "|".join(["---", "---:", "---:", "---:", "---", "---:"]) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
    lines += ["", "## How each figure is measured", ""]
    for title, text in how_measured(args):
        lines += [f"**{title}.** {text}", ""]
    lines += [
        "All times are taken with `time.perf_counter()` in the benchmark process. The "
        "encoding figures quoted in `xcombus/events.py` come from `benchmarks/bench_encoding.py`.",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=3, help="repeats per figure (default 3)")
    parser.add_argument("--pushes", type=int, default=100_000,
                        help="pushes timed by the throughput figure (default 100000)")
    parser.add_argument("--backlog", type=int, default=200_000,
                        help="events the materializer drains (default 200000)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="the markdown report to write (default docs/benchmarks.md)")
    parser.add_argument("--broker-port", type=int, default=LOCAL_PORT,
                        help=f"port of the local broker when one is started (default {LOCAL_PORT})")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.pushes < 1 or args.backlog < 1:
        parser.error("--repeats, --pushes and --backlog must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    command = shlex.join(["python", "benchmarks/bench_pipeline.py",
                          *(sys.argv[1:] if argv is None else argv)])
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="xcombus-bench-"))
    external = os.environ.get("XCOMBUS_BOOTSTRAP_SERVERS", "").strip()
    broker: LocalBroker | None = None
    args.external = bool(external)
    try:
        if external:
            args.bootstrap = external
        else:
            broker = LocalBroker(home=workdir / "broker", port=args.broker_port)
            log(f"starting a local Kafka {KAFKA_VERSION} broker on port {broker.port} ...")
            broker.start()
            args.bootstrap = broker.bootstrap_servers
        log(f"broker ready at {args.bootstrap} ({time.perf_counter() - started:.1f}s)")
        rows = asyncio.run(run_all(Bench(args.bootstrap, workdir), args))
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    wall = time.perf_counter() - started
    cells = table(rows)
    print()
    print_table(cells)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(rows, args, command, wall))
    print(f"\nwrote {args.out} ({wall:.0f}s in total)")


if __name__ == "__main__":
    main()
