"""The view writer in a child process (xcombus.writer) and the materializer on top of it
(no broker needed: batches are handed to the materializer's fold-and-submit step directly)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from xcombus import MsgspecXCom, Settings, XComViewError, XComViewLockedError
from xcombus.events import SCHEMA_VERSION, Push, encode_event
from xcombus.fold import fold
from xcombus.materialize import Materializer
from xcombus.store import ViewStore, row_record
from xcombus.view import ViewReader
from xcombus.writer import ViewWriterProcess

from .batches import TI, batches_of_new_xcoms, clear, push, recs, watch_readers_while


def _stored(path: Path) -> tuple[list[tuple[str, bytes, int]], dict[int, int], dict[int, int]]:
    reader = ViewReader(path)
    try:
        return ([(r.key, r.value, r.offset) for r in reader.entries()], reader.offsets(),
                reader.applied_events())
    finally:
        reader.close()


async def _wait_dead(proc: subprocess.Popen[bytes]) -> None:
    """Reap the killed child (a zombie still answers ``kill(pid, 0)``)."""
    await asyncio.to_thread(proc.wait, 10)


async def test_batches_commit_in_the_child_with_their_offsets(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    async with ViewWriterProcess(path, topic="t") as writer:
        assert await writer.offsets() == {}
        await writer.write(fold({0: recs(push("a", b"1"), push("b", b"2"))}, {}, MsgspecXCom))
        batch = fold({0: recs(clear(), push("a", b"3"), start=2)}, {0: 2}, MsgspecXCom)
        replaced = await writer.write(batch, collect_replaced=True)
        assert sorted((r.key, r.value) for r in replaced) == [("a", b"1"), ("b", b"2")]
        assert await writer.offsets() == {0: 4}
    assert _stored(path) == ([("a", b"3", 3)], {0: 4}, {0: 4})


async def test_the_lock_is_held_for_the_writers_life(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    async with ViewWriterProcess(path, topic="t") as writer:
        with pytest.raises(XComViewLockedError, match=f"pid {os.getpid()}"):
            await ViewWriterProcess(path, topic="t").open()
        with pytest.raises(XComViewLockedError, match=f"pid {os.getpid()}"):
            ViewStore.open(path, topic="t")
        # The child holds the same lock: it outlives its parent's descriptor.
        child = writer._proc
        assert child is not None and child.poll() is None
    async with ViewWriterProcess(path, topic="t"):  # released on close
        pass


async def test_a_view_of_another_topic_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    async with ViewWriterProcess(path, topic="t"):
        pass
    with pytest.raises(XComViewError, match="view of topic 't'"):
        await ViewWriterProcess(path, topic="other").open()
    async with ViewWriterProcess(path, topic="t"):  # the failed open released the lock
        pass


async def test_a_failed_write_applies_nothing_and_nothing_after_it(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    writer = ViewWriterProcess(path, topic="t")
    await writer.open()
    try:
        await writer.write(fold({0: recs(push("a", b"1"))}, {}, MsgspecXCom))
        batch = fold({0: recs(clear(), push("b", b"2"), start=1)}, {0: 1}, MsgspecXCom)
        batch.upserts.append(("only", "three", "columns"))  # fails after the clear ran
        with pytest.raises(XComViewError, match="offsets did not advance"):
            await writer.write(batch)
        later = fold({0: recs(push("c", b"3"), start=3)}, {0: 3}, MsgspecXCom)
        with pytest.raises(XComViewError, match="offsets did not advance"):
            await writer.write(later)
    finally:
        await writer.aclose()
    assert _stored(path) == ([("a", b"1", 0)], {0: 1}, {0: 1})


async def test_a_dead_child_is_a_clear_error_and_nothing_is_applied_later(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    writer = ViewWriterProcess(path, topic="t")
    await writer.open()
    try:
        await writer.write(fold({0: recs(push("a", b"1"))}, {}, MsgspecXCom))
        assert writer._proc is not None
        os.kill(writer._proc.pid, signal.SIGKILL)
        await _wait_dead(writer._proc)
        with pytest.raises(XComViewError, match=r"writer process .* died.*stored offsets decide"):
            await writer.write(fold({0: recs(push("b", b"2"), start=1)}, {0: 1}, MsgspecXCom))
        with pytest.raises(XComViewError, match=r"writer process .* died"):
            await writer.offsets()
    finally:
        await writer.aclose()
    assert _stored(path) == ([("a", b"1", 0)], {0: 1}, {0: 1})
    async with ViewWriterProcess(path, topic="t") as again:  # the stored offsets are authoritative
        assert await again.offsets() == {0: 1}


def _materializer(path: Path) -> Materializer:
    settings = Settings.from_env({}, bootstrap_servers="127.0.0.1:1", topic="t", view_path=str(path))
    return Materializer(settings, backend=MsgspecXCom)


async def test_materializer_publishes_only_acknowledged_commits(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    m = _materializer(path)
    await m._writer.open()
    try:
        await m._fold_and_submit({0: recs(push("a", b"1"), push("b", b"2"))})
        assert m._submitted == {0: 2}  # handed over: the next fold skips these records
        await m._fold_and_submit({0: recs(push("a", b"1"), push("b", b"2"), push("c", b"3"))})
        assert m._submitted == {0: 3}
        await m._wait_published()
        assert m.visible == {0: 3} and m.events_applied == 3
        assert _stored(path)[1:] == ({0: 3}, {0: 3})
    finally:
        await m._writer.aclose()


async def test_materializer_stops_when_the_writer_dies(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    m = _materializer(path)
    await m._writer.open()
    try:
        await m._fold_and_submit({0: recs(push("a", b"1"))})
        await m._wait_published()
        assert m._writer._proc is not None
        os.kill(m._writer._proc.pid, signal.SIGKILL)
        await _wait_dead(m._writer._proc)
        with pytest.raises(XComViewError, match=r"died.*stored offsets decide"):
            await m._fold_and_submit({0: recs(push("b", b"2"), start=1)})
            await m._wait_published()
        with pytest.raises(XComViewError):
            await m._fold_and_submit({0: recs(push("c", b"3"), start=2)})
            await m._wait_published()
        assert m.visible == {0: 1}
        assert m._fatal is not None or m._stopping.is_set()
    finally:
        await m._writer.aclose()
    assert _stored(path) == ([("a", b"1", 0)], {0: 1}, {0: 1})


async def test_readers_never_see_half_a_batch_written_by_the_child(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    async with ViewWriterProcess(path, topic="t") as writer:
        async def write() -> None:
            for batch in batches_of_new_xcoms():  # pipelined: one batch in flight while the next folds
                await writer.submit(batch)
            await writer.drain()

        results = await watch_readers_while(path, write)
    for torn, states in results:
        assert torn == 0
        assert states > 1


def test_the_child_is_a_slim_script_that_never_imports_xcombus() -> None:
    # The child's memory counts in the materializer's: importing the package would pull in
    # aiokafka and every backend into a process that only writes SQLite.
    import ast
    import sys

    import xcombus._writer_child as child

    tree = ast.parse(Path(child.__file__).read_text())
    # Imports under ``if TYPE_CHECKING:`` are for the type checker only, never run.
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    relative = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level]
    assert not relative
    assert imported - set(sys.stdlib_module_names) == {"msgspec"}


def test_the_child_loads_the_store_without_the_package() -> None:
    # What the child has in memory once it loaded the store: the store and its two leaf
    # modules, never xcombus/__init__.py or anything it would pull in.
    import json
    import subprocess
    import sys

    import xcombus._writer_child as child

    code = ("import json, runpy, sys; child = runpy.run_path(sys.argv[1], run_name='child'); "
            "before = set(sys.modules); child['_load']('store'); child['_load']('errors'); "
            "print(json.dumps([sorted(set(sys.modules) - before), "
            "getattr(sys.modules['xcombus'], '__file__', None)]))")
    out = subprocess.run([sys.executable, "-P", "-c", code, child.__file__], capture_output=True, text=True,
                         check=True).stdout
    loaded, package_file = json.loads(out)
    assert {m for m in loaded if m.split(".")[0] == "xcombus"} == {
        "xcombus", "xcombus.store", "xcombus.errors", "xcombus.records"}
    assert package_file is None  # a bare stand-in: xcombus/__init__.py never ran
    others = {m.split(".")[0] for m in loaded} - {"xcombus"}
    assert others <= set(sys.stdlib_module_names), others


async def test_the_child_runs_the_script_without_its_folder_on_the_path(tmp_path: Path) -> None:
    async with ViewWriterProcess(tmp_path / "v.db", topic="t") as writer:
        assert writer._proc is not None
        argv = Path(f"/proc/{writer._proc.pid}/cmdline").read_bytes().split(b"\0")
        # -P: the package folder is not sys.path[0], so its modules cannot shadow stdlib ones.
        assert argv[1:3] == [b"-P", str(Path(__file__).resolve().parents[2] / "xcombus" /
                                          "_writer_child.py").encode()]


async def test_a_cancelled_waiter_does_not_drop_the_batch_in_flight(tmp_path: Path) -> None:
    m = _materializer(tmp_path / "v.db")
    await m._writer.open()
    try:
        await m._fold_and_submit({0: recs(push("a", b"1"))})
        waiter = asyncio.ensure_future(m._wait_published())
        await asyncio.sleep(0)
        waiter.cancel()  # e.g. an outer timeout around the caller
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await m._wait_published()  # the batch is still published: visible offsets, purges, Kafka
        assert m.visible == {0: 1} and m.events_applied == 1
    finally:
        await m._writer.aclose()


async def test_the_child_outlives_a_group_sigterm_and_finishes_the_batch(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    async with ViewWriterProcess(path, topic="t") as writer:
        assert writer._proc is not None
        os.kill(writer._proc.pid, signal.SIGTERM)  # as systemd's control-group stop sends it
        await asyncio.sleep(0.2)
        assert writer._proc.poll() is None
        await writer.write(fold({0: recs(push("a", b"1"))}, {}, MsgspecXCom))
    assert _stored(path) == ([("a", b"1", 0)], {0: 1}, {0: 1})


async def test_a_write_error_of_any_kind_comes_back_with_its_reason(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    writer = ViewWriterProcess(path, topic="t")
    await writer.open()
    try:
        batch = fold({0: recs(push("a", b"1"))}, {}, MsgspecXCom)
        row = list(batch.upserts[0])
        row[7] = 2**63  # beyond SQLite's integers: an OverflowError in the child, not sqlite3's
        batch.upserts = [tuple(row)]
        with pytest.raises(XComViewError, match=r"failed.*too large"):
            await writer.write(batch)
    finally:
        await writer.aclose()
    assert _stored(path) == ([], {}, {})


async def test_the_writer_stores_a_missing_date_as_null_and_values_as_blobs(tmp_path: Path) -> None:
    # The rows bind a missing logical date as "" and the child binds values as bytearrays
    # (sqlite3 binds those without an adapter lookup): the file must not show either.
    path = tmp_path / "v.db"
    dated = encode_event(Push(schema=SCHEMA_VERSION, key="dated", value=b'"d"', codec=MsgspecXCom.codec,
                              ts=1, producer="p", logical_date=0))
    batch = fold({0: recs(push("undated", b'"u"'), (TI.encode(), dated))}, {}, MsgspecXCom)
    assert {row[4]: row[8] for row in batch.upserts} == {"undated": "", "dated": 0}
    assert {r.key: r.logical_date for r in map(row_record, batch.upserts)} == {"undated": None, "dated": 0}
    async with ViewWriterProcess(path, topic="t") as writer:
        await writer.write(batch)
    db = sqlite3.connect(path)
    try:
        stored = db.execute("SELECT key, typeof(value), logical_date, typeof(logical_date) FROM xcom "
                            "ORDER BY key").fetchall()
    finally:
        db.close()
    assert stored == [("dated", "blob", 0, "integer"), ("undated", "blob", None, "null")]
    reader = ViewReader(path)
    try:
        records = {r.key: r for r in reader.entries()}
    finally:
        reader.close()
    assert records["undated"].logical_date is None and records["dated"].logical_date == 0
    assert type(records["undated"].value) is bytes and records["undated"].value == b'"u"'
