"""Airflow 3's REST API v2 for XComs under ``/api/v2``, and xcombus's extensions beside it.

The five operations of Airflow 3.3's ``XComApi`` (list, get, create, update, delete) with
its paths, parameters, defaults, status codes and bodies (research note
airflow-rest-v2-xcom.md; docs/http.md lists what differs and why). Writes are override
events (:mod:`xcombus.web.writes`): actor = the token's principal, reason = the body's
``reason``, else the ``X-Xcombus-Reason`` header, else "<METHOD> via the REST API v2".

Identifiers follow Airflow, which does not validate them: a listing whose dag/run/task id
or key could never be pushed matches nothing (200, empty), and one XCom named by such an
id is a 404, as for any XCom the view does not hold.

Operation ids are Airflow's with ``_v2`` appended (``/api/v1`` has Airflow 2's). Extensions
(tag ``xcombus``), on paths Airflow does not use: a key may contain ``/`` and is
always the rest of the path, so nothing can follow it (``.../xcomEntries/{key}/history``
would be the key ``{key}/history``); the extensions name their kind before the key:

* ``.../taskInstances/{task_id}/xcomHistory/{xcom_key}``: every version of one XCom, with
  kind, try, actor and reason;
* ``.../taskInstances/{task_id}/tries/{try_number}/xcomEntries/{xcom_key}``: what one try
  wrote (beside Airflow's own ``.../taskInstances/{task_id}/tries/{try_number}``).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any, Final, TypeVar
from urllib.parse import unquote

from litestar import HttpMethod, Request, Response, Router, delete, get, patch, post, route
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler
from litestar.params import Body, Parameter
from litestar.types import Guard

from .._time import from_us, to_us
from ..audit import history
from ..errors import XComIdentifierError, XComNotFoundError, XComSerializationError
from ..events import TaskInstanceKey, validate_key, validate_reason
from ..lookup import XComLookup
from ..records import XComRecord
from ..search import DEFAULT_ORDER, ORDER_COLUMNS, XComSearch
from ..settings import Settings
from .errors_v2 import RequestInvalid, v2_responses
from .models_v2 import (
    ValidationError,
    XComCollectionResponse,
    XComCreateBody,
    XComHistoryResponse,
    XComResponse,
    XComResponseNative,
    XComUpdateBody,
    XComVersion,
)
from .render import as_json
from .render_v2 import as_native, as_string, reserved_keys_in
from .tokens import principal_of
from .writes import ApiWriter

__all__ = ["API_V2_PREFIX", "REASON_HEADER", "api_v2_router"]

API_V2_PREFIX: Final = "/api/v2"
#: The header that gives a write's reason when its body has none (DELETE has no body).
#: Percent-encoded UTF-8 is decoded, so a reason may be any printable text.
REASON_HEADER: Final = "X-Xcombus-Reason"
_TI: Final = "/dags/{dag_id:str}/dagRuns/{dag_run_id:str}/taskInstances/{task_id:str}"
_TAGS: Final = ["XCom"]
_EXT: Final = ["xcombus"]
#: Airflow's [api] fallback_page_limit and maximum_page_limit.
DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 100
MAX_ORDER_BY: Final = 10
_INT32: Final = 2**31 - 1
#: Offsets beyond any view (and within SQLite's integers).
_MAX_OFFSET: Final = 2**62
_WILDCARD: Final = "~"
_T = TypeVar("_T")
_EMPTY: Final = XComCollectionResponse(xcom_entries=[], total_entries=0)

_Pattern = Annotated[str | None, Parameter(description=(
    "Case-insensitive substring match (SQL `LIKE '%value%'`: `%` and `_` are wildcards); `|` ORs "
    "terms; `~` matches all."))]
_Prefix = Annotated[str | None, Parameter(description=(
    "Case-sensitive prefix match; trailing non-alphanumeric characters are ignored (`test_` "
    "matches like `test`); `|` ORs terms; `~` matches all."))]
_Moment = Annotated[str | None, Parameter(
    description="An ISO 8601 date-time (`Z`, `+00:00` or `+0000`; without an offset: UTC).",
    schema_extra={"format": "date-time"})]
#: A request body that, as Airflow's, takes no field beyond its own (documented for clients).
_Strict = Annotated[_T, Body(schema_extra={"additionalProperties": False})]
_OneMapIndex = Annotated[int, Parameter(
    ge=-1, description="The map index: -1 for an unmapped task instance.")]


def _options(path: str, allow: str) -> HTTPRouteHandler:
    @route(path, http_method=[HttpMethod.OPTIONS], include_in_schema=False, sync_to_thread=False)
    def options() -> Response[None]:
        return Response(None, status_code=204, headers={"Allow": allow})

    return options


def _invalid(location: str, name: str, given: Any, kind: str, msg: str) -> RequestInvalid:
    return RequestInvalid(ValidationError(type=kind, loc=[location, name], msg=msg, input=given))


def _moment(name: str, value: str | None) -> int | None:
    """A date-time query value as µs; a naive one is UTC (Airflow would fail on it)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return to_us(moment)
    except (ValueError, OverflowError):
        raise _invalid("query", name, value, "datetime_from_date_parsing",
                       "Input should be a valid datetime or date") from None


