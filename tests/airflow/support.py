"""Helpers for the Airflow tests: Airflow's own tables, the backend's exit summary."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

from tests.airflow_env import AirflowEnv
from xcombus.reference import XComReference, parse_reference


def latest_run(af: AirflowEnv, dag_id: str) -> str:
    with sqlite3.connect(af.db) as db:
        row = db.execute("SELECT run_id FROM dag_run WHERE dag_id=? ORDER BY id DESC LIMIT 1",
                         (dag_id,)).fetchone()
    assert row is not None, f"no run of {dag_id} in {af.db}"
    return str(row[0])


def stored_rows(af: AirflowEnv, dag_id: str, run_id: str) -> list[tuple[str, int, str, Any]]:
    """Airflow's own xcom table for one run: (task_id, map_index, key, stored value)."""
    with sqlite3.connect(af.db) as db:
        return db.execute("SELECT task_id, map_index, key, value FROM xcom WHERE dag_id=? AND "
                          "run_id=? ORDER BY task_id, map_index, key", (dag_id, run_id)).fetchall()


#: XComs Airflow's scheduler reads from its own table: stored as Airflow stores them.
CONTROL_KEYS = frozenset({"skipmixin_key"})


def references(af: AirflowEnv, dag_id: str, run_id: str) -> dict[tuple[str, int, str], XComReference]:
    """Every row of the run parsed as a reference (asserting each one is one), but
    Airflow's control XComs, which must not be references."""
    out = {}
    for task_id, map_index, key, raw in stored_rows(af, dag_id, run_id):
        if key in CONTROL_KEYS:
            stored = json.loads(raw)
            assert parse_reference(stored) is None, f"{task_id}.{key} became a reference"
            continue
        stored = json.loads(raw) if af.major >= 3 else raw  # 3.x: JSON text; 2.x: JSON bytes
        ref = parse_reference(stored)
        assert ref is not None, f"{task_id}[{map_index}].{key} holds {raw!r:.200}, not a reference"
        out[(task_id, map_index, key)] = ref
    return out


_SUMMARY = re.compile(r"xcombus: (\d+) pushes, (\d+) clears, (\d+) reads from the view, "
                      r"(\d+) records fetched from the topic")


def backend_counts(output: str) -> dict[str, int]:
    """What the backend reported at exit (summed over every summary line in the output)."""
    total = {"pushes": 0, "clears": 0, "view_reads": 0, "topic_reads": 0}
    for match in _SUMMARY.finditer(output):
        for name, value in zip(total, match.groups(), strict=True):
            total[name] += int(value)
    return total


def tail(text: str, n: int = 6000) -> str:
    return text[-n:]


def run_dag(af: AirflowEnv, dag_id: str, env: dict[str, str], *, timeout: float = 900) -> str:
    """``airflow dags test DAG``; fail with the output's tail unless it succeeded."""
    done = af.run("dags", "test", dag_id, env=env, timeout=timeout)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"airflow {af.version} dags test {dag_id} failed:\n{tail(output)}"
    return output


def no_view(tmp_path: Path) -> str:
    """A view path that does not exist: the backend reads records from the topic."""
    return str(tmp_path / "no-view-here" / "view.db")
