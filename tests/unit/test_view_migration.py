"""A view file written by an older xcombus is upgraded in place when a writer opens it
(xcombus.store, in this process or in the writer child): 1 -> 2 -> 3 and 2 -> 3, each in one
transaction."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from xcombus import MsgspecXCom
from xcombus.events import SCHEMA_VERSION, Push, TaskInstanceKey, encode_event
from xcombus.fold import fold
from xcombus.store import ViewStore
from xcombus.view import ViewReader
from xcombus.writer import ViewWriterProcess

from .batches import recs

# Schema 1 as xcombus 0.1.0 wrote it: the logical date indexed on the xcom table itself.
_V1 = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE xcom (
    dag_id TEXT NOT NULL, run_id TEXT NOT NULL, task_id TEXT NOT NULL, map_index INTEGER NOT NULL,
    key TEXT NOT NULL, value BLOB NOT NULL, codec TEXT NOT NULL, timestamp INTEGER NOT NULL,
    logical_date INTEGER, producer TEXT NOT NULL, try_number INTEGER NOT NULL,
    kafka_partition INTEGER NOT NULL, kafka_offset INTEGER NOT NULL,
    PRIMARY KEY (dag_id, run_id, task_id, map_index, key)) WITHOUT ROWID;
CREATE INDEX xcom_by_logical_date ON xcom (dag_id, task_id, key, logical_date);
CREATE INDEX xcom_by_timestamp ON xcom (timestamp);
CREATE TABLE offsets (kafka_partition INTEGER PRIMARY KEY, next_offset INTEGER NOT NULL,
                      applied_events INTEGER NOT NULL DEFAULT 0);
INSERT INTO meta VALUES ('schema_version', '1'), ('topic', 't');
INSERT INTO xcom VALUES ('d', 'r1', 'up', -1, 'k', X'31', 'json', 1, 100, 'p', 1, 0, 0),
                        ('d', 'r2', 'up', -1, 'k', X'32', 'json', 2, 200, 'p', 1, 0, 1),
                        ('d', 'r2', 'other', -1, 'k', X'33', 'json', 3, 200, 'p', 1, 0, 2),
                        ('d', 'nodate', 'up', -1, 'k', X'34', 'json', 4, NULL, 'p', 1, 0, 3);
INSERT INTO offsets VALUES (0, 4, 4);
"""


