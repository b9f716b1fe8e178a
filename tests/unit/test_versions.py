"""Versions and tries on hand-made logs (no broker): the fencing rule, re-sends, overrides,
the version index, and the same view whatever the batch boundaries (xcombus.fold +
xcombus.store; the rule is stated in xcombus/store.py's docstring).

A small reference model applies the rule event by event; every log is also folded in one
batch, in batches of every size and through the writer child's encoding, and all of them
must equal the model: rows, current tries and the version index.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from xcombus import MsgspecXCom
from xcombus.events import Clear, Override, Push, TaskInstanceKey, decode_event, decode_ti_key
from xcombus.fold import fold
from xcombus.store import (
    EncodedBatch,
    ViewStore,
    content_hash,
    encode_batch,
    ti_ident,
    version_ident,
)
from xcombus.view import ViewReader

from .batches import TI, Rec, clear, override, push, recs, view_state

OTHER = TaskInstanceKey("dag", "run", "other", 3)

Event = tuple[bytes, bytes]


# -- the reference model: the rule, one event at a time ------------------------------------------

def model(log: list[Event], partition: int = 0) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]],
                                                           list[tuple[Any, ...]]]:
    """Rows, current tries (above 1) and version index rows, as view_state returns them."""
    rows: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    tries: dict[tuple[Any, ...], int] = {}
    versions: list[tuple[Any, ...]] = []
    for offset, (raw_key, raw_value) in enumerate(log):
        ti = tuple(decode_ti_key(raw_key))
        event = decode_event(raw_value)
        ti_hash = ti_ident(*ti)
        current = tries.get(ti, 1)
        if isinstance(event, Override):
            if event.value is None:
                rows.pop((*ti, event.key), None)
            else:
                old = rows.get((*ti, event.key))
                rows[(*ti, event.key)] = (*ti, event.key, event.value, event.codec, event.ts,
                                          old[8] if old else None, event.producer, current, partition, offset)
            versions.append((version_ident(ti_hash, event.key), partition, offset, 2, current, event.ts,
                             event.producer, event.actor, None if event.value is None else len(event.value),
                             None if event.value is None else content_hash(event.value), 0))
            continue
        effective = max(event.try_number, 1)
        is_push = isinstance(event, Push)
        ident = version_ident(ti_hash, event.key) if isinstance(event, Push) else version_ident(ti_hash)
        version = (ident, partition, offset, 0 if is_push else 1, event.try_number, event.ts, event.producer,
                   None, len(event.value) if isinstance(event, Push) else None,
                   content_hash(event.value) if isinstance(event, Push) else None)
        if effective < current:
            versions.append((*version, 1))
            continue
        if effective > current:
            tries[ti] = effective
            rows = {k: v for k, v in rows.items() if k[:4] != ti}
        if isinstance(event, Clear):
            rows = {k: v for k, v in rows.items() if k[:4] != ti}
            versions.append((*version, 0))
            continue
        assert isinstance(event, Push)
        old = rows.get((*ti, event.key))
        if old is not None and (old[9], old[10], old[6], old[5]) == (event.producer, event.try_number,
                                                                      event.codec, event.value):
            continue  # a re-send: no version, the row as it was
        rows[(*ti, event.key)] = (*ti, event.key, event.value, event.codec, event.ts, event.logical_date,
                                  event.producer, event.try_number, partition, offset)
        versions.append((*version, 0))
    return (sorted(rows.values()), sorted((*ti, t) for ti, t in tries.items()),
            sorted(versions, key=lambda v: (v[1], v[2])))


def write(path: Path, log: list[Event], batch_size: int | None = None, *, encoded: bool = False) -> Path:
    """Fold ``log`` (partition 0) into a new view in batches of ``batch_size`` (all at once: None)."""
    messages = recs(*log)
    size = batch_size or max(len(messages), 1)
    with ViewStore.open(path, topic="t") as store:
        for start in range(0, len(messages), size):
            batch = fold({0: messages[start:start + size]}, store.offsets(), MsgspecXCom)
            if encoded:  # as the writer child receives it
                wire = msgspec.msgpack.decode(msgspec.msgpack.encode(encode_batch(batch)))
                store.write_encoded(EncodedBatch(*wire))
            else:
                store.write(batch)
    return path


def check(tmp_path: Path, log: list[Event]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]],
                                                        list[tuple[Any, ...]]]:
    """The view of ``log`` folded at once, event by event, in batches of 2 and 3 and
    encoded: all equal to the model; return it."""
    expected = model(log)
    for size in (None, 1, 2, 3):
        for encoded in (False, True):
            path = write(tmp_path / f"v-{size}-{encoded}.db", log, size, encoded=encoded)
            assert view_state(path) == expected, (size, encoded)
    return expected


def values(state: tuple[list[tuple[Any, ...]], ...]) -> dict[tuple[str, str], bytes]:
    return {(row[2], row[4]): row[5] for row in state[0]}


# -- the rule ---------------------------------------------------------------------------------------

def test_a_zombie_try_after_the_newer_try_cleared_never_changes_the_view(tmp_path: Path) -> None:
    log = [push("k", b'"try 1"'), clear(try_number=2), push("k", b'"try 2"', try_number=2),
           *(push("k", f'"zombie {i}"'.encode(), try_number=1, producer="zombie") for i in range(20))]
    rows, tries, versions = check(tmp_path, log)
    assert values((rows,)) == {("task", "k"): b'"try 2"'}
    assert tries == [("dag", "run", "task", -1, 2)]
    assert [v[10] for v in versions] == [0, 0, 0, *[1] * 20]  # every zombie push is indexed, fenced


def test_a_newer_try_that_pushes_without_a_clear_hides_the_older_tries_values(tmp_path: Path) -> None:
    log = [push("a", b"1"), push("b", b"2"), push("b", b"3", try_number=2)]
    state = check(tmp_path, log)
    assert values(state) == {("task", "b"): b"3"}  # "a" of try 1 is gone too


def test_a_clear_of_an_older_try_is_fenced(tmp_path: Path) -> None:
    log = [push("a", b"1", try_number=3), clear(try_number=2), push("b", b"2", try_number=3)]
    rows, tries, versions = check(tmp_path, log)
    assert values((rows,)) == {("task", "a"): b"1", ("task", "b"): b"2"}
    assert tries == [("dag", "run", "task", -1, 3)]
    assert [(v[3], v[10]) for v in versions] == [(0, 0), (1, 1), (0, 0)]


def test_a_clear_of_the_current_try_deletes_every_row_as_before(tmp_path: Path) -> None:
    log = [push("a", b"1"), push("b", b"2"), clear(), push("a", b"4")]
    rows, tries, _ = check(tmp_path, log)
    assert values((rows,)) == {("task", "a"): b"4"} and tries == []


def test_task_instances_are_fenced_independently(tmp_path: Path) -> None:
    log = [push("k", b"1", try_number=2), push("k", b"2", OTHER), push("k", b"3", try_number=1),
           push("k", b"4", OTHER, try_number=1)]
    state = check(tmp_path, log)
    assert values(state) == {("task", "k"): b"1", ("other", "k"): b"4"}


def test_tries_below_one_count_as_one(tmp_path: Path) -> None:
    log = [push("a", b"1", try_number=0), push("b", b"2", try_number=1), push("c", b"3", try_number=-4)]
    rows, tries, versions = check(tmp_path, log)
    assert sorted(values((rows,))) == [("task", "a"), ("task", "b"), ("task", "c")]
    assert tries == [] and not any(v[10] for v in versions)


# -- re-sends ----------------------------------------------------------------------------------------

def test_the_same_producer_resending_the_same_event_makes_one_version(tmp_path: Path) -> None:
    log = [push("k", b"1"), push("k", b"1"), push("k", b"1")]
    rows, _, versions = check(tmp_path, log)
    assert [(r[4], r[12]) for r in rows] == [("k", 0)]  # the row as the first push wrote it
    assert [v[2] for v in versions] == [0]


def test_what_is_not_a_resend_makes_a_version(tmp_path: Path) -> None:
    log = [push("k", b"1"), push("k", b"1", producer="other"), push("k", b"1", try_number=2),
           push("k", b"2", try_number=2), push("k", b"1", try_number=2),  # back to 1 after 2: a new version
           clear(try_number=2), push("k", b"1", try_number=2)]  # after a clear the row is gone
    rows, _, versions = check(tmp_path, log)
    assert [v[2] for v in versions] == [0, 1, 2, 3, 4, 5, 6]
    assert [(r[4], r[12]) for r in rows] == [("k", 6)]


def test_a_resend_across_batches_is_recognised_against_the_stored_row(tmp_path: Path) -> None:
    # The first push of the second batch repeats the stored row, then is superseded: only the
    # stored row decides (the probe), and the final push decides by the upsert.
    log = [push("k", b"1"), push("j", b"5"), push("k", b"1"), push("k", b"2"), push("j", b"5")]
    _, _, versions = check(tmp_path, log)
    assert [v[2] for v in versions] == [0, 1, 3]


# -- overrides ---------------------------------------------------------------------------------------

def test_overrides_set_and_delete_in_log_order_and_take_the_current_try(tmp_path: Path) -> None:
    log = [push("a", b"1", try_number=2), push("b", b"2", try_number=2), override("a", b'"fixed"'),
           override("b", None, actor="bob"), push("c", b"3", try_number=2)]
    rows, tries, versions = check(tmp_path, log)
    assert {r[4]: (r[5], r[10]) for r in rows} == {"a": (b'"fixed"', 2), "c": (b"3", 2)}
    assert [(v[3], v[4], v[7]) for v in versions if v[3] == 2] == [(2, 2, "alice"), (2, 2, "bob")]
    assert tries == [("dag", "run", "task", -1, 2)]


def test_an_override_is_never_fenced_and_does_not_raise_the_try(tmp_path: Path) -> None:
    log = [push("a", b"1", try_number=3), override("a", b"9"), push("a", b"2", try_number=2),
           override("z", b"7", OTHER), push("y", b"8", OTHER)]
    rows, tries, versions = check(tmp_path, log)
    assert values((rows,)) == {("task", "a"): b"9", ("other", "z"): b"7", ("other", "y"): b"8"}
    assert tries == [("dag", "run", "task", -1, 3)]
    assert [v[10] for v in versions] == [0, 0, 1, 0, 0]


def test_an_override_keeps_the_rows_logical_date(tmp_path: Path) -> None:
    rows, _, _ = check(tmp_path, [push("a", b"1", logical_date=5), override("a", b"2")])
    assert [(r[5], r[8]) for r in rows] == [(b"2", 5)]


# -- the same view whatever the batches ------------------------------------------------------------

_TIS = st.sampled_from([TI, OTHER])
_EVENTS = st.one_of(
    st.builds(lambda key, value, ti, try_number, producer: push(key, value, ti, try_number=try_number,
                                                                producer=producer),
              st.sampled_from(["a", "b"]), st.sampled_from([b"1", b"2"]), _TIS, st.integers(0, 3),
              st.sampled_from(["p", "q"])),
    st.builds(lambda ti, try_number: clear(ti, try_number=try_number), _TIS, st.integers(1, 3)),
    st.builds(lambda key, value, ti: override(key, value, ti), st.sampled_from(["a", "b"]),
              st.sampled_from([b"1", b"3", None]), _TIS),
)


@given(st.lists(_EVENTS, max_size=14), st.integers(1, 5))
def test_any_log_in_any_batches_equals_the_rule_applied_event_by_event(
        tmp_path_factory: pytest.TempPathFactory, log: list[Event], size: int) -> None:
    directory = tmp_path_factory.mktemp("log")
    expected = model(log)
    assert view_state(write(directory / "once.db", log)) == expected
    assert view_state(write(directory / "batches.db", log, size)) == expected
    assert view_state(write(directory / "encoded.db", log, size, encoded=True)) == expected


def test_a_log_without_retries_or_overrides_folds_into_one_step() -> None:
    batch = fold({0: recs(push("a", b"1"), push("b", b"2", OTHER), clear(), push("a", b"3"))}, {},
                 MsgspecXCom)
    assert batch.then is None and batch.override is None
    # try, partition, offsets of the version rows fold made: the push the clear dropped, the clear
    assert batch.tis == [(*TI, 1, 0, [0, 2]), (*OTHER, 1, 0, ())]
    assert [v[2] for v in batch.versions] == [0, 2]  # the current rows are indexed when they leave


def test_a_newer_try_or_an_override_cuts_the_batch_into_steps() -> None:
    batch = fold({0: recs(push("a", b"1"), push("a", b"2", try_number=2), override("a", b"3"),
                          push("a", b"1", try_number=1))}, {}, MsgspecXCom)
    steps = batch.steps()
    assert [[ti[:5] for ti in s.tis] for s in steps] == [[(*TI, 1)], [(*TI, 2)], [], []]
    assert steps[2].override is not None and steps[2].override[4:6] == ("a", b"3")
    assert [v[10] for v in steps[3].versions] == [1]  # fold knows try 1 is older than try 2


# -- the index -------------------------------------------------------------------------------------

def test_versions_and_try_version_read_the_index(tmp_path: Path) -> None:
    log = [push("k", b"1"), push("other", b"0"), push("k", b"2"), clear(try_number=2),
           push("k", b"3", try_number=2), push("k", b"4", producer="zombie"), override("k", b"5", actor="bob")]
    path = write(tmp_path / "v.db", log, 3)
    reader = ViewReader(path)
    try:
        assert reader.version_index_complete()
        versions = reader.versions("dag", "run", "task", -1, "k")
        assert [(v.offset, v.kind, v.try_number, v.fenced) for v in versions] == [
            (0, "push", 1, False), (2, "push", 1, False), (3, "clear", 2, False), (4, "push", 2, False),
            (5, "push", 1, True), (6, "override", 2, False)]
        assert versions[-1].actor == "bob" and versions[0].producer == "p" and versions[0].size == 1
        assert versions[0].content_hash == content_hash(b"1")
        last_of_try_1 = reader.try_version("dag", "run", "task", -1, "k", 1)
        assert last_of_try_1 is not None and last_of_try_1.offset == 5  # the fenced push: try 1 pushed it
        assert reader.try_version("dag", "run", "task", -1, "k", 3) is None
        assert reader.versions("dag", "run", "task", -1, "absent") == [versions[2]]  # the clears only
    finally:
        reader.close()


def test_the_index_stays_within_64_bytes_per_event(tmp_path: Path) -> None:
    """The benchmark's shape (every XCom of a 4-key task instance), 100,000 events written
    through the store in materializer-sized encoded batches, each XCom pushed twice, a pass
    apart: every first push is replaced, so half of the events are index rows (a current row
    is its own entry). The index, the name table and the tries cost at most 64 bytes per
    index row, so per event whatever the share of replaced versions."""
    keys = ("return_value", "rows", "path", "checksum")
    events, xcoms = 100_000, 50_000
    path = tmp_path / "v.db"
    with ViewStore.open(path, topic="t") as store:
        for start in range(0, events, 20_000):
            log = []
            for i in range(start, start + 20_000):
                ti, key = divmod(i % xcoms, 4)
                run, rest = divmod(ti, 2500)
                task = TaskInstanceKey("backlog_dag", f"backlog__{run:05d}", f"task_{rest // 250}", rest % 250)
                log.append(push(keys[key], f'"s3://bucket/k{i:08d}"'.encode(), task,
                                producer=f"host:{i // xcoms}:abcdef", ts=1_764_000_000_000_000 + i))
            # Encoded, as the materializer hands batches to its writer (sorted by key).
            store.write_encoded(encode_batch(fold({0: recs(*log, start=start)}, store.offsets(), MsgspecXCom)))
    db = sqlite3.connect(path)
    sizes = dict(db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall())
    indexed = db.execute("SELECT count(*) FROM xcom_version").fetchone()[0]
    db.close()
    assert indexed == xcoms
    added = sum(size for name, size in sizes.items() if name in ("xcom_version", "name", "ti_try"))
    print(f"version index: {added / indexed:.1f} bytes per index row, {added / events:.1f} per event; whole "
          f"file {os.path.getsize(path) / events:.1f} bytes/event; tables {sizes}")
    assert added / indexed <= 64


def test_an_old_reader_dead_letters_an_override_rather_than_misreading_it() -> None:
    raw = override("k", b"1")[1]
    with pytest.raises(msgspec.DecodeError, match="override"):  # a reader of schema 1 knew push | clear
        msgspec.msgpack.Decoder(Push | Clear).decode(raw)
    batch = fold({0: [Rec(0, TI.encode(), raw)]}, {}, MsgspecXCom)
    assert batch.override is not None and not batch.dead  # this reader applies it


# -- the other writers of the view --------------------------------------------------------------

def test_rows_a_newer_try_drops_are_collected_for_purging_backends(tmp_path: Path) -> None:
    with ViewStore.open(tmp_path / "v.db", topic="t") as store:
        store.write(fold({0: recs(push("a", b"1"), push("b", b"2", OTHER))}, {}, MsgspecXCom))
        batch = fold({0: recs(push("c", b"3", try_number=2), start=2)}, {0: 2}, MsgspecXCom)
        replaced = store.write(batch, collect_replaced=True)
    assert [(r.task_id, r.key, r.value) for r in replaced] == [("task", "a", b"1")]


class _Custom(MsgspecXCom):
    """Also reads the codec a misconfigured materializer dead-lettered."""

    readable_codecs = frozenset({"custom/1"})


def test_a_retried_dead_letter_of_an_older_try_is_fenced(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    with ViewStore.open(path, topic="t") as store:
        store.write(fold({0: recs(push("a", b"1", codec="custom/1"), push("b", b"2", try_number=2))}, {},
                         MsgspecXCom))
        dead = store.dead_letters()
        assert [d.offset for d in dead] == [0]
        outcome = store.retry(fold({0: dead}, {}, _Custom), [(d.partition, d.offset) for d in dead])
        assert outcome.applied == 0 and store.dead_letters() == []
    assert values(view_state(path)) == {("task", "b"): b"2"}


def test_retried_dead_letters_enter_the_version_index_as_a_rebuild_has_them(tmp_path: Path) -> None:
    log = [push("a", b"1", codec="custom/1"), push("b", b"2", codec="custom/1"), push("b", b"3"),
           push("c", b"4", codec="custom/1"), push("c", b"5", codec="custom/1"), clear(), push("d", b"6")]
    live = tmp_path / "live.db"
    with ViewStore.open(live, topic="t") as store:
        store.write(fold({0: recs(*log)}, {}, MsgspecXCom))
        dead = store.dead_letters()
        assert [d.offset for d in dead] == [0, 1, 3, 4]
        outcome = store.retry(fold({0: dead}, {}, _Custom), [(d.partition, d.offset) for d in dead])
        assert outcome.applied == 0 and store.dead_letters() == []  # the clear at 5 decided them all
    rebuilt = tmp_path / "rebuilt.db"
    with ViewStore.open(rebuilt, topic="t") as store:
        store.write(fold({0: recs(*log)}, {}, _Custom))
    assert view_state(live) == view_state(rebuilt)
    assert [v[2] for v in view_state(live)[2]] == [0, 1, 2, 3, 4, 5, 6]  # every event, once


def test_a_retried_dead_letter_of_an_older_try_is_indexed_as_fenced(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    with ViewStore.open(path, topic="t") as store:
        store.write(fold({0: recs(push("b", b"2", try_number=2), push("a", b"1", codec="custom/1"))}, {},
                         MsgspecXCom))
        dead = store.dead_letters()
        store.retry(fold({0: dead}, {}, _Custom), [(d.partition, d.offset) for d in dead])
        store.retry(fold({0: dead}, {}, _Custom), [(d.partition, d.offset) for d in dead])  # twice: no harm
    versions = view_state(path)[2]
    assert [(v[2], v[4], v[10]) for v in versions] == [(0, 2, 0), (1, 1, 1)]  # (offset, try, fenced)


def test_verify_compares_the_version_indexes_and_tries(tmp_path: Path) -> None:
    from xcombus.rebuild import verify

    log = [push("a", b"1"), push("a", b"2", try_number=2)]
    a, b = write(tmp_path / "a.db", log), write(tmp_path / "b.db", log, 1)
    assert verify(a, b).same
    db = sqlite3.connect(b)
    db.execute("UPDATE xcom_version SET fenced = 1 WHERE kafka_offset = 0")
    db.execute("DELETE FROM ti_try")
    db.commit()
    db.close()
    result = verify(a, b)
    assert not result.same and result.differences == []
    assert result.version_differences == [  # the index row on either side, the try only in A
        "only in A: version index row at 0:0 (kind 0, try 1, fenced 0)",
        "only in A: dag/run/task[-1] at try 2",
        "only in B: version index row at 0:0 (kind 0, try 1, fenced 1)"]
