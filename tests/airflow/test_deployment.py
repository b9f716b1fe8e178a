"""A real Airflow 3.3 deployment for a bounded time: api-server, scheduler (LocalExecutor) and
dag-processor on loopback, with xcombus as the XCom backend and a materializer beside it.

``airflow dags test`` runs tasks in its own process; here each task runs in the process the
supervisor forks, and talks to the API server over HTTP, as in production.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.airflow.support import references, tail
from tests.airflow_env import AirflowEnv, airflow_env
from tests.helpers import DrainedPopen
from xcombus import Settings
from xcombus.audit import history

# The first test of a session may build an Airflow environment (pip, ~1-3 min) first.
pytestmark = [pytest.mark.airflow, pytest.mark.integration, pytest.mark.timeout(1500)]

DAG = "xcombus_smoke"
BOUND = 420  # seconds for the whole deployment: start, parse, run, succeed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Deployment:
    """The three Airflow services, each in its own process group, stopped together."""

    def __init__(self, af: AirflowEnv, env: dict[str, str]) -> None:
        self.af, self.env = af, env
        self.procs: dict[str, DrainedPopen] = {}

    def start(self, name: str, *args: str) -> None:
        self.procs[name] = DrainedPopen([str(self.af.venv / "bin" / "airflow"), *args], env=self.env,
                                        cwd=self.af.home, stdin=subprocess.DEVNULL,
                                        start_new_session=True)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"airflow {name} exited:\n{tail(proc.output())}"

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{tail(proc.output(), 3000)}" for name, proc in self.procs.items())

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


@pytest.fixture
def airflow3(tmp_path_factory: pytest.TempPathFactory) -> AirflowEnv:
    return airflow_env("3.3.2", tmp_path_factory.mktemp("airflow-deployment"))


@pytest.fixture
def deployment(airflow3: AirflowEnv, topic: Settings, materializer: DrainedPopen) -> Iterator[Deployment]:
    port = _free_port()
    env = airflow3.env(topic,
                       AIRFLOW__CORE__EXECUTOR="LocalExecutor",
                       AIRFLOW__CORE__PARALLELISM="4",
                       AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
                       AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
                       AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
                       AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="1",
                       AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5")
    dep = Deployment(airflow3, env)
    dep.port = port  # type: ignore[attr-defined]
    try:
        dep.start("api-server", "api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1")
        dep.start("scheduler", "scheduler")
        dep.start("dag-processor", "dag-processor")
        yield dep
    finally:
        dep.stop()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def _wait(what: str, dep: Deployment, deadline: float, check: object) -> None:
    while True:
        dep.check_alive()
        if check():  # type: ignore[operator]
            return
        assert time.monotonic() < deadline, f"{what} did not happen in time:\n{dep.logs()}"
        time.sleep(1)


def test_a_real_deployment_runs_a_dag_through_xcombus(deployment: Deployment, airflow3: AirflowEnv,
                                                      topic: Settings) -> None:
    dep, af = deployment, airflow3
    base = f"http://127.0.0.1:{dep.port}"  # type: ignore[attr-defined]
    deadline = time.monotonic() + BOUND
    _wait("the API server's health", dep, deadline,
          lambda: _get(f"{base}/api/v2/monitor/health")[0] == 200)

    def parsed() -> bool:
        with sqlite3.connect(af.db) as db:
            return db.execute("SELECT count(*) FROM dag WHERE dag_id=?", (DAG,)).fetchone()[0] > 0

    _wait("the DAG's parsing", dep, deadline, parsed)
    for args in (("dags", "unpause", DAG), ("dags", "trigger", DAG)):
        done = af.run(*args, env=dep.env, timeout=120)
        assert done.returncode == 0, tail(done.stdout + done.stderr)

    def finished() -> bool:
        with sqlite3.connect(af.db) as db:
            row = db.execute("SELECT state FROM dag_run WHERE dag_id=? ORDER BY id DESC LIMIT 1",
                             (DAG,)).fetchone()
        assert row is None or row[0] != "failed", f"the run failed:\n{dep.logs()}"
        return row is not None and row[0] == "success"

    _wait("the run's success", dep, deadline, finished)
    with sqlite3.connect(af.db) as db:
        run_id = db.execute("SELECT run_id FROM dag_run WHERE dag_id=? ORDER BY id DESC LIMIT 1",
                            (DAG,)).fetchone()[0]
    refs = references(af, DAG, run_id)
    assert refs[("total", -1, "return_value")].preview == "30"
    assert refs[("flaky", -1, "return_value")].try_number == 2
    assert sorted(mi for (t, mi, _k) in refs if t == "double") == [0, 1, 2, 3, 4]
    # The failed try's checkpoint is on the log, then the clear of the retry.
    events = asyncio.run(history(topic, DAG, run_id, "flaky", "checkpoint"))
    assert [(e.kind, e.try_number) for e in events] == [("push", 1), ("clear", 2)]
    assert events[0].value == "job-123"

    # What Airflow's UI and REST API show: the reference with its preview, not the value.
    status, body = _get(f"{base}/api/v2/dags/{DAG}/dagRuns/{run_id}/taskInstances/total/"
                        "xcomEntries/return_value?deserialize=true")
    assert status == 200, body[:500]
    shown = json.loads(body)["value"]
    shown = json.loads(shown) if isinstance(shown, str) else shown
    assert shown["xcombus_ref"] == 1 and shown["preview"] == "30" and shown["type"] == "int", shown
    print(f"deployment: run {run_id} succeeded; {len(refs)} references in Airflow's table; "
          f"{Path(topic.view_path).name} kept by the materializer")
