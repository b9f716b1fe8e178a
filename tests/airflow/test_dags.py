"""Unchanged Airflow DAGs (examples/airflow) run by real Airflow 3.3 and 2.10 with
xcombus as ``[core] xcom_backend``, against the real broker: with a materializer (pulls
read the local view) and without one (pulls fetch the record from the topic)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import pytest

from tests.airflow.support import backend_counts, latest_run, no_view, references, run_dag, stored_rows
from tests.airflow_env import AirflowEnv
from tests.helpers import DrainedPopen, start_materializer
from xcombus import Settings
from xcombus.audit import history
from xcombus.events import decode_event, decode_ti_key
from xcombus.fetch import EventFetcher
from xcombus.records import XComRecord
from xcombus.reference import XComReference
from xcombus.view import ViewReader

# The first test of a session may build an Airflow environment (pip, ~1-3 min) first.
pytestmark = [pytest.mark.airflow, pytest.mark.integration, pytest.mark.timeout(1500)]

DAG = "xcombus_features"


async def _resolve_from_log(settings: Settings, refs: list[XComReference]) -> None:
    """Every reference points at exactly the event it describes (identity and SHA-256)."""
    async with EventFetcher(settings) as fetcher:
        for ref in refs:
            raw = await fetcher.fetch(ref.partition, ref.offset)
            ti, event = decode_ti_key(raw.key), decode_event(raw.value)
            ref.check(XComRecord(*ti, event.key, event.value, event.codec, event.ts,
                                 event.logical_date, event.producer, event.try_number,
                                 raw.partition, raw.offset))


def _check_run(af: AirflowEnv, settings: Settings, output: str) -> dict:
    run_id = latest_run(af, DAG)
    refs = references(af, DAG, run_id)
    rows = stored_rows(af, DAG, run_id)
    # Airflow's own table holds references only: small, whatever the value's size.
    assert max(len(raw) for *_, raw in rows) < 1500
    big = refs[("big", -1, "return_value")]
    assert big.size > 200 * 1024 and big.type == "str"
    assert big.preview.startswith("'xxxx") and len(big.preview.encode()) <= 1024
    assert all(ref.topic == settings.topic for ref in refs.values())
    for (task_id, map_index, key), ref in refs.items():
        assert (ref.dag_id, ref.run_id, ref.task_id, ref.map_index, ref.key) == (
            DAG, run_id, task_id, map_index, key)
    assert sorted(mi for (t, mi, k) in refs if (t, k) == ("square", "return_value")) == list(range(100))
    # Try numbers come from the running task: the retried task's values are try 2's.
    assert refs[("flaky", -1, "return_value")].try_number == 2
    assert refs[("flaky", -1, "progress")].try_number == 2
    assert ("flaky", -1, "first_try_only") not in refs
    assert {ref.try_number for (t, _m, _k), ref in refs.items() if t != "flaky"} == {1}
    asyncio.run(_resolve_from_log(settings, list(refs.values())))

    # The topic is the audit log: both tries, and one clear between them (two keys of
    # try 1 were purged, and the second purge was covered by the first clear).
    events = asyncio.run(history(settings, DAG, run_id, "flaky", "progress"))
    assert [(e.kind, e.try_number, e.value) for e in events] == [
        ("push", 1, "try-1"), ("clear", 2, None), ("push", 2, "try-2")]
    gone = asyncio.run(history(settings, DAG, run_id, "flaky", "first_try_only"))
    assert [(e.kind, e.try_number) for e in gone] == [("push", 1), ("clear", 2)]
    # The branch decision stays readable by Airflow's scheduler (its own form), and the
    # branch not chosen was skipped; the decision is on the topic too, for the audit.
    (stored,) = [raw for t, _m, k, raw in rows if (t, k) == ("choose", "skipmixin_key")]
    assert json.loads(stored) == {"followed": ["left"]}
    with sqlite3.connect(af.db) as db:
        states = dict(db.execute("SELECT task_id, state FROM task_instance WHERE run_id=? AND "
                                 "task_id IN ('left', 'right')", (run_id,)).fetchall())
    assert states == {"left": "success", "right": "skipped"}
    decided = asyncio.run(history(settings, DAG, run_id, "choose", "skipmixin_key"))
    assert [(e.kind, e.value) for e in decided] == [("push", {"followed": ["left"]})]
    # The run's logical date travels with every push.
    with sqlite3.connect(af.db) as db:
        column = "logical_date" if af.major >= 3 else "execution_date"
        (logical,) = db.execute(f"SELECT {column} FROM dag_run WHERE run_id=?", (run_id,)).fetchone()
    pushed = asyncio.run(history(settings, DAG, run_id, "items", "return_value"))
    assert pushed[0].logical_date is not None
    assert pushed[0].logical_date.isoformat()[:19] == str(logical).replace(" ", "T")[:19]

    counts = backend_counts(output)
    assert counts["pushes"] >= len(refs) + 2  # + the two pushes of try 1
    # One connection for the whole process (dags test runs every task in one), not one per XCom.
    assert output.count("xcombus: publishing XComs to topic") == 1
    assert counts["clears"] == 1
    return {"run_id": run_id, "refs": refs, "counts": counts}


def test_features_dag_reads_the_local_view(airflow: AirflowEnv, topic: Settings,
                                           materializer: DrainedPopen) -> None:
    """A host with a view: pulls wait for the reference's offset and read SQLite, never Kafka."""
    output = run_dag(airflow, DAG, airflow.env(topic))
    result = _check_run(airflow, topic, output)
    counts = result["counts"]
    assert counts["view_reads"] >= 100 and counts["topic_reads"] == 0, counts
    reader = ViewReader(topic.view_path)
    try:
        for (task_id, map_index, key), ref in result["refs"].items():
            row = reader.get(ref.dag_id, ref.run_id, task_id, map_index, key)
            assert row is not None and (row.partition, row.offset) == (ref.partition, ref.offset)
        # The failed try's key was cleared from the view too, as from Airflow's table.
        assert reader.get(DAG, result["run_id"], "flaky", -1, "first_try_only") is None
    finally:
        reader.close()


