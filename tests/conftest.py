"""Shared fixtures. The broker is real: started once per session with ``xcombus broker
start`` (or taken from XCOMBUS_BOOTSTRAP_SERVERS) and stopped at the end."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from xcombus import Settings

# Property tests check what they generate, not how fast: on a loaded 2-core machine (the
# broker, a materializer and Airflow share it) a per-example deadline only makes them flaky.
hypothesis_settings.register_profile(
    "xcombus", deadline=None, suppress_health_check=[HealthCheck.too_slow],
    derandomize=bool(os.environ.get("CI")))
hypothesis_settings.load_profile("xcombus")

TEST_BROKER_PORT = int(os.environ.get("XCOMBUS_TEST_BROKER_PORT", "19092"))


def _cli(*args: str, env: dict[str, str] | None = None,
         timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xcombus", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a real Apache Kafka broker for the whole session."""
    external = os.environ.get("XCOMBUS_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    home = tmp_path_factory.mktemp("broker")
    args = ("--port", str(TEST_BROKER_PORT), "--home", str(home))
    started = _cli("broker", "start", *args)
    if started.returncode != 0:
        pytest.fail(f"could not start the test broker:\n{started.stdout}\n{started.stderr}")
    try:
        yield f"127.0.0.1:{TEST_BROKER_PORT}"
    finally:
        _cli("broker", "stop", *args, timeout=120)


@pytest.fixture
def settings(kafka: str, tmp_path: Path) -> Settings:
    """Settings for one test: its own topic and view file, so tests never see each other."""
    return Settings.from_env(
        {},
        bootstrap_servers=kafka,
        topic=f"xcombus.test.{uuid.uuid4().hex[:12]}",
        view_path=str(tmp_path / "view.db"),
        partitions=3,
        connect_timeout=10.0,
        push_timeout=20.0,
        pull_timeout=20.0,
    )
