"""The read-only API under ``/api/v1``, in Airflow's REST shape, over one XComLookup.

View reads are single indexed SQLite queries answered in microseconds, so their handlers
run on the event loop (``sync_to_thread=False``): the one ViewReader is then only ever used
from the loop's thread. A backend that does I/O to deserialize (object storage) runs in a
worker thread with the record already read.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from litestar import Router, get
from litestar.params import Parameter
from litestar.types import Guard

from .._time import from_us
from ..audit import AuditEvent, history
from ..errors import XComNotFoundError
from ..lookup import XComLookup
from ..records import XComRecord
from ..settings import Settings
from .models import (
    DagCollection,
    DagItem,
    DagRunCollection,
    DagRunItem,
    HistoryEvent,
    LogPosition,
    Operation,
    TaskInstanceCollection,
    TaskInstanceItem,
    XComCollection,
    XComEntry,
    XComHistory,
)
from .params import (
    KEY_PATTERN,
    MAX_INT,
    MAX_PAGE,
    AnyDagId,
    AnyRunId,
    AnyTaskId,
    DagId,
    KeyPath,
    OneMapIndex,
    RunId,
    TaskId,
    check_filters,
    check_one,
    check_run,
)
from .problems import problem_responses
from .render import as_json, as_text, light_value

__all__ = ["API_PREFIX", "api_router"]

API_PREFIX = "/api/v1"
_TI = "/dags/{dag_id:str}/dagRuns/{dag_run_id:str}/taskInstances/{task_id:str}"
_TAGS = ["XCom"]
_BROWSE = ["Browse"]


def _entry(record: XComRecord, value: Any) -> XComEntry:
    return XComEntry(dag_id=record.dag_id, dag_run_id=record.run_id, task_id=record.task_id,
                     map_index=record.map_index, key=record.key,
                     timestamp=from_us(record.timestamp),
                     logical_date=from_us(record.logical_date), value=value)


def _operation(event: AuditEvent) -> Operation:
    """What an event does: an override without a codec deletes, a fenced event without a
    key is a clear (of an older try)."""
    if event.kind == "override":
        return "set" if event.codec is not None else "delete"
    if event.kind == "fenced":
        return "push" if event.key is not None else "clear"
    return "clear" if event.kind == "clear" else "push"


def _history_event(event: AuditEvent) -> HistoryEvent:
    operation = _operation(event)
    replaces = None if event.replaces is None else LogPosition(partition=event.replaces[0],
                                                               offset=event.replaces[1])
    return HistoryEvent(kind=event.kind, operation=operation,  # type: ignore[arg-type]
                        partition=event.partition, offset=event.offset, timestamp=event.timestamp,
                        logical_date=event.logical_date, producer=event.producer,
                        try_number=event.try_number, codec=event.codec,
                        actor=event.actor, reason=event.reason, replaces=replaces,
                        value=None if operation in ("clear", "delete") else as_json(event.value))


def api_router(settings: Settings, lookup: XComLookup, guards: list[Guard],
               security: list[dict[str, list[str]]] | None) -> Router:
    """The ``/api/v1`` router: every handler reads ``lookup`` (and ``history`` the topic)."""
    backend = lookup.backend

    @get(f"{_TI}/xcomEntries", sync_to_thread=False, tags=_TAGS, operation_id="get_xcom_entries",
         summary="List XCom entries", responses=problem_responses(400, 401, 503))
    def list_entries(
        dag_id: AnyDagId, dag_run_id: AnyRunId, task_id: AnyTaskId,
        map_index: Annotated[int | None, Parameter(
            ge=-1, le=MAX_INT, description="Only this map index (default: every map index).")] = None,
        xcom_key: Annotated[str | None, Parameter(
            description="Only this XCom key.", schema_extra={"pattern": KEY_PATTERN})] = None,
        limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE, description="Page size.")] = 100,
        offset: Annotated[int, Parameter(ge=0, le=MAX_INT, description="Entries to skip.")] = 0,
    ) -> XComCollection:
        """XComs of the matching task instances, ordered by dag, run, task, map index and key,
        with their light values (the backend's ``orm_deserialize_value``, never remote payloads)."""
        dag, run, task = check_filters(dag_id, dag_run_id, task_id, xcom_key)
        filters: dict[str, Any] = dict(dag_id=dag, run_id=run, task_id=task, key=xcom_key,
                                       map_index=map_index)
        records = lookup.reader.entries(**filters, limit=limit, offset=offset)
        return XComCollection(xcom_entries=[_entry(r, light_value(backend, r)) for r in records],
                              total_entries=lookup.count(**filters))

    @get(f"{_TI}/xcomEntries/{{xcom_key:str}}", tags=_TAGS, operation_id="get_xcom_entry",
         summary="Get an XCom entry", responses=problem_responses(400, 401, 404, 422, 503))
    async def get_entry(
        dag_id: DagId, dag_run_id: RunId, task_id: TaskId, xcom_key: KeyPath,
        map_index: OneMapIndex = -1,
        deserialize: Annotated[bool, Parameter(description=(
            "false: the light form (the backend's orm_deserialize_value, as Airflow 2); "
            "true: the full value (deserialize_value)."))] = False,
        stringify: Annotated[bool, Parameter(description=(
            "true: the value as a string (str(value), as Airflow 2); false: as JSON "
            "(typed JSON for non-JSON types)."))] = True,
    ) -> XComEntry:
        """One XCom, its value in the asked form."""
        ti = check_one(dag_id, dag_run_id, task_id, xcom_key, map_index)
        record = lookup.reader.get(ti.dag_id, ti.run_id, ti.task_id, ti.map_index, xcom_key)
        if record is None:
            raise XComNotFoundError(
                f"XCom entry not found: key {xcom_key!r} of {ti.dag_id}/{ti.run_id}/{ti.task_id} "
                f"at map_index {ti.map_index}")
        read = backend.deserialize_value if deserialize else backend.orm_deserialize_value
        value = await asyncio.to_thread(read, record) if backend.does_io else read(record)
        return _entry(record, as_text(value) if stringify else as_json(value))

    @get(f"{_TI}/xcomEntries/{{xcom_key:str}}/history", tags=_TAGS, operation_id="get_xcom_history",
         summary="Get an XCom's history",
         responses=problem_responses(400, 401, 404, 503, 504))
    async def get_history(
        dag_id: DagId, dag_run_id: RunId, task_id: TaskId, xcom_key: KeyPath,
        map_index: OneMapIndex = -1,
    ) -> XComHistory:
        """Every version of this XCom (pushes, overrides, fenced pushes of older tries) and
        every clear of its task instance, in log order, each as the view took it, with light
        values: the view's version index says where they are, the topic (the audit log)
        holds them."""
        ti = check_one(dag_id, dag_run_id, task_id, xcom_key, map_index)
        events = await history(settings, *ti[:3], xcom_key, ti.map_index, backend=backend)
        if not any(e.key is not None for e in events):  # clears alone are no version of it
            raise XComNotFoundError(
                f"no version of XCom {xcom_key!r} of {ti.dag_id}/{ti.run_id}/{ti.task_id} at map_index "
                f"{ti.map_index} on topic {settings.topic!r} (no push and no override)")
        items = [_history_event(e) for e in events]
        return XComHistory(dag_id=ti.dag_id, dag_run_id=ti.run_id, task_id=ti.task_id,
                           map_index=ti.map_index, key=xcom_key, events=items, total_entries=len(items))

    @get("/dags", sync_to_thread=False, tags=_BROWSE, operation_id="get_dags",
         summary="List DAGs with XComs", responses=problem_responses(401, 503))
    def list_dags() -> DagCollection:
        """Every DAG that has XComs in the view, with its numbers of runs and XComs."""
        dags = [DagItem(dag_id=d.dag_id, runs=d.runs, xcoms=d.xcoms) for d in lookup.dags()]
        return DagCollection(dags=dags, total_entries=len(dags))

    @get("/dags/{dag_id:str}/dagRuns", sync_to_thread=False, tags=_BROWSE, operation_id="get_dag_runs",
         summary="List a DAG's runs with XComs", responses=problem_responses(400, 401, 503))
    def list_runs(dag_id: DagId) -> DagRunCollection:
        """The runs of a DAG that have XComs, newest first (by logical date, then last push)."""
        check_run(dag_id)
        runs = [DagRunItem(dag_run_id=r.run_id, logical_date=r.logical_date, xcoms=r.xcoms,
                           last_push=r.last_push) for r in lookup.runs(dag_id)]
        return DagRunCollection(dag_runs=runs, total_entries=len(runs))

    @get("/dags/{dag_id:str}/dagRuns/{dag_run_id:str}/taskInstances", sync_to_thread=False, tags=_BROWSE,
         operation_id="get_task_instances", summary="List a run's task instances with XComs",
         responses=problem_responses(400, 401, 503))
    def list_task_instances(dag_id: DagId, dag_run_id: RunId) -> TaskInstanceCollection:
        """The task instances of a run that have XComs, by task id and map index."""
        check_run(dag_id, dag_run_id)
        tis = [TaskInstanceItem(task_id=t.task_id, map_index=t.map_index, xcoms=t.xcoms,
                                last_push=t.last_push) for t in lookup.task_instances(dag_id, dag_run_id)]
        return TaskInstanceCollection(task_instances=tis, total_entries=len(tis))

    return Router(API_PREFIX, route_handlers=[list_entries, get_entry, get_history, list_dags, list_runs,
                                              list_task_instances], guards=guards, security=security)
