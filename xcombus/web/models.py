"""The HTTP API's response bodies: msgspec Structs, encoded natively by Litestar.

Field names follow Airflow's stable REST API (``/api/v1``): an XCom entry carries
``dag_id, dag_run_id, task_id, map_index, key, timestamp, logical_date`` and ``value``;
collections carry the page under a named list and the unpaged count as ``total_entries``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

__all__ = [
    "DagCollection",
    "DagItem",
    "DagRunCollection",
    "DagRunItem",
    "Health",
    "HistoryEvent",
    "LogPosition",
    "Operation",
    "Problem",
    "TaskInstanceCollection",
    "TaskInstanceItem",
    "ViewHealth",
    "XComCollection",
    "XComEntry",
    "XComHistory",
]


class Problem(msgspec.Struct, kw_only=True):
    """An error, in the RFC 7807 "problem" shape Airflow's API answers with."""

    type: str
    title: str
    status: int
    detail: str


class XComEntry(msgspec.Struct, kw_only=True):
    """One XCom. In a collection ``value`` is the light form; for one entry, the asked form."""

    dag_id: str
    dag_run_id: str
    task_id: str
    map_index: int
    key: str
    timestamp: datetime
    logical_date: datetime | None
    value: Any


class XComCollection(msgspec.Struct, kw_only=True):
    """A page of XCom entries and how many match in all."""

    xcom_entries: list[XComEntry]
    total_entries: int


#: What a history event does (a fenced one: would have done).
Operation = Literal["push", "clear", "set", "delete"]


class LogPosition(msgspec.Struct, kw_only=True):
    """Where an event is on the topic."""

    partition: int
    offset: int


class HistoryEvent(msgspec.Struct, kw_only=True):
    """One event of an XCom's history, as the view took it.

    ``kind``: ``push`` (a task's value), ``clear`` (of its task instance, every XCom),
    ``override`` (a manual set or delete, with ``actor`` and ``reason``), ``fenced`` (a push
    or clear of an older try than its task instance's current one: kept on the topic, never
    applied). ``operation`` says what the event does (or, fenced, would have done).
    """

    kind: Literal["push", "clear", "override", "fenced"]
    #: push or clear (pushes and clears, fenced or not); set or delete (overrides).
    operation: Operation
    partition: int
    offset: int
    timestamp: datetime | None
    logical_date: datetime | None
    producer: str | None
    #: The try that wrote it (pushes, clears, fenced events); for an override, its task
    #: instance's current try then.
    try_number: int | None
    codec: str | None
    #: Who made an override (null for the other kinds).
    actor: str | None
    #: Why an override was made (null for the other kinds).
    reason: str | None
    #: The version an override replaced, when its writer knew it; else null.
    replaces: LogPosition | None
    #: The value's light form (as typed JSON); null for a clear and a delete.
    value: Any


class XComHistory(msgspec.Struct, kw_only=True):
    """Every version of one XCom (pushes, overrides, fenced pushes) and the clears of its
    task instance in between, in log order."""

    dag_id: str
    dag_run_id: str
    task_id: str
    map_index: int
    key: str
    events: list[HistoryEvent]
    total_entries: int


class DagItem(msgspec.Struct, kw_only=True):
    """A DAG that has XComs in the view."""

    dag_id: str
    runs: int
    xcoms: int


class DagCollection(msgspec.Struct, kw_only=True):
    """A page of DAGs, with the total count (Airflow's collection shape)."""

    dags: list[DagItem]
    total_entries: int


class DagRunItem(msgspec.Struct, kw_only=True):
    """A run of a DAG that has XComs in the view."""

    dag_run_id: str
    logical_date: datetime | None
    xcoms: int
    last_push: datetime


class DagRunCollection(msgspec.Struct, kw_only=True):
    """A page of DAG runs, with the total count (Airflow's collection shape)."""

    dag_runs: list[DagRunItem]
    total_entries: int


class TaskInstanceItem(msgspec.Struct, kw_only=True):
    """A task instance of a run that has XComs in the view."""

    task_id: str
    map_index: int
    xcoms: int
    last_push: datetime


class TaskInstanceCollection(msgspec.Struct, kw_only=True):
    """A page of task instances, with the total count (Airflow's collection shape)."""

    task_instances: list[TaskInstanceItem]
    total_entries: int


class ViewHealth(msgspec.Struct, kw_only=True):
    """The state of the SQLite view this server reads."""

    status: Literal["healthy", "unhealthy"]
    detail: str
    applied_events: int | None = None


class Health(msgspec.Struct, kw_only=True):
    """Liveness of the server and readiness of its view (always answered with 200, as Airflow)."""

    status: Literal["healthy", "unhealthy"]
    view: ViewHealth
