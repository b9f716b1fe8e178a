"""The topic as an audit log: history, tail, rebuild (full, point in time), verify, swap."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import cli, settings_env
from xcombus import Settings, XComBrokerError, XComBus, XComViewLockedError
from xcombus.audit import history
from xcombus.rebuild import rebuild, swap, verify
from xcombus.view import ViewReader

pytestmark = pytest.mark.integration
RUN = "manual__2026-11-24T00:00:00+00:00"


async def test_history_lists_every_version_with_the_clears(settings: Settings) -> None:
    async with XComBus(settings) as bus:
        try1 = bus.task_instance("d", RUN, "t", try_number=1)
        await try1.xcom_push("k", "v1")
        await try1.xcom_push("other", "not listed")
        await try1.xcom_push("k", "v2")
        try2 = bus.task_instance("d", RUN, "t", try_number=2)
        await try2.xcom_clear()
        await try2.xcom_push("k", {"v": 3})
        await bus.task_instance("d", RUN, "elsewhere").xcom_push("k", "not listed either")
    events = await history(settings, "d", RUN, "t", "k")
    assert [(e.kind, e.value, e.try_number) for e in events] == [
        ("push", "v1", 1), ("push", "v2", 1), ("clear", None, 2), ("push", {"v": 3}, 2)]
    assert [e.offset for e in events] == sorted(e.offset for e in events)
    assert len({e.partition for e in events}) == 1
    assert all(e.producer and e.timestamp for e in events)
    shown = cli("history", "--dag-id", "d", "--run-id", RUN, "--task-id", "t", "--key", "k", "--json",
                settings=settings)
    assert shown.returncode == 0, shown.stderr
    assert [json.loads(line)["kind"] for line in shown.stdout.splitlines()] == ["push", "push", "clear", "push"]


async def test_history_fails_with_xcombus_errors_that_say_what_to_do(settings: Settings) -> None:
    """A missing topic and an unreachable broker are XComBrokerErrors naming the fix, never
    a raw Kafka error (the HTTP API and the CLI map xcombus's errors only)."""
    with pytest.raises(XComBrokerError, match="xcombus topic create"):
        await history(settings, "etl", "r1", "t", "k")
    gone = settings.replace(bootstrap_servers="127.0.0.1:1", connect_timeout=2.0)
    with pytest.raises(XComBrokerError, match="XCOMBUS_BOOTSTRAP_SERVERS"):
        await history(gone, "etl", "r1", "t", "k")


async def test_tail_follows_new_events(settings: Settings) -> None:
    async with XComBus(settings) as bus:
        await bus.task_instance("d", RUN, "t").xcom_push("before", 0)  # creates the topic too
        proc = subprocess.Popen([sys.executable, "-m", "xcombus", "tail", "--dag-id", "d", "--limit", "3"],
                                env=settings_env(settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            await asyncio.sleep(3)  # let it reach the end of the topic
            for i in range(3):
                await bus.task_instance("d", RUN, "t").xcom_push("live", i)
            await bus.task_instance("other", RUN, "t").xcom_push("live", "filtered out")
            out, err = await asyncio.to_thread(proc.communicate, timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(e["key"], e["value"]) for e in lines] == [("live", 0), ("live", 1), ("live", 2)]


async def push_workload(bus: XComBus, start: int, n: int) -> None:
    await asyncio.gather(*(bus.task_instance("d", f"run_{i % 3}", f"t{i % 5}", i % 4)
                           .xcom_push(f"k{i % 6}", {"i": i}) for i in range(start, start + n)))
    await bus.task_instance("d", "run_1", "t1", 1).xcom_clear()


async def test_rebuild_equals_the_live_view_and_verify_says_so(settings: Settings, tmp_path: Path) -> None:
    async with XComBus(settings, materialize=True) as bus:
        await push_workload(bus, 0, 3000)
        await bus.wait_visible(range(settings.partitions))
    rebuilt = tmp_path / "rebuilt.db"
    summary = await rebuild(settings, rebuilt)
    assert summary.events == 3001 and summary.rows > 0
    result = verify(settings.view_path, rebuilt)
    assert result.same, result.differences
    assert result.offsets_a == summary.offsets
    shown = cli("verify", settings.view_path, str(rebuilt), settings=settings)
    assert shown.returncode == 0 and "identical" in shown.stdout
    # Verify notices a difference.
    db = sqlite3.connect(rebuilt)
    db.execute("DELETE FROM xcom WHERE (dag_id, run_id, task_id, map_index, key) IN "
               "(SELECT dag_id, run_id, task_id, map_index, key FROM xcom LIMIT 1)")
    db.commit()
    db.close()
    different = cli("verify", settings.view_path, str(rebuilt), settings=settings)
    assert different.returncode == 1 and "only in A" in different.stdout


async def test_point_in_time_rebuild_shows_the_view_as_it_was(settings: Settings, tmp_path: Path) -> None:
    async with XComBus(settings, materialize=True) as bus:
        ti = bus.task_instance("d", RUN, "t")
        await ti.xcom_push("k", "old")
        await ti.xcom_push("gone-later", "present then")
        await bus.wait_visible(range(settings.partitions))
        snapshot = tmp_path / "snapshot.db"
        await asyncio.to_thread(_copy_view, settings.view_path, snapshot)  # the live view at that time
        await asyncio.sleep(1.2)  # record timestamps are milliseconds: leave a clear gap
        moment = datetime.now(UTC)
        await asyncio.sleep(1.2)
        await ti.xcom_clear()
        await ti.xcom_push("k", "new")
        await bus.wait_visible(range(settings.partitions))
    past = await rebuild(settings, tmp_path / "past.db", until=moment)
    assert verify(snapshot, past.path).same
    reader = ViewReader(past.path)
    assert {r.key: r.value for r in reader.entries()} == {"k": b'"old"', "gone-later": b'"present then"'}
    reader.close()
    by_offsets = await rebuild(settings, tmp_path / "by_offsets.db", until_offsets=past.offsets)
    assert verify(past.path, by_offsets.path).same


def _copy_view(source: str, target: Path) -> None:
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    src.backup(dst)
    dst.close()
    src.close()


def _reader(path: str, done: Any, out: Any) -> None:
    """Reads the view in a loop: every snapshot must be the old view or the new one, whole."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    db.execute("PRAGMA busy_timeout=10000")
    seen: set[tuple[int, int]] = set()
    errors = 0
    while not done.is_set():
        try:
            db.execute("BEGIN")
            rows = db.execute("SELECT count(*) FROM xcom").fetchone()[0]
            events = db.execute("SELECT coalesce(sum(next_offset), 0) FROM offsets").fetchone()[0]
            db.execute("COMMIT")
            seen.add((rows, events))
        except sqlite3.Error:
            errors += 1
    out.put((seen, errors))


async def test_swap_replaces_the_live_view_under_concurrent_readers(settings: Settings, tmp_path: Path) -> None:
    async with XComBus(settings, materialize=True) as bus:
        await push_workload(bus, 0, 500)
        await bus.wait_visible(range(settings.partitions))
        with pytest.raises(XComViewLockedError):  # never under a running materializer
            swap(settings.view_path, settings.view_path)
    old = ViewReader(settings.view_path)
    old_state = (old.count(), sum(old.offsets().values()))
    old.close()
    async with XComBus(settings) as bus:
        await push_workload(bus, 500, 1500)
    rebuilt = await rebuild(settings, tmp_path / "new.db")
    ctx = multiprocessing.get_context("spawn")
    done, out = ctx.Event(), ctx.Queue()
    readers = [ctx.Process(target=_reader, args=(settings.view_path, done, out)) for _ in range(2)]
    for p in readers:
        p.start()
    time.sleep(1.5)
    result = subprocess.run([sys.executable, "-m", "xcombus", "rebuild", "--into", str(tmp_path / "cli.db"),
                             "--swap"], env=settings_env(settings), capture_output=True, text=True, timeout=120)
    time.sleep(0.5)
    done.set()
    seen = [out.get(timeout=60) for _ in readers]
    for p in readers:
        p.join(30)
    assert result.returncode == 0, result.stderr
    assert "swapped into" in result.stdout and "events ->" in result.stdout
    new_state = (rebuilt.rows, sum(rebuilt.offsets.values()))
    for states, errors in seen:
        assert errors == 0
        assert states <= {old_state, new_state}, states  # whole views only, never a mix
        assert old_state in states
    assert verify(settings.view_path, rebuilt.path).same
