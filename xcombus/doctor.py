"""``xcombus doctor``: check, in the current environment, everything a component needs.

Each check says what it found and, when something is wrong, what to do. It creates
nothing: not the topic, not the view.
"""

from __future__ import annotations

import fcntl
import os
from typing import NamedTuple

from .backends import load_backend
from .consistency import EndOffsets
from .errors import XComBusError
from .settings import Settings
from .topic import describe_topic
from .view import ViewReader

__all__ = ["Check", "run_checks"]


class Check(NamedTuple):
    """One line of the report."""

    name: str
    ok: bool
    detail: str


def _materializer_running(view_path: str) -> bool:
    """True when some process holds the view's write lock (a materializer is attached)."""
    lock = view_path + ".lock"
    if not os.path.exists(lock):
        return False
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


async def run_checks(settings: Settings) -> list[Check]:
    """Run every check; never raises for what it checks, only reports."""
    checks: list[Check] = []
    try:
        backend = load_backend(settings)
        checks.append(Check("backend", True, f"{settings.xcom_backend} (codec {backend.codec})"))
    except XComBusError as exc:
        checks.append(Check("backend", False, str(exc)))

    info = None
    try:
        info = await describe_topic(settings)
        checks.append(Check("broker", True, f"{settings.bootstrap_servers} answered"))
    except XComBusError as exc:
        checks.append(Check("broker", False, str(exc)))
    if info is None and checks[-1].ok:
        checks.append(Check("topic", False, f"topic {settings.topic!r} does not exist: run "
                            "'xcombus topic create' (or start any producer or materializer)"))
    elif info is not None:
        policy = info.configs.get("cleanup.policy", "?")
        retention = info.configs.get("retention.ms", "?")
        ok = "compact" not in policy and info.leaders_ready
        detail = (f"{info.name}: {info.partitions} partitions, cleanup.policy={policy}, "
                  f"retention.ms={retention}")
        if "compact" in policy:
            detail += " - compaction drops XComs: use cleanup.policy=delete"
        elif not info.leaders_ready:
            detail += " - some partitions have no leader"
        checks.append(Check("topic", ok, detail))

    airflow = "xcombus.airflow" in os.environ.get("AIRFLOW__CORE__XCOM_BACKEND", "")
    if airflow:
        checks.append(Check("airflow", True, "AIRFLOW__CORE__XCOM_BACKEND names xcombus's backend: "
                            "tasks here push to the topic above"))
    path = settings.view_path
    if not os.path.exists(path):
        if airflow:  # a valid setup: an ephemeral worker reads its records from Kafka
            checks.append(Check("view", True, f"no view at {os.path.abspath(path)}: Airflow "
                                "pulls on this host fetch each record from the topic"))
        else:
            checks.append(Check("view", False, f"no view at {os.path.abspath(path)}: start the "
                                "materializer (xcombus materialize) or check XCOMBUS_VIEW_PATH"))
        return checks
    try:
        reader = ViewReader(path)
        try:
            offsets = reader.offsets()
            dead = len(reader.dead_letters(limit=1_000_000))
        finally:
            reader.close()
    except XComBusError as exc:
        checks.append(Check("view", False, str(exc)))
        return checks
    running = _materializer_running(path)
    checks.append(Check("view", True, f"{os.path.abspath(path)} opens; "
                        f"{'a materializer is attached' if running else 'no materializer attached'}"
                        f"; {dead} dead letter(s)"))
    if info is not None:
        end_offsets = EndOffsets(settings)
        try:
            ends = await end_offsets.get(range(info.partitions), settings.connect_timeout)
            lag = {p: e - offsets.get(p, 0) for p, e in ends.items() if e > offsets.get(p, 0)}
            checks.append(Check("lag", not lag or running,
                                "the view is up to date" if not lag else
                                f"{sum(lag.values())} event(s) not yet applied "
                                f"(partition: lag {dict(sorted(lag.items()))})"
                                + ("" if running else " and no materializer is running")))
        except XComBusError as exc:
            checks.append(Check("lag", False, str(exc)))
        finally:
            await end_offsets.aclose()
    return checks