def _order(values: list[str] | None) -> tuple[tuple[str, bool], ...]:
    """Airflow's SortParam: at most 10, each an allowed name with '-' for descending."""
    if not values:
        return ()
    if len(values) > MAX_ORDER_BY:
        raise _bad_request(f"Ordering with more than {MAX_ORDER_BY} parameters is not allowed. "
                           f"Provided: {values}")
    order = []
    for value in values:
        name = value.lstrip("-")
        if name not in ORDER_COLUMNS:
            raise _bad_request(f"Ordering with '{name}' is disallowed or the attribute does not exist "
                               "on the model")
        order.append((name, value.startswith("-")))
    return tuple(order)


def _bad_request(text: str) -> XComIdentifierError:
    return XComIdentifierError(text)  # answered as 400 {"detail": text}


def _could_exist(*ids: str | None) -> bool:
    """Whether ids (None: a wildcard) could name a task instance that pushed (else nothing matches)."""
    dag_id, run_id, task_id = ids
    try:
        TaskInstanceKey(dag_id or "x", run_id or "x", task_id or "x").validated()
    except XComIdentifierError:
        return False
    return True


def _valid_key(key: str) -> bool:
    try:
        validate_key(key)
    except XComIdentifierError:
        return False
    return True


def _reason(request: Request[Any, Any, Any], given: str | None, method: str) -> str:
    header = request.headers.get(REASON_HEADER)
    reason = given if given is not None else (unquote(header) if header is not None else
                                              f"{method} via the REST API v2")
    try:
        return validate_reason(reason)
    except XComIdentifierError as exc:
        source = "the body's reason" if given is not None else f"the {REASON_HEADER} header"
        raise _bad_request(f"{source} is invalid: {exc}") from None