def test_features_dag_without_a_view_fetches_records(airflow: AirflowEnv, topic: Settings,
                                                     tmp_path: Path) -> None:
    """An ephemeral worker (no view file): each pull reads its one record from the topic."""
    settings = topic.replace(view_path=no_view(tmp_path))
    output = run_dag(airflow, DAG, airflow.env(settings))
    counts = _check_run(airflow, settings, output)["counts"]
    assert counts["view_reads"] == 0 and counts["topic_reads"] >= 100, counts
    assert not Path(settings.view_path).exists()


def test_values_above_the_inline_limit_go_to_object_storage(airflow: AirflowEnv, topic: Settings,
                                                            tmp_path: Path) -> None:
    """A 2 MB value (above max_value_bytes) under ObjectStorageXCom: the payload is a file,
    the event carries its reference, Airflow's row the xcombus reference, and the pull
    (from the view the materializer keeps) returns it exactly."""
    objects = tmp_path / "objects"
    settings = topic.replace(xcom_backend="xcombus.backends.ObjectStorageXCom",
                             object_storage_path=str(objects), object_storage_threshold=65536)
    mat = start_materializer(settings)
    try:
        deadline = time.monotonic() + 60
        while not Path(settings.view_path).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        output = run_dag(airflow, "xcombus_large", airflow.env(settings))
    finally:
        mat.terminate()
        mat.communicate(timeout=60)
    run_id = latest_run(airflow, "xcombus_large")
    ref = references(airflow, "xcombus_large", run_id)[("produce", -1, "return_value")]
    assert ref.size < 1024 and "..." in ref.preview  # the event holds a reference
    files = list(objects.rglob("*.json"))
    assert len(files) == 1 and files[0].stat().st_size > 2 * 1024 * 1024
    assert backend_counts(output)["view_reads"] == 1
