"""The command line as a user runs it: demo, doctor, topic create, ls."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import cli, settings_env, start_materializer, stop_process
from xcombus import Settings
from xcombus.view import ViewReader

pytestmark = pytest.mark.integration


def test_demo_runs_its_tasks_in_separate_processes_and_prints_the_view(settings: Settings) -> None:
    result = cli("demo", settings=settings, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    pids = {line.split(" pid ")[1].split()[0] for line in out.splitlines() if " pid " in line and "done" in line}
    assert len(pids) == 6  # extract, 4 x transform, load: six processes
    assert "materialized view" in out and "mean_temp_f" in out and "55.29" in out
    reader = ViewReader(settings.view_path)
    rows = reader.entries(dag_id="xcombus_demo", limit=1000)
    reader.close()
    assert sorted((r.task_id, r.map_index) for r in rows if r.key == "return_value") == [
        ("extract", -1), ("load", -1), *(("transform", i) for i in range(4))]


def test_topic_create_then_doctor_before_any_view(settings: Settings) -> None:
    created = cli("topic", "create", "--partitions", "2", "--retention-ms", "86400000", settings=settings)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout) == {"topic": settings.topic, "partitions": 2,
                                          "cleanup.policy": "delete", "retention.ms": "86400000"}
    doctor = cli("doctor", settings=settings)
    assert doctor.returncode == 1 and "FAIL" in doctor.stdout and "no view at" in doctor.stdout
    assert "[ ok ] topic" in doctor.stdout and "2 partitions" in doctor.stdout


def test_doctor_accepts_an_airflow_worker_without_a_view(settings: Settings) -> None:
    """An Airflow worker without a view is a valid setup: its pulls fetch from the topic."""
    assert cli("topic", "create", settings=settings).returncode == 0
    env = {**settings_env(settings), "AIRFLOW__CORE__XCOM_BACKEND": "xcombus.airflow.XComBusBackend"}
    worker = subprocess.run([sys.executable, "-m", "xcombus", "doctor"], capture_output=True, text=True,
                            env=env, timeout=120, stdin=subprocess.DEVNULL)
    assert worker.returncode == 0, worker.stdout
    assert "[ ok ] airflow" in worker.stdout and "fetch each record from the topic" in worker.stdout


def test_push_materialize_pull_then_doctor_and_ls(settings: Settings) -> None:
    assert cli("topic", "create", "--partitions", "2", settings=settings).returncode == 0
    pushed = cli("push", "--dag-id", "d", "--run-id", "r", "--task-id", "t", "k", '"v"', settings=settings)
    assert pushed.returncode == 0, pushed.stderr
    # The view exists once a materializer made it; the lag check then sees one pending event.
    mat = start_materializer(settings)
    try:
        pulled = cli("pull", "--dag-id", "d", "--run-id", "r", "--task-id", "t", "--key", "k", settings=settings)
        assert pulled.returncode == 0 and json.loads(pulled.stdout) == "v"
        healthy = cli("doctor", settings=settings)
        assert healthy.returncode == 0, healthy.stdout
        assert "a materializer is attached" in healthy.stdout and "up to date" in healthy.stdout
    finally:
        stop_process(mat)
    listed = cli("ls", "--json", "--dag-id", "d", settings=settings)
    assert [json.loads(line)["value"] for line in listed.stdout.splitlines()] == ["v"]
    table = cli("ls", settings=settings)
    assert table.returncode == 0 and "k" in table.stdout


def test_cli_reports_bad_input_clearly(settings: Settings) -> None:
    bad_json = cli("push", "--dag-id", "d", "--run-id", "r", "--task-id", "t", "k", "{not json", settings=settings)
    assert bad_json.returncode == 2 and "not valid JSON" in bad_json.stderr
    bad_id = cli("push", "--dag-id", "d/../x", "--run-id", "r", "--task-id", "t", "k", "1", settings=settings)
    assert bad_id.returncode == 1 and "dag_id" in bad_id.stderr