def api_v2_router(settings: Settings, lookup: XComLookup, writer: ApiWriter, *, read_guards: list[Guard],
                  write_guards: list[Guard], security: list[dict[str, list[str]]] | None) -> Router:
    """The ``/api/v2`` router: reads from ``lookup``'s view, writes through ``writer``."""
    backend = lookup.backend

    def fields(record: XComRecord, logical: int | None, run_after: int) -> dict[str, Any]:
        return dict(key=record.key, timestamp=from_us(record.timestamp), logical_date=from_us(logical),
                    map_index=record.map_index, task_id=record.task_id, dag_id=record.dag_id,
                    run_id=record.run_id, dag_display_name=record.dag_id, task_display_name=record.task_id,
                    run_after=from_us(run_after))

    def find(ti: TaskInstanceKey, key: str) -> tuple[XComRecord, int | None, int] | None:
        rows, _ = lookup.reader.search(XComSearch(dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id,
                                                  key=key, map_index=ti.map_index), limit=1, offset=0)
        return rows[0] if rows else None

    def target(dag_id: str, dag_run_id: str, task_id: str, key: str, map_index: int,
               missing: str) -> TaskInstanceKey:
        """The task instance of one XCom, or XComNotFoundError(missing) when the ids cannot name one."""
        if not -1 <= map_index <= _INT32 or not _could_exist(dag_id, dag_run_id, task_id) \
                or not _valid_key(key):
            raise XComNotFoundError(missing)
        return TaskInstanceKey(dag_id, dag_run_id, task_id, map_index)

    def stored(record: XComRecord) -> Any:
        return as_json(backend.orm_deserialize_value(record))

    @get(f"{_TI}/xcomEntries", sync_to_thread=False, tags=_TAGS, operation_id="get_xcom_entries_v2",
         summary="Get Xcom Entries", guards=read_guards, responses=v2_responses(400, 401, 403, 404, 422, 503))
    def get_xcom_entries(
        dag_id: str, dag_run_id: str, task_id: str,
        xcom_key: str | None = None,
        map_index: Annotated[int | None, Parameter(ge=-1, description="Only this map index.")] = None,
        limit: Annotated[int, Parameter(
            ge=0, description=f"Page size, at most {MAX_LIMIT}.")] = DEFAULT_LIMIT,
        offset: Annotated[int, Parameter(ge=0)] = 0,
        xcom_key_pattern: _Pattern = None,
        xcom_key_prefix_pattern: _Prefix = None,
        dag_display_name_pattern: _Pattern = None,
        dag_display_name_prefix_pattern: _Prefix = None,
        run_id_pattern: _Pattern = None,
        run_id_prefix_pattern: _Prefix = None,
        task_id_pattern: _Pattern = None,
        task_id_prefix_pattern: _Prefix = None,
        map_index_filter: Annotated[int | None, Parameter(description="Only this map index.")] = None,
        logical_date_gte: _Moment = None, logical_date_gt: _Moment = None,
        logical_date_lte: _Moment = None, logical_date_lt: _Moment = None,
        run_after_gte: _Moment = None, run_after_gt: _Moment = None,
        run_after_lte: _Moment = None, run_after_lt: _Moment = None,
        order_by: Annotated[list[str] | None, Parameter(description=(
            "Attributes to order by, multi criteria sort is supported. Prefix with `-` for descending "
            "order. Supported attributes: `key, dag_id, run_id, task_id, map_index, timestamp, run_after`"
        ), schema_extra={"default": list(DEFAULT_ORDER), "maxItems": MAX_ORDER_BY,
                         "items": {"type": "string", "pattern": f"^-*({'|'.join(ORDER_COLUMNS)})$"}})] = None,
    ) -> XComCollectionResponse:
        """Get all XCom entries. `~` as the dag_id, dag_run_id or task_id means any."""
        order = _order(order_by)
        logical = (_moment("logical_date_gte", logical_date_gte), _moment("logical_date_gt", logical_date_gt),
                   _moment("logical_date_lte", logical_date_lte), _moment("logical_date_lt", logical_date_lt))
        run_after = (_moment("run_after_gte", run_after_gte), _moment("run_after_gt", run_after_gt),
                     _moment("run_after_lte", run_after_lte), _moment("run_after_lt", run_after_lt))
        dag, run, task = (None if v == _WILDCARD else v for v in (dag_id, dag_run_id, task_id))
        if not _could_exist(dag, run, task) or (xcom_key is not None and not _valid_key(xcom_key)) \
                or any(m is not None and abs(m) > _INT32 for m in (map_index, map_index_filter)):
            return _EMPTY  # nothing with such ids can be in the view
        if map_index is not None and map_index_filter is not None and map_index != map_index_filter:
            return _EMPTY
        search = XComSearch(
            dag_id=dag, run_id=run, task_id=task, key=xcom_key,
            map_index=map_index if map_index is not None else map_index_filter,
            key_patterns=tuple(p for p in (xcom_key_pattern,) if p is not None),
            dag_patterns=tuple(p for p in (dag_display_name_pattern,) if p is not None),
            run_patterns=tuple(p for p in (run_id_pattern,) if p is not None),
            task_patterns=tuple(p for p in (task_id_pattern,) if p is not None),
            key_prefixes=tuple(p for p in (xcom_key_prefix_pattern,) if p is not None),
            dag_prefixes=tuple(p for p in (dag_display_name_prefix_pattern,) if p is not None),
            run_prefixes=tuple(p for p in (run_id_prefix_pattern,) if p is not None),
            task_prefixes=tuple(p for p in (task_id_prefix_pattern,) if p is not None),
            logical_date=logical, run_after=run_after, order=order)
        rows, total = lookup.reader.search(search, limit=min(limit, MAX_LIMIT),
                                           offset=min(offset, _MAX_OFFSET))
        return XComCollectionResponse(xcom_entries=[XComResponse(**fields(*row)) for row in rows],
                                      total_entries=total)

    @get(f"{_TI}/xcomEntries/{{xcom_key:path}}", tags=_TAGS, operation_id="get_xcom_entry_v2",
         summary="Get Xcom Entry", guards=read_guards, responses=v2_responses(400, 401, 403, 404, 422, 503))
    async def get_xcom_entry(
        dag_id: str, task_id: str, dag_run_id: str, xcom_key: str,
        map_index: _OneMapIndex = -1,
        deserialize: Annotated[bool, Parameter(description=(
            "false: what the view stores, as JSON (typed JSON for non-JSON types); true: the value "
            "itself, made JSON (non-JSON types as their str()))."))] = False,
        stringify: Annotated[bool, Parameter(description=(
            "true: the value as Python's str() of it (null stays null)."))] = False,
    ) -> XComResponseNative:
        """Get an XCom entry. Airflow documents anyOf(XComResponseNative, XComResponseString);
        a string value is valid in both, so this documents XComResponseNative alone (what the
        client always parses into) and `stringify=true` gives a string (or null) value."""
        key = xcom_key[1:]  # the path parameter keeps its leading '/'
        missing = f"XCom entry with key: `{key}` not found"
        ti = target(dag_id, dag_run_id, task_id, key, map_index, missing)
        row = find(ti, key)
        if row is None:
            raise XComNotFoundError(missing)
        record = row[0]
        if deserialize:
            read = backend.deserialize_value
            value = await asyncio.to_thread(read, record) if backend.does_io else read(record)
        else:
            value = stored(record)
        if stringify:
            return XComResponseNative(**fields(*row), value=as_string(value))
        return XComResponseNative(**fields(*row), value=as_native(value))

    def check_value(value: Any) -> None:
        try:
            problem = reserved_keys_in(value)
        except RecursionError:
            problem = "XCom value is nested too deeply"
        if problem:
            raise RequestInvalid(ValidationError(type="value_error", loc=["body", "value"],
                                                 msg=f"Value error, {problem}", input=value))

    async def publish(request: Request[Any, Any, Any], ti: TaskInstanceKey, key: str, value: Any,
                      reason: str) -> None:
        """Set ``key`` inside the write lock's caller, as the request's principal."""
        bus = await writer.bus()
        try:
            await writer.set(bus, ti, key, value, reason=reason, actor=principal_of(request).name)
        except XComSerializationError as exc:
            raise _bad_request(f"Couldn't serialise the XCom with key: `{key}`: {exc}") from None

    def response(ti: TaskInstanceKey, key: str) -> XComResponseNative:
        row = find(ti, key)
        if row is None:  # deleted again between the write and this read
            raise XComNotFoundError(f"XCom entry with key: `{key}` not found")
        return XComResponseNative(**fields(*row), value=as_native(stored(row[0])))

    @post(f"{_TI}/xcomEntries", tags=_TAGS, operation_id="create_xcom_entry_v2", summary="Create Xcom Entry",
          status_code=201, guards=write_guards,
          responses=v2_responses(400, 401, 403, 404, 409, 422, 503, 504))
    async def create_xcom_entry(dag_id: str, task_id: str, dag_run_id: str, data: _Strict[XComCreateBody],
                                request: Request[Any, Any, Any]) -> XComResponseNative:
        """Create an XCom entry: an override event by the token's principal. The DAG run must be
        known to the view (it holds at least one XCom of it), as Airflow 404s on an unknown run."""
        check_value(data.value)
        reason = _reason(request, data.reason, "POST")
        if not _could_exist(dag_id, None, None) or not lookup.reader.entries(dag_id=dag_id, limit=1):
            raise XComNotFoundError(f"The Dag with ID: `{dag_id}` was not found")
        if not _could_exist(dag_id, dag_run_id, None) or not lookup.reader.entries(
                dag_id=dag_id, run_id=dag_run_id, limit=1):
            raise XComNotFoundError(f"Dag Run with ID: `{dag_run_id}` not found for dag: `{dag_id}`")
        if not _could_exist(dag_id, dag_run_id, task_id):
            raise XComNotFoundError(f"Task with ID: `{task_id}` not found in dag: `{dag_id}`")
        if not _valid_key(data.key):
            try:
                validate_key(data.key)
            except XComIdentifierError as exc:
                raise _bad_request(f"Couldn't serialise the XCom with key: `{data.key}`: {exc}") from None
        ti = TaskInstanceKey(dag_id, dag_run_id, task_id, data.map_index)
        async with writer.exclusive(ti):
            if lookup.reader.get(*ti, data.key) is not None:
                raise HTTPException(status_code=409, detail=(
                    f"The XCom with key: `{data.key}` with mentioned task instance already exists."))
            await publish(request, ti, data.key, data.value, reason)
        return response(ti, data.key)

    @patch(f"{_TI}/xcomEntries/{{xcom_key:path}}", tags=_TAGS, operation_id="update_xcom_entry_v2",
           summary="Update Xcom Entry", status_code=200, guards=write_guards,
           responses=v2_responses(400, 401, 403, 404, 422, 503, 504))
    async def update_xcom_entry(dag_id: str, task_id: str, dag_run_id: str, xcom_key: str,
                                data: _Strict[XComUpdateBody],
                                request: Request[Any, Any, Any]) -> XComResponseNative:
        """Update an existing XCom entry (its map index is in the body): an override event."""
        key = xcom_key[1:]
        check_value(data.value)
        reason = _reason(request, data.reason, "PATCH")
        missing = f"The XCom with key: `{key}` with mentioned task instance doesn't exist."
        ti = target(dag_id, dag_run_id, task_id, key, data.map_index, missing)
        async with writer.exclusive(ti):
            if lookup.reader.get(*ti, key) is None:
                raise XComNotFoundError(missing)
            await publish(request, ti, key, data.value, reason)
        return response(ti, key)

    @delete(f"{_TI}/xcomEntries/{{xcom_key:path}}", tags=_TAGS, operation_id="delete_xcom_entry_v2",
            summary="Delete Xcom Entry", guards=write_guards,
            responses=v2_responses(400, 401, 403, 404, 422, 503, 504))
    async def delete_xcom_entry(dag_id: str, task_id: str, dag_run_id: str, xcom_key: str,
                                request: Request[Any, Any, Any], map_index: _OneMapIndex = -1) -> None:
        """Delete an XCom entry: an override event without a value."""
        key = xcom_key[1:]
        reason = _reason(request, None, "DELETE")
        missing = f"The XCom with key: `{key}` with mentioned task instance doesn't exist."
        ti = target(dag_id, dag_run_id, task_id, key, map_index, missing)
        async with writer.exclusive(ti) as bus:
            if lookup.reader.get(*ti, key) is None:
                raise XComNotFoundError(missing)
            await writer.delete(bus, ti, key, reason=reason, actor=principal_of(request).name)

    # -- extensions ----------------------------------------------------------------------
    @get(f"{_TI}/xcomHistory/{{xcom_key:path}}", tags=_EXT, operation_id="xcombus_get_xcom_history",
         summary="Get an XCom's history (xcombus)", guards=read_guards,
         responses=v2_responses(400, 401, 403, 404, 422, 503, 504))
    async def get_xcom_history(dag_id: str, dag_run_id: str, task_id: str, xcom_key: str,
                               map_index: _OneMapIndex = -1) -> XComHistoryResponse:
        """Every version of one XCom in log order: pushes, clears of its task instance,
        overrides (with actor and reason) and fenced pushes, with light values."""
        key = xcom_key[1:]
        missing = f"XCom entry with key: `{key}` has no history"
        ti = target(dag_id, dag_run_id, task_id, key, map_index, missing)
        events = await history(settings, ti.dag_id, ti.run_id, ti.task_id, key, ti.map_index,
                               backend=backend)
        if not any(e.kind != "clear" for e in events):
            raise XComNotFoundError(missing)
        versions = [XComVersion(kind=e.kind, partition=e.partition, offset=e.offset,
                                timestamp=e.timestamp, try_number=e.try_number, producer=e.producer,
                                actor=e.actor, reason=e.reason if e.kind == "override" else None,
                                replaces=list(e.replaces) if e.replaces else None,
                                value=None if e.kind == "clear" else as_json(e.value))
                    for e in events if e.kind != "invalid"]
        return XComHistoryResponse(dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id,
                                   map_index=ti.map_index, key=key, versions=versions,
                                   total_entries=len(versions))

    @get(f"{_TI}/tries/{{try_number:int}}/xcomEntries/{{xcom_key:path}}", tags=_EXT,
         operation_id="xcombus_get_xcom_entry_of_try", summary="Get what one try wrote (xcombus)",
         guards=read_guards, responses=v2_responses(400, 401, 403, 404, 422, 503, 504))
    async def get_xcom_entry_of_try(
        dag_id: str, dag_run_id: str, task_id: str,
        try_number: Annotated[int, Parameter(ge=1, le=_INT32)], xcom_key: str,
        map_index: _OneMapIndex = -1, stringify: bool = False,
    ) -> XComResponseNative:
        """What try `try_number` of the task instance last wrote under the key (a push, or an
        override made while it was the current try), read from the topic also when the view
        no longer shows it (a cleared or fenced try). The value is the value itself, as
        `deserialize=true` shows it."""
        key = xcom_key[1:]
        missing = f"try {try_number} of `{task_id}` wrote no XCom with key: `{key}`"
        ti = target(dag_id, dag_run_id, task_id, key, map_index, missing)
        record = await writer.read_try(ti, key, try_number)
        if record is None:
            raise XComNotFoundError(missing)
        read = backend.deserialize_value
        value = await asyncio.to_thread(read, record) if backend.does_io else read(record)
        current = find(ti, key)
        logical = current[1] if current else record.logical_date
        run_after = current[2] if current else (logical or record.timestamp)
        if stringify:
            return XComResponseNative(**fields(record, logical, run_after), value=as_string(value))
        return XComResponseNative(**fields(record, logical, run_after), value=as_native(value))

    # Each path's OPTIONS first: Litestar's own, made when a path's first handler registers,
    # would answer with that handler's methods only.
    return Router(API_V2_PREFIX, route_handlers=[
        _options(f"{_TI}/xcomEntries", "GET, OPTIONS, POST"),
        _options(f"{_TI}/xcomEntries/{{xcom_key:path}}", "DELETE, GET, OPTIONS, PATCH"),
        get_xcom_entries, get_xcom_entry, create_xcom_entry, update_xcom_entry, delete_xcom_entry,
        get_xcom_history, get_xcom_entry_of_try], security=security)
