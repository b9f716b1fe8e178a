"""The demo: extract -> transform (mapped over 4 inputs) -> load, one process per task.

Every task is its own OS process that talks to the others only through Kafka: it pushes
its return value with ``xcom_push`` and pulls its inputs with ``xcom_pull``; a separate
materializer process folds the topic into the SQLite view that pulls read.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

from .bus import TaskInstance, XComBus
from .settings import Settings
from .taskflow import SyncTaskInstance, current_task_instance, task

DAG_ID = "xcombus_demo"
CITIES = [("Oslo", 4.5), ("Lagos", 31.0), ("Lima", 18.25), ("Sapporo", -2.0)]
LOGICAL_DATE = datetime(2026, 11, 24, tzinfo=UTC)


# -- the tasks (each runs in its own process) ----------------------------------------------
@task
async def extract() -> list[dict[str, Any]]:
    rows = [{"city": c, "temp_c": t, "measured_at": datetime(2026, 11, 24, 12, tzinfo=UTC)}
            for c, t in CITIES]
    await current_task_instance(TaskInstance).xcom_push("row_count", len(rows))
    return rows


@task
def transform() -> dict[str, Any]:  # a plain function: it gets a blocking task instance
    ti = current_task_instance(SyncTaskInstance)
    row = ti.xcom_pull(task_ids="extract")[ti.map_index]
    return {"city": row["city"], "temp_f": round(row["temp_c"] * 9 / 5 + 32, 2)}


@task(multiple_outputs=True)
async def load() -> dict[str, Any]:
    ti = current_task_instance(TaskInstance)
    rows = await ti.xcom_pull(task_ids="transform")  # every map index, in map-index order
    count = await ti.xcom_pull(task_ids="extract", key="row_count")
    assert len(rows) == count, (rows, count)
    return {"cities": tuple(r["city"] for r in rows),
            "mean_temp_f": round(sum(r["temp_f"] for r in rows) / len(rows), 2)}


TASKS = {t.task_id: t for t in (extract, transform, load)}


async def _task(name: str, run_id: str, map_index: int) -> None:
    async with XComBus() as bus:
        await TASKS[name].run(bus, DAG_ID, run_id, map_index=map_index, logical_date=LOGICAL_DATE)
        print(f"  {name}[{map_index}] pid {os.getpid()} done", flush=True)


def _spawn_task(name: str, run_id: str, map_index: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "xcombus.demo", "task", name, run_id,
                             str(map_index)], env=env, stdin=subprocess.DEVNULL)


def _wait_all(procs: list[subprocess.Popen[bytes]], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            code = proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise SystemExit(f"demo: {what} did not finish within {timeout:.0f}s") from None
        if code != 0:
            raise SystemExit(f"demo: {what} failed with exit code {code}")


def _print_view(settings: Settings, run_id: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from .backends import load_backend
    from .view import ViewReader

    backend = load_backend(settings)
    reader = ViewReader(settings.view_path)
    try:
        records = reader.entries(dag_id=DAG_ID, run_id=run_id, limit=1000)
        offsets = reader.offsets()
    finally:
        reader.close()
    table = Table(title=f"materialized view {settings.view_path} - {DAG_ID} / {run_id}")
    for column in ("task_id", "map_index", "key", "partition", "offset"):
        table.add_column(column, no_wrap=True)
    table.add_column("value (light form)", overflow="fold")
    for rec in records:
        table.add_row(rec.task_id, str(rec.map_index), rec.key, str(rec.partition), str(rec.offset),
                      repr(backend.orm_deserialize_value(rec)))
    console = Console()
    if not console.is_terminal:  # piped or in CI: rich would assume 80 columns
        console = Console(width=140)
    console.print(table)
    console.print(f"view offsets (next offset per partition): {dict(sorted(offsets.items()))}")


def run_demo(*, keep_broker: bool = False) -> int:
    """Run the whole demo; start (and afterwards stop) a local broker if none is configured."""
    from .broker import LocalBroker

    started: LocalBroker | None = None
    env = dict(os.environ)
    if not env.get("XCOMBUS_BOOTSTRAP_SERVERS"):
        started = LocalBroker()
        print(f"starting a local Apache Kafka at {started.bootstrap_servers} ...", flush=True)
        started.start()
        env["XCOMBUS_BOOTSTRAP_SERVERS"] = started.bootstrap_servers
    settings = Settings.from_env(env)
    run_id = "demo__" + datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    # The installed CLI (consumers/ are checkout scripts, not part of the package).
    materializer = subprocess.Popen([sys.executable, "-m", "xcombus", "materialize",
                                     "--log-level", "WARNING"], env=env,
                                    stdin=subprocess.DEVNULL)
    t0 = time.monotonic()
    try:
        print(f"dag {DAG_ID}, run {run_id}; materializer pid {materializer.pid}, "
              f"view {settings.view_path}", flush=True)
        print("extract:", flush=True)
        _wait_all([_spawn_task("extract", run_id, -1, env)], "extract")
        print("transform, mapped over 4 inputs (4 processes at once):", flush=True)
        _wait_all([_spawn_task("transform", run_id, i, env) for i in range(4)], "transform")
        print("load:", flush=True)
        _wait_all([_spawn_task("load", run_id, -1, env)], "load")
        print(f"pipeline done in {time.monotonic() - t0:.1f}s\n", flush=True)
        _print_view(settings, run_id)
    finally:
        materializer.send_signal(signal.SIGTERM)
        try:
            code = materializer.wait(30)
        except subprocess.TimeoutExpired:
            materializer.kill()
            code = -9
        if started is not None and not keep_broker:
            started.stop()
    if code != 0:
        print(f"demo: the materializer exited with code {code}", file=sys.stderr)
        return 1
    return 0


def _main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m xcombus.demo")
    sub = parser.add_subparsers(dest="cmd", required=True)
    task = sub.add_parser("task", help="run one demo task (used by the demo itself)")
    task.add_argument("name")
    task.add_argument("run_id")
    task.add_argument("map_index", type=int)
    args = parser.parse_args(argv)
    asyncio.run(_task(args.name, args.run_id, args.map_index))


if __name__ == "__main__":
    _main(sys.argv[1:])
