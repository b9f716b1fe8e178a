"""Shared pieces of the suite: settings per figure, statistics, formatting, machine facts."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from xcombus import Settings
from xcombus.broker import KAFKA_VERSION
from xcombus.consistency import EndOffsets

REPO = Path(__file__).resolve().parent.parent
#: Untimed operations before each latency series.
WARMUP = 200

#: What one measurement of a figure returns: figure id -> value (figures.py names them) ...
Values = dict[str, float]
#: ... and series id -> raw samples for the plots (seconds unless the id says otherwise).
Samples = dict[str, list[float]]
#: Starts a child process with ``subprocess.Popen``'s arguments (a profiler may wrap it).
Spawn = Callable[..., "subprocess.Popen[bytes]"]
DAG, RUN = "bench_dag", "manual__2026-01-01T00:00:00+00:00"
SMALL_STR = "s3://bucket/key-0001"  # 20 bytes


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def machine_gauge() -> float:
    """Milliseconds of a fixed pure-Python workload (msgspec encode/decode and dict work,
    like the hot paths): a gauge of how fast this machine runs *right now*. On a shared VM
    it moves by tens of percent within minutes, and every CPU-bound figure moves with it."""
    import msgspec

    enc, dec = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder()
    started = time.perf_counter()
    rows: dict[tuple[str, int], bytes] = {}
    for i in range(200_000):
        rows[("task", i & 1023)] = enc.encode({"key": "value", "i": i})
        dec.decode(rows[("task", i & 1023)])
    return (time.perf_counter() - started) * 1e3


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def quantiles(samples: Sequence[float], points: int = 500) -> list[float]:
    """``points`` evenly spaced nearest-rank quantiles of the samples (for plots)."""
    ordered = sorted(samples)
    if not ordered:
        return []
    n = len(ordered)
    return [ordered[min(n - 1, round(i * (n - 1) / (points - 1)))] for i in range(points)]


def fmt(value: float) -> str:
    """Three significant digits, thousands separated for large numbers."""
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(header: list[str], align: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table's lines."""
    return ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|",
            *["| " + " | ".join(r) + " |" for r in rows]]


class Bench:
    """Makes fresh settings (topic + view file) per figure and repeat; remembers the topics."""

    def __init__(self, bootstrap: str, workdir: Path) -> None:
        self.bootstrap = bootstrap
        self.workdir = workdir
        self.topics: list[str] = []

    def fresh(self, label: str, **overrides: Any) -> Settings:
        suffix = uuid.uuid4().hex[:12]
        topic = f"xcombus.bench.{label}.{suffix}"
        self.topics.append(topic)
        # An empty environment: the figures are for the default settings, whatever the
        # caller's XCOMBUS_* variables say (except where the broker is).
        return Settings.from_env({}, bootstrap_servers=self.bootstrap, topic=topic,
                                 view_path=str(self.workdir / f"{label}-{suffix}.db"), **overrides)

    def view_file(self, label: str) -> Path:
        return self.workdir / f"{label}-{uuid.uuid4().hex[:12]}.db"

    async def delete_topics(self) -> None:
        """Best effort: leave an external broker as it was."""
        from aiokafka.admin import AIOKafkaAdminClient

        if not self.topics:
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="xcombus-bench")
        try:
            await asyncio.wait_for(admin.start(), 10)
            await asyncio.wait_for(admin.delete_topics(self.topics), 30)
        except Exception as exc:  # cleanup only: report and carry on
            log(f"note: could not delete benchmark topics: {exc!r}")
        finally:
            with contextlib.suppress(Exception):
                await admin.close()


async def timed(op: Callable[[], Awaitable[object]], samples: int, warmup: int) -> list[float]:
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


def view_offsets(path: Path, conn: list[sqlite3.Connection | None]) -> dict[int, int]:
    """partition -> next offset applied by the view at ``path`` ({} until it exists).

    ``conn`` is a one-element list caching the read-only connection between calls.
    """
    if conn[0] is None:
        if not path.exists():
            return {}
        try:
            conn[0] = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        except sqlite3.Error:
            return {}
    try:
        return dict(conn[0].execute("SELECT kafka_partition, next_offset FROM offsets"))
    except sqlite3.Error:
        return {}


#: The materializer every benchmark runs as its own process: the installed command.
MATERIALIZER_CMD = [sys.executable, "-m", "xcombus", "materialize", "--log-level", "WARNING"]


def materializer_env(settings: Settings, group_id: str) -> dict[str, str]:
    """The environment of a ``xcombus materialize`` for these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("XCOMBUS_")}
    env.update(XCOMBUS_BOOTSTRAP_SERVERS=settings.bootstrap_servers, XCOMBUS_TOPIC=settings.topic,
               XCOMBUS_VIEW_PATH=settings.view_path, XCOMBUS_GROUP_ID=group_id,
               PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def machine_facts(bootstrap: str, external: bool) -> list[tuple[str, str]]:
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
    kafka = (f"external broker at {bootstrap} (xcombus.broker.KAFKA_VERSION is {KAFKA_VERSION})"
             if external else f"Apache Kafka {KAFKA_VERSION} (KRaft, single node, 512 MB heap, "
             "local, started by the benchmark on the same 2 cores)")
    java = "unknown"
    with contextlib.suppress(Exception):
        out = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=20)
        java = (out.stderr or out.stdout).splitlines()[0].strip()
    return [
        ("CPUs (nproc)", str(len(os.sched_getaffinity(0)))),
        ("CPU model", cpu),
        ("memory", mem or "unknown"),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("xcombus", _version("xcombus")),
        ("aiokafka", _version("aiokafka")),
        ("msgspec", _version("msgspec")),
        ("aiosqlite", _version("aiosqlite")),
        ("SQLite", sqlite3.sqlite_version),
        ("SQLAlchemy (baseline)", _version("sqlalchemy")),
        ("matplotlib / psutil", f"{_version('matplotlib')} / {_version('psutil')}"),
        ("Java", java),
        ("Kafka", kafka),
    ]
