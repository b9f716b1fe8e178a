"""Folding a batch and writing it to a real SQLite view (no broker needed)."""

from __future__ import annotations

import multiprocessing
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from xcombus import MsgspecXCom, Settings, XComBus, XComViewError, XComViewLockedError
from xcombus.consistency import ViewPoller
from xcombus.events import SCHEMA_VERSION, Clear, Push, TaskInstanceKey, encode_event
from xcombus.materialize import fold
from xcombus.view import ViewBatch, ViewNotReadyError, ViewReader, ViewWriter


class Rec(NamedTuple):
    """The fields of an aiokafka ConsumerRecord that fold reads."""

    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 0


TI = TaskInstanceKey("dag", "run", "task", -1)


def push(key: str, value: bytes, ti: TaskInstanceKey = TI) -> tuple[bytes, bytes]:
    return ti.encode(), encode_event(Push(schema=SCHEMA_VERSION, key=key, value=value,
                                          codec=MsgspecXCom.codec, ts=1, producer="p"))


def clear(ti: TaskInstanceKey = TI) -> tuple[bytes, bytes]:
    return ti.encode(), encode_event(Clear(schema=SCHEMA_VERSION, ts=1, producer="p"))


def recs(*events: tuple[bytes | None, bytes | None], start: int = 0) -> list[Rec]:
    return [Rec(start + i, k, v) for i, (k, v) in enumerate(events)]


def test_fold_keeps_last_push_per_xcom() -> None:
    batch = fold({0: recs(push("a", b"1"), push("b", b"2"), push("a", b"3"))}, {}, MsgspecXCom)
    values = {row[4]: row[5] for row in batch.upserts}
    assert values == {"a": b"3", "b": b"2"}
    assert batch.offsets == {0: 3} and batch.events == {0: 3}


def test_fold_clear_drops_earlier_pushes_of_the_batch() -> None:
    batch = fold({0: recs(push("a", b"1"), push("b", b"2"), clear(), push("a", b"4"))}, {}, MsgspecXCom)
    assert batch.clears == [(*TI, 0, 2)]  # the task instance, where the clear stands
    assert [(row[4], row[5]) for row in batch.upserts] == [("a", b"4")]


def test_fold_skips_records_already_applied() -> None:
    batch = fold({0: recs(push("a", b"1"), push("a", b"2"), push("a", b"3"))}, {0: 2}, MsgspecXCom)
    assert [row[5] for row in batch.upserts] == [b"3"]
    assert batch.events == {0: 1} and batch.offsets == {0: 3}


def test_fold_dead_letters_bad_records_and_keeps_the_rest() -> None:
    batch = fold({1: recs(push("a", b"1"), (b"not a key", b"x"), (TI.encode(), b"\xc1garbage"),
                          (None, b"x"), push("b", b"2"))}, {}, MsgspecXCom)
    assert sorted(row[4] for row in batch.upserts) == ["a", "b"]
    assert [d.offset for d in batch.dead] == [1, 2, 3]
    assert "task instance key" in batch.dead[0].reason
    assert "undecodable" in batch.dead[1].reason
    assert batch.offsets == {1: 5}


def test_fold_dead_letters_unknown_codec() -> None:
    key, _ = push("a", b"1")
    other = encode_event(Push(schema=1, key="a", value=b"1", codec="pickle", ts=1, producer="p"))
    batch = fold({0: [Rec(0, key, other)]}, {}, MsgspecXCom)
    assert not batch.upserts and "codec 'pickle'" in batch.dead[0].reason


