"""Fixtures for the tests that run real Apache Airflow with xcombus as its XCom backend."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.airflow_env import PINS, AirflowEnv, airflow_env
from tests.helpers import DrainedPopen, start_materializer
from xcombus import Settings
from xcombus.topic import ensure_topic


@pytest.fixture(scope="session", params=sorted(PINS, reverse=True), ids=lambda v: f"airflow-{v}")
def airflow(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AirflowEnv:
    """A real Airflow of each pinned version, its metadata DB migrated once per session."""
    version: str = request.param
    return airflow_env(version, tmp_path_factory.mktemp(f"airflow-{version}"))


@pytest.fixture
def topic(settings: Settings) -> Settings:
    """The test's settings, with its topic created (task processes never create it)."""
    asyncio.run(ensure_topic(settings))
    return settings


@pytest.fixture
def materializer(topic: Settings) -> Iterator[DrainedPopen]:
    """A materializer keeping the view at ``topic.view_path`` for the whole test."""
    proc = start_materializer(topic)
    try:
        # Pulls use the view only where its file exists: wait for the materializer to make it.
        deadline = time.monotonic() + 60
        while not Path(topic.view_path).exists():
            assert proc.poll() is None, f"the materializer exited:\n{proc.output()[-3000:]}"
            assert time.monotonic() < deadline, "the materializer did not create its view in 60 s"
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
