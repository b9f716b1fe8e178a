"""Bodies of the ``/api/v2`` API and ``/auth/token``: Airflow 3.3's models, field for field.

Responses keep Airflow's field order (``key, timestamp, logical_date, map_index, task_id,
dag_id, run_id, dag_display_name, task_display_name, run_after`` and then ``value``) and
its names, so the official client (``apache-airflow-client`` 3.3) parses them unchanged.
Request bodies are strict as Airflow's: an unknown field is a 422. ``reason`` on the write
bodies is xcombus's one addition (the override's reason; the client never sends it).
The ``xcombus`` extension bodies (history) come last.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

import msgspec

from ..events import MAX_REASON_LEN

__all__ = [
    "HTTPExceptionResponse",
    "HTTPValidationError",
    "LoginBody",
    "LoginResponse",
    "ValidationError",
    "XComCollectionResponse",
    "XComCreateBody",
    "XComHistoryResponse",
    "XComResponse",
    "XComResponseNative",
    "XComUpdateBody",
    "XComVersion",
]


#: What a key may be (an XCom key is 1-512 printable characters; the server also checks
#: Unicode classes a regex cannot name), a reason (a printable line with a non-blank
#: character), and a map index (32-bit, -1 for unmapped): documented, and checked on decoding.
_PRINTABLE: Final = r"[^\x00-\x1f\x7f-\x9f]"
Key = Annotated[str, msgspec.Meta(pattern=f"^{_PRINTABLE}{{1,512}}$")]
_NONBLANK: Final = r"[^\s\x00-\x1f\x7f-\x9f]"
Reason = Annotated[str, msgspec.Meta(max_length=MAX_REASON_LEN,
                                     pattern=f"^{_PRINTABLE}*{_NONBLANK}{_PRINTABLE}*$")]
MapIndex = Annotated[int, msgspec.Meta(ge=-1, le=2**31 - 1)]


class XComResponse(msgspec.Struct, kw_only=True):
    """An XCom in a listing: no value (Airflow's ``XComResponse``)."""

    key: str
    timestamp: datetime
    #: The run's logical date (null for a run without one).
    logical_date: datetime | None
    map_index: int
    task_id: str
    dag_id: str
    run_id: str
    #: xcombus knows no display names: the ids.
    dag_display_name: str
    task_display_name: str
    #: The run's logical date, else the time of its earliest XCom in the view (docs/http.md).
    run_after: datetime


class XComResponseNative(XComResponse, kw_only=True):
    """One XCom with its value as JSON."""

    value: Any


class XComCollectionResponse(msgspec.Struct, kw_only=True):
    """A page of XComs and how many match in all."""

    xcom_entries: list[XComResponse]
    total_entries: int


class XComCreateBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A new XCom: its key, its value (any JSON, null included) and map index."""

    key: Key
    value: Any
    map_index: MapIndex = -1
    #: xcombus: why (the override's reason in history); else the X-Xcombus-Reason header.
    reason: Reason | None = None


class XComUpdateBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A new value for an existing XCom (its map index is in the body, as in Airflow)."""

    value: Any
    map_index: MapIndex = -1
    #: xcombus: why (the override's reason in history); else the X-Xcombus-Reason header.
    reason: Reason | None = None


class HTTPExceptionResponse(msgspec.Struct, kw_only=True):
    """An error: what went wrong and, where it helps, what to do."""

    detail: str | dict[str, Any]


class ValidationError(msgspec.Struct, kw_only=True):
    """One invalid input, as FastAPI reports it (``ctx`` only where it says more)."""

    type: str
    loc: list[str | int]
    msg: str
    input: Any = None
    ctx: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET


class HTTPValidationError(msgspec.Struct, kw_only=True):
    """Invalid input (422), as FastAPI reports it: one item per problem."""

    detail: list[ValidationError]


class LoginBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Credentials of a configured user (XCOMBUS_API_USERS)."""

    #: Documented with minLength 1; an empty one is Airflow's 400, not a decoding error.
    username: str
    password: str


class LoginResponse(msgspec.Struct, kw_only=True):
    """The bearer token to send as ``Authorization: Bearer <access_token>``."""

    access_token: str


class XComVersion(msgspec.Struct, kw_only=True):
    """One event of an XCom's history: a push, a clear of its task instance, an override
    (a write through this API or ``xcombus set/delete/revert``), or a fenced push."""

    kind: Literal["push", "clear", "override", "fenced"]
    partition: int
    offset: int
    timestamp: datetime | None
    try_number: int | None
    producer: str | None
    #: Who made an override, and why (null for other kinds).
    actor: str | None
    reason: str | None
    #: ``[partition, offset]`` of the version an override replaced, when known.
    replaces: list[int] | None
    #: The value's light form as JSON; null for a clear and for an override that deletes.
    value: Any


class XComHistoryResponse(msgspec.Struct, kw_only=True):
    """Every version of one XCom, in log order."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    key: str
    versions: list[XComVersion]
    total_entries: int