def _v1_view(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(_V1)
    db.close()


def _check_upgraded(path: Path) -> None:
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone() == ("3",)
        # r1, r2 from the old rows (a run without a date has none), r3 from the push after.
        assert sorted(db.execute("SELECT * FROM dag_run")) == [("d", "r1", 100), ("d", "r2", 200),
                                                               ("d", "r3", 300)]
        names = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert "xcom_by_logical_date" not in names and "dag_run_by_logical_date" in names
        assert db.execute("SELECT count(*) FROM xcom").fetchone() == (5,)  # old rows kept
    db.close()
    reader = ViewReader(path)
    try:
        assert reader.logical_date_of("d", "r2") == 200
        # r4 has nothing of 'up': the latest run before its date that has the key.
        for date, run, value in ((250, "r2", b"2"), (150, "r1", b"1"), (301, "r3", b"5")):
            prior = reader.get_tasks_with_prior("d", "r4", ["up"], "k", None, date)
            assert [(r.run_id, r.value) for r in prior] == [(run, value)]
        assert reader.get_tasks_with_prior("d", "r4", ["up"], "k", None, 100) == []
        # 'other' exists in r2 only: r3 (newer, without it) is skipped.
        prior = reader.get_tasks_with_prior("d", "r4", ["other"], "k", None, 301)
        assert [(r.run_id, r.value) for r in prior] == [("r2", b"3")]
    finally:
        reader.close()


@pytest.mark.parametrize("in_child", [False, True], ids=["in-process", "writer-child"])
async def test_a_schema_1_view_is_upgraded_when_a_writer_opens_it(tmp_path: Path, in_child: bool) -> None:
    path = tmp_path / "v1.db"
    _v1_view(path)
    # Later pushes keep the run's date current.
    ti = TaskInstanceKey("d", "r3", "up")
    event = (ti.encode(), encode_event(Push(schema=SCHEMA_VERSION, key="k", value=b"5",
                                            codec=MsgspecXCom.codec, ts=5, producer="p",
                                            logical_date=300)))
    batch = fold({0: recs(event, start=4)}, {0: 4}, MsgspecXCom)
    if in_child:
        async with ViewWriterProcess(path, topic="t") as writer:
            assert await writer.offsets() == {0: 4}
            await writer.write(batch)
    else:
        with ViewStore.open(path, topic="t") as store:
            assert store.offsets() == {0: 4}
            store.write(batch)
    _check_upgraded(path)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT logical_date FROM dag_run WHERE run_id='r3'").fetchone() == (300,)
    db.close()


def test_a_reader_answers_from_a_schema_1_file_before_the_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    _v1_view(path)
    reader = ViewReader(path)
    try:
        assert reader.logical_date_of("d", "r2") == 200
        prior = reader.get_tasks_with_prior("d", "r4", ["up"], "k", None, 250)
        assert [(r.run_id, r.value) for r in prior] == [("r2", b"2")]
    finally:
        reader.close()


async def test_an_index_an_older_xcombus_recreated_is_dropped_again(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    ViewStore.open(path, topic="t").close()
    with sqlite3.connect(path) as db:  # what schema 1's CREATE INDEX IF NOT EXISTS would do
        db.execute("CREATE INDEX xcom_by_logical_date ON xcom (dag_id, task_id, key, logical_date)")
    db.close()
    async with ViewWriterProcess(path, topic="t"):
        pass
    with sqlite3.connect(path) as db:
        names = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    db.close()
    assert "xcom_by_logical_date" not in names


def test_runs_with_the_same_logical_date_the_latest_push_wins(tmp_path: Path) -> None:
    path = tmp_path / "v.db"

    def event(run: str, value: bytes, ts: int) -> tuple[bytes, bytes]:
        return (TaskInstanceKey("d", run, "up").encode(),
                encode_event(Push(schema=SCHEMA_VERSION, key="k", value=value, codec=MsgspecXCom.codec,
                                  ts=ts, producer="p", logical_date=100)))

    with ViewStore.open(path, topic="t") as store:
        # Two runs share a logical date; "manual" was pushed to last although it sorts first.
        store.write(fold({0: recs(event("scheduled", b"1", 1), event("manual", b"2", 2))},
                         {}, MsgspecXCom))
    reader = ViewReader(path)
    try:
        prior = reader.get_tasks_with_prior("d", "later", ["up"], "k", None, 200)
        assert [(r.run_id, r.value) for r in prior] == [("manual", b"2")]
    finally:
        reader.close()


# Schema 2 as xcombus wrote it before the version index: a retried task instance (try 3,
# cleared once) and one that ran once.
_V2 = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE xcom (
    dag_id TEXT NOT NULL, run_id TEXT NOT NULL, task_id TEXT NOT NULL, map_index INTEGER NOT NULL,
    key TEXT NOT NULL, value BLOB NOT NULL, codec TEXT NOT NULL, timestamp INTEGER NOT NULL,
    logical_date INTEGER, producer TEXT NOT NULL, try_number INTEGER NOT NULL,
    kafka_partition INTEGER NOT NULL, kafka_offset INTEGER NOT NULL,
    PRIMARY KEY (dag_id, run_id, task_id, map_index, key)) WITHOUT ROWID;
CREATE TABLE ti_clear (
    dag_id TEXT NOT NULL, run_id TEXT NOT NULL, task_id TEXT NOT NULL, map_index INTEGER NOT NULL,
    kafka_partition INTEGER NOT NULL, kafka_offset INTEGER NOT NULL,
    PRIMARY KEY (dag_id, run_id, task_id, map_index)) WITHOUT ROWID;
CREATE TABLE dag_run (dag_id TEXT NOT NULL, run_id TEXT NOT NULL, logical_date INTEGER NOT NULL,
                      PRIMARY KEY (dag_id, run_id)) WITHOUT ROWID;
CREATE INDEX dag_run_by_logical_date ON dag_run (dag_id, logical_date);
CREATE INDEX xcom_by_timestamp ON xcom (timestamp);
CREATE TABLE offsets (kafka_partition INTEGER PRIMARY KEY, next_offset INTEGER NOT NULL,
                      applied_events INTEGER NOT NULL DEFAULT 0);
CREATE TABLE dead_letter (kafka_partition INTEGER NOT NULL, kafka_offset INTEGER NOT NULL,
    message_key BLOB, message_value BLOB, reason TEXT NOT NULL, kafka_timestamp INTEGER,
    PRIMARY KEY (kafka_partition, kafka_offset));
INSERT INTO meta VALUES ('schema_version', '2'), ('topic', 't');
INSERT INTO xcom VALUES ('d', 'r', 'retried', -1, 'k', X'31', 'json', 1, NULL, 'p', 3, 0, 5),
                        ('d', 'r', 'retried', -1, 'j', X'32', 'json', 1, NULL, 'p', 3, 0, 6),
                        ('d', 'r', 'once', -1, 'k', X'33', 'json', 1, NULL, 'p', 1, 0, 7);
INSERT INTO ti_clear VALUES ('d', 'r', 'retried', -1, 0, 4);
INSERT INTO offsets VALUES (0, 8, 8);
"""


@pytest.mark.parametrize("in_child", [False, True], ids=["in-process", "writer-child"])
async def test_a_schema_2_view_is_upgraded_with_its_tries_and_a_partial_index(tmp_path: Path,
                                                                              in_child: bool) -> None:
    path = tmp_path / "v2.db"
    with sqlite3.connect(path) as db:
        db.executescript(_V2)
    db.close()
    # After the upgrade a zombie try 2 of the retried task instance is fenced (its try came
    # from its rows), and the index lists what came after the upgrade.
    zombie = (TaskInstanceKey("d", "r", "retried").encode(),
              encode_event(Push(schema=1, key="k", value=b"9", codec=MsgspecXCom.codec, ts=9, producer="z",
                                try_number=2)))
    batch = fold({0: recs(zombie, start=8)}, {0: 8}, MsgspecXCom)
    if in_child:
        async with ViewWriterProcess(path, topic="t") as writer:
            await writer.write(batch)
    else:
        with ViewStore.open(path, topic="t") as store:
            store.write(batch)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone() == ("3",)
        assert db.execute("SELECT * FROM ti_try").fetchall() == [("d", "r", "retried", -1, 3)]
        assert db.execute("SELECT value FROM xcom WHERE task_id='retried' AND key='k'").fetchone() == (b"1",)
        assert db.execute("SELECT kafka_offset, fenced FROM xcom_version").fetchall() == [(8, 1)]
        assert db.execute("SELECT count(*) FROM xcom").fetchone() == (3,)
    db.close()
    reader = ViewReader(path)
    try:
        assert not reader.version_index_complete()  # readers scan the log for older versions
    finally:
        reader.close()


async def test_a_schema_1_view_is_upgraded_to_3_in_one_go(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    _v1_view(path)
    ViewStore.open(path, topic="t").close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone() == ("3",)
        tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"dag_run", "ti_try", "xcom_version", "name"} <= tables
    db.close()


def test_a_failed_upgrade_leaves_the_old_schema_whole(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    with sqlite3.connect(path) as db:
        db.executescript(_V2)
        # A table of that name but another shape: the upgrade fails half-way through.
        db.execute("CREATE TABLE ti_try (x)")
    db.close()
    with pytest.raises(Exception, match="ti_try"):
        ViewStore.open(path, topic="t").close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone() == ("2",)
        assert "xcom_version" not in {n for (n,) in db.execute("SELECT name FROM sqlite_master")}
    db.close()
