"""Shared fixtures. The broker is real: started once per session with ``xcombus broker
start`` (or taken from XCOMBUS_BOOTSTRAP_SERVERS) and stopped at the end.

Markers say what a test needs and follow its directory: ``unit`` (tests/unit and
tests/deploy, no broker),
``integration`` (tests/integration, the session broker), ``faults`` (tests/faults, brokers
and clusters of their own, long scenarios), ``airflow`` (tests/airflow). ``-m integration``
does not select the fault scenarios.

A developer's own XCOMBUS_* settings never reach the code under test: they are read here
once (the harness's own knobs) and removed from the environment for the whole session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from tests.helpers import cli, make_settings
from xcombus import Settings

# Property tests check what they generate, not how fast: on a loaded 2-core machine (the
# broker, a materializer and Airflow share it) a per-example deadline only makes them flaky.
# Registered here, at the root, so it covers property tests in every directory.
hypothesis_settings.register_profile(
    "xcombus", deadline=None, suppress_health_check=[HealthCheck.too_slow],
    derandomize=bool(os.environ.get("CI")))
hypothesis_settings.load_profile("xcombus")

# The harness's own knobs, read before the session strips XCOMBUS_* from the environment.
TEST_BROKER_PORT = int(os.environ.get("XCOMBUS_TEST_BROKER_PORT", "19092"))
EXTERNAL_BROKER = os.environ.get("XCOMBUS_BOOTSTRAP_SERVERS")

# tests/<directory> -> the marker of what its tests need (deploy files are checked statically).
_MARKERS = {"unit": "unit", "deploy": "unit", "integration": "integration", "faults": "faults",
            "airflow": "airflow"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test by its directory (tests/<dir>/...)."""
    root = Path(__file__).resolve().parent
    for item in items:
        try:
            directory = item.path.resolve().relative_to(root).parts[0]
        except ValueError:
            continue
        marker = _MARKERS.get(directory)
        if marker is not None:
            item.add_marker(marker)


@pytest.fixture(scope="session", autouse=True)
def no_developer_settings() -> Iterator[None]:
    """Remove every XCOMBUS_* variable from the environment for the session (so neither the
    code under test nor any child process sees a developer's own settings); restore after."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("XCOMBUS_")}
    for k in saved:
        del os.environ[k]
    try:
        yield
    finally:
        os.environ.update(saved)


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a real Apache Kafka broker for the whole session."""
    if EXTERNAL_BROKER:
        yield EXTERNAL_BROKER
        return
    home = tmp_path_factory.mktemp("broker")
    args = ("--port", str(TEST_BROKER_PORT), "--home", str(home))
    started = cli("broker", "start", *args, timeout=600)
    if started.returncode != 0:
        pytest.fail(f"could not start the test broker:\n{started.stdout}\n{started.stderr}")
    try:
        yield f"127.0.0.1:{TEST_BROKER_PORT}"
    finally:
        cli("broker", "stop", *args, timeout=120)


@pytest.fixture
def settings(kafka: str, tmp_path: Path) -> Settings:
    """Settings for one test: its own topic and view file, so tests never see each other."""
    return make_settings(kafka, tmp_path)
