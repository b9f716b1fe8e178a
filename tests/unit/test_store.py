"""The one write transaction of a view file (xcombus.store), run in this process (no
broker, no writer child): batches, failures, the lock, the guarded dead-letter retry."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import msgspec
import pytest

from xcombus import MsgspecXCom, XComViewError, XComViewLockedError
from xcombus.events import TaskInstanceKey
from xcombus.fold import fold
from xcombus.store import (
    COLUMNS,
    DeadLetter,
    EncodedBatch,
    ViewBatch,
    ViewStore,
    acquire_write_lock,
    encode_batch,
)
from xcombus.view import ViewReader

from .batches import TI, batches_of_new_xcoms, clear, push, recs, stored, watch_readers_while


def _stored(path: Path) -> tuple[list[tuple[str, bytes, int]], dict[int, int], dict[int, int]]:
    reader = ViewReader(path)
    try:
        return ([(r.key, r.value, r.offset) for r in stored(path)], reader.offsets(),
                reader.applied_events())
    finally:
        reader.close()


def test_apply_writes_rows_and_offsets_together(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    with ViewStore.open(path, topic="t") as store:
        store.write(fold({0: recs(push("a", b"1"), push("b", b"2"))}, {}, MsgspecXCom))
        store.write(fold({0: recs(clear(), push("a", b"3"), start=2)}, {0: 2}, MsgspecXCom))
        assert store.offsets() == {0: 4}
    assert [(r.key, r.value, r.offset) for r in stored(path)] == [("a", b"3", 3)]
    reader = ViewReader(path)
    assert reader.offsets() == {0: 4} and reader.applied_events() == {0: 4}
    reader.close()


def test_failed_transaction_applies_nothing(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    with ViewStore.open(path, topic="t") as store:
        store.write(fold({0: recs(push("a", b"1"))}, {}, MsgspecXCom))
        batch = fold({0: recs(push("b", b"2"), start=1)}, {0: 1}, MsgspecXCom)
        batch.upserts.append(("only", "three", "columns"))  # type: ignore[arg-type]  # fails mid-way
        with pytest.raises(XComViewError, match="offsets did not advance"):
            store.write(batch)
        assert store.offsets() == {0: 1}
    assert [r.key for r in stored(path)] == ["a"]


def test_second_writer_on_the_same_file_fails_fast(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    with ViewStore.open(path, topic="t"), pytest.raises(XComViewLockedError, match="another materializer"):
        ViewStore.open(path, topic="t")
    ViewStore.open(path, topic="t").close()  # released on close


def test_view_of_another_topic_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    ViewStore.open(path, topic="t").close()
    with pytest.raises(XComViewError, match="view of topic 't'"):
        ViewStore.open(path, topic="other")
    ViewStore.open(path, topic="t").close()  # the failed open released the lock


def test_a_file_that_is_not_a_database_is_a_view_error(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    path.write_bytes(b"not sqlite" * 1000)
    with pytest.raises(XComViewError, match="cannot open the view"):
        ViewStore.open(path, topic="t")


async def test_readers_in_other_processes_never_see_half_a_batch(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    with ViewStore.open(path, topic="t") as store:
        async def write() -> None:
            for batch in batches_of_new_xcoms():
                store.write(batch)
                await asyncio.sleep(0)

        results = await watch_readers_while(path, write)
    assert [torn for torn, _ in results] == [0, 0]
    # The readers ran while the writer committed: they saw several intermediate states.
    assert all(states > 2 for _, states in results)


def test_the_encoded_form_writes_the_same_view(tmp_path: Path) -> None:
    batches = [fold({0: recs(*(push(f"k{i}", b'"v"') for i in range(2500)))}, {}, MsgspecXCom),
               fold({0: recs(clear(), push("k7", b'"w"'), start=2500)}, {0: 2500}, MsgspecXCom)]
    for name, encoded in (("direct", False), ("encoded", True)):
        with ViewStore.open(tmp_path / f"{name}.db", topic="t") as store:
            for batch in batches:
                if encoded:
                    # As the writer child receives it: through MessagePack, chunks decoded lazily.
                    wire = msgspec.msgpack.decode(msgspec.msgpack.encode(encode_batch(batch)))
                    store.write_encoded(EncodedBatch(*wire))
                else:
                    store.write(batch)
    assert _stored(tmp_path / "direct.db") == _stored(tmp_path / "encoded.db")
    assert _stored(tmp_path / "direct.db")[0] == [("k7", b'"w"', 2501)]


def test_an_encoded_batch_is_sorted_and_chunked() -> None:
    ti = TaskInstanceKey("dag", "run", "task")
    batch = fold({0: recs(*(push(f"k{2500 - i:05}", b'"v"', ti) for i in range(2500)))}, {}, MsgspecXCom)
    encoded = encode_batch(batch, collect_replaced=True)
    rows = [row for chunk in encoded.chunks for row in msgspec.msgpack.decode(chunk)]
    assert [len(msgspec.msgpack.decode(c)) for c in encoded.chunks] == [1000, 1000, 500]
    assert [r[4] for r in rows] == sorted(r[4] for r in rows)
    assert encoded.offsets == [(0, 2500, 2500)] and encoded.collect_replaced


def test_collect_replaced_returns_the_rows_a_batch_overwrites_or_clears(tmp_path: Path) -> None:
    other = TaskInstanceKey("dag", "run", "other")
    with ViewStore.open(tmp_path / "v.db", topic="t") as store:
        store.write(fold({0: recs(push("a", b"1"), push("b", b"2"), push("c", b"3", other))}, {},
                         MsgspecXCom))
        batch = fold({0: recs(clear(), push("a", b"4"), push("c", b"5", other), start=3)}, {0: 3},
                     MsgspecXCom)
        replaced = store.write(batch, collect_replaced=True)
        assert sorted((r.task_id, r.key, r.value) for r in replaced) == [
            ("other", "c", b"3"), ("task", "a", b"1"), ("task", "b", b"2")]
        assert store.write(ViewBatch()) == []  # nothing collected unless asked


def test_a_bulk_load_builds_its_indexes_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    with ViewStore.open(path, topic="t") as store:
        store.begin_bulk_load()
        db = sqlite3.connect(path)
        assert "xcom_by_timestamp" not in {n for (n,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type='index'")}
        db.close()
        store.write(fold({0: recs(push("a", b"1"), push("b", b"2"))}, {}, MsgspecXCom))
        assert store.end_bulk_load() == 2
    db = sqlite3.connect(path)
    assert "xcom_by_timestamp" in {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    db.close()


def test_the_lock_names_its_holder(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    fd = acquire_write_lock(path)
    try:
        with pytest.raises(XComViewLockedError, match=f"pid {os.getpid()}"):
            ViewStore.open(path, topic="t")
    finally:
        os.close(fd)
    with ViewStore.open(path, topic="t", lock=False):  # a caller holding the lock (the writer child)
        pass


# -- the dead-letter retry's guarded transaction ------------------------------------------------

_CUSTOM = "custom/1"


class _Custom(MsgspecXCom):
    """A backend that also reads the codec a misconfigured materializer dead-lettered."""

    readable_codecs = frozenset({_CUSTOM})


def _retry(store: ViewStore, backend: type[MsgspecXCom] = _Custom) -> tuple[int, list[DeadLetter]]:
    dead = store.dead_letters()
    by_partition: dict[int, list[DeadLetter]] = {}
    for letter in dead:
        by_partition.setdefault(letter.partition, []).append(letter)
    batch = fold(by_partition, {}, backend)
    outcome = store.retry(batch, [(d.partition, d.offset) for d in dead])
    return outcome.applied, store.dead_letters()


def _rows(path: Path) -> dict[str, tuple[bytes, int]]:
    return {r.key: (r.value, r.offset) for r in stored(path)}


def test_a_retried_push_applies_unless_something_newer_decided(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    with ViewStore.open(path, topic="t") as store:
        store.write(fold({0: recs(push("a", b"1", codec=_CUSTOM), push("b", b"2", codec=_CUSTOM),
                                  push("b", b"3"))}, {}, MsgspecXCom))
        assert [d.offset for d in store.dead_letters()] == [0, 1]
        applied, still = _retry(store)
        assert (applied, still) == (1, [])  # "a" applied; "b" at 1 is older than the stored 2
    assert _rows(path) == {"a": (b"1", 0), "b": (b"3", 2)}


def test_a_retried_push_never_resurrects_what_a_later_clear_removed(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    with ViewStore.open(path, topic="t") as store:
        store.write(fold({0: recs(push("a", b"1", codec=_CUSTOM), clear(), push("b", b"2"))}, {},
                         MsgspecXCom))
        applied, still = _retry(store)
        assert (applied, still) == (0, [])
    assert _rows(path) == {"b": (b"2", 2)}


def test_a_retried_clear_deletes_only_older_rows(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    with ViewStore.open(path, topic="t") as store:
        # A clear this reader could not decode at the time, between two pushes.
        store.write(fold({0: recs(push("a", b"1"), (TI.encode(), b"\xc1"), push("b", b"2"))}, {},
                         MsgspecXCom))
        db = sqlite3.connect(path)
        db.execute("UPDATE dead_letter SET message_value=?", (clear()[1],))  # "fixed": now it decodes
        db.commit()
        db.close()
        applied, still = _retry(store)
        assert (applied, still) == (1, [])
    assert _rows(path) == {"b": (b"2", 2)}
    db = sqlite3.connect(path)  # the clear is remembered for later retries
    assert db.execute("SELECT kafka_offset FROM ti_clear").fetchall() == [(1,)]
    db.close()


def test_what_still_fails_stays_with_the_new_reason(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    with ViewStore.open(path, topic="t") as store:
        store.write(fold({0: recs(push("a", b"1", codec="other/9"), push("b", b"2", codec=_CUSTOM))}, {},
                         MsgspecXCom))
        applied, still = _retry(store)
        assert applied == 1 and [d.offset for d in still] == [0]
        assert "_Custom" in still[0].reason and "other/9" in still[0].reason
    assert _rows(path) == {"b": (b"2", 1)}


def test_columns_name_the_row_order(tmp_path: Path) -> None:
    with ViewStore.open(tmp_path / "v.db", topic="t") as store:
        store.write(fold({0: recs(push("a", b"1"))}, {}, MsgspecXCom))
    db = sqlite3.connect(tmp_path / "v.db")
    [row] = db.execute(f"SELECT {COLUMNS} FROM xcom").fetchall()
    db.close()
    assert row == ("dag", "run", "task", -1, "a", b"1", MsgspecXCom.codec, 1, None, "p", 1, 0, 0)