async def test_apply_writes_rows_and_offsets_together(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    async with ViewWriter(path, topic="t") as writer:
        await writer.apply(fold({0: recs(push("a", b"1"), push("b", b"2"))}, {}, MsgspecXCom))
        await writer.apply(fold({0: recs(clear(), push("a", b"3"), start=2)}, {0: 2}, MsgspecXCom))
        assert await writer.offsets() == {0: 4}
    reader = ViewReader(path)
    assert [(r.key, r.value, r.offset) for r in reader.entries()] == [("a", b"3", 3)]
    assert reader.offsets() == {0: 4} and reader.applied_events() == {0: 4}
    reader.close()


async def test_failed_transaction_applies_nothing(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    async with ViewWriter(path, topic="t") as writer:
        await writer.apply(fold({0: recs(push("a", b"1"))}, {}, MsgspecXCom))
        batch = fold({0: recs(push("b", b"2"), start=1)}, {0: 1}, MsgspecXCom)
        batch.upserts.append(("only", "three", "columns"))  # makes executemany fail mid-way
        with pytest.raises(XComViewError, match="offsets did not advance"):
            await writer.apply(batch)
        assert await writer.offsets() == {0: 1}
    reader = ViewReader(path)
    assert [r.key for r in reader.entries()] == ["a"]
    reader.close()


async def test_second_writer_on_the_same_file_fails_fast(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    async with ViewWriter(path, topic="t"):
        with pytest.raises(XComViewLockedError, match="another materializer"):
            await ViewWriter(path, topic="t").open()


async def test_view_of_another_topic_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    async with ViewWriter(path, topic="t"):
        pass
    with pytest.raises(XComViewError, match="view of topic 't'"):
        await ViewWriter(path, topic="other").open()


def test_missing_view_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(XComViewError, match="start the materializer"):
        ViewReader(tmp_path / "absent.db")


def _reader_process(path: str, ready: Any, done: Any, out: Any) -> None:
    """In another process: every snapshot must have rows == applied events (atomic batches)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    db.execute("PRAGMA busy_timeout=5000")
    torn, states = 0, set()
    ready.set()
    while not done.is_set():
        db.execute("BEGIN")
        rows = db.execute("SELECT count(*) FROM xcom").fetchone()[0]
        events = db.execute("SELECT coalesce(sum(applied_events), 0) FROM offsets").fetchone()[0]
        db.execute("COMMIT")
        torn += rows != events
        states.add(rows)
    out.put((torn, len(states)))


def batches_of_new_xcoms(count: int = 300, size: int = 50) -> Iterator[ViewBatch]:
    """Folded batches in which every event is a new XCom, so rows == events at each commit."""
    offset = 0
    for b in range(count):
        events = [push(f"k{b}-{i}", b"\"v\"") for i in range(size)]
        yield fold({0: recs(*events, start=offset)}, {0: offset}, MsgspecXCom)
        offset += size


async def watch_readers_while(path: Path, write: Callable[[], Awaitable[None]]) -> list[tuple[int, int]]:
    """Run ``write`` while two reader processes poll the view; per reader, return the torn
    snapshots it saw (rows != applied events) and how many distinct states."""
    ctx = multiprocessing.get_context("spawn")
    out, done = ctx.Queue(), ctx.Event()
    readies = [ctx.Event() for _ in range(2)]
    readers = [ctx.Process(target=_reader_process, args=(str(path), r, done, out)) for r in readies]
    for p in readers:
        p.start()
    for r in readies:
        assert r.wait(60)
    await write()
    done.set()
    results = [out.get(timeout=60) for _ in readers]
    for p in readers:
        p.join(30)
    return results


async def test_readers_in_other_processes_never_see_half_a_batch(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    async with ViewWriter(path, topic="t") as writer:
        async def write() -> None:
            for batch in batches_of_new_xcoms():
                await writer.apply(batch)

        results = await watch_readers_while(path, write)
    assert [torn for torn, _ in results] == [0, 0]
    # The readers ran while the writer committed: they saw several intermediate states.
    assert all(states > 2 for _, states in results)


def test_integers_beyond_64_bits_are_dead_letters_not_failed_writes() -> None:
    huge = encode_event(Push(schema=SCHEMA_VERSION, key="k", value=b"1", codec=MsgspecXCom.codec,
                             ts=2**63, producer="p"))
    key = b'["d","r","t",18446744073709551616]'
    batch = fold({0: recs((TI.encode(), huge), (key, push("a", b"2")[1]), push("b", b"3"))}, {},
                 MsgspecXCom)
    assert [d.offset for d in batch.dead] == [0, 1]
    assert "<= 9223372036854775807" in batch.dead[0].reason
    assert [row[4] for row in batch.upserts] == ["b"]


async def test_a_view_being_created_reads_as_nothing_applied_yet(tmp_path: Path) -> None:
    """Read-your-writes polls the view while a materializer starts: a missing file, then a
    file without its tables (SQLite creates the file first), mean "not yet", not an error;
    a view of another topic is still an error."""
    path = tmp_path / "v.db"
    with pytest.raises(ViewNotReadyError, match="no view at"):  # an XComViewError for callers
        ViewReader(path)
    bus = XComBus(Settings(view_path=str(path), topic="t"))
    assert ViewPoller(bus._view).offsets() == {}  # no file (decided by the reader itself, not a check
    # of the path before it: the file may appear between the two)
    sqlite3.connect(path).close()  # the file exists, its tables not yet
    assert ViewPoller(bus._view).offsets() == {}
    async with ViewWriter(path, topic="other"):
        pass
    bus._reader = None
    with pytest.raises(XComViewError, match="other"):
        ViewPoller(bus._view).offsets()
