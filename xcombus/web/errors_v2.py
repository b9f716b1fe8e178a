"""Errors of ``/api/v2`` and ``/auth`` in Airflow 3's shapes, never a traceback.

Every error is ``{"detail": "..."}`` (``application/json``) with Airflow's status codes;
invalid input is FastAPI's 422 list, ``{"detail": [{"type", "loc", "msg", "input", "ctx"}]}``.
:func:`by_path` routes the app's exceptions here for those paths and to the ``/api/v1``
problem handlers (:mod:`xcombus.web.problems`) everywhere else.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any, Final

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import ExceptionHandlersMap

from ..errors import XComBusError
from .models_v2 import HTTPExceptionResponse, HTTPValidationError, ValidationError
from .problems import status_of

__all__ = ["V2_PREFIXES", "RequestInvalid", "by_path", "detail", "v2_responses"]

log = logging.getLogger("xcombus.web")

#: Paths whose errors take Airflow 3's shapes.
V2_PREFIXES: Final = ("/api/v2", "/auth/")

_DESCRIPTIONS: Final = {
    400: "Bad Request",
    401: "Unauthorized: a token is configured and the request carried none.",
    403: "Forbidden: an unknown token, a read token on a write, or a server without write tokens.",
    404: "Not Found",
    409: "Conflict: the XCom exists already (POST never overwrites).",
    422: "Validation Error (FastAPI's list), or a stored value this server cannot deserialize.",
    503: "The view is not there yet (start the materializer) or the Kafka broker cannot be reached.",
    504: "The view did not apply the write (or the log read) in time.",
}


class RequestInvalid(Exception):
    """Invalid input found by a handler: answered as FastAPI's 422 list."""

    def __init__(self, *items: ValidationError) -> None:
        super().__init__("; ".join(i.msg for i in items))
        self.items = list(items)


def detail(status: int, text: str | dict[str, Any], headers: dict[str, str] | None = None) -> Response[Any]:
    """An Airflow 3 error response."""
    return Response(HTTPExceptionResponse(detail=text), status_code=status, headers=headers,
                    media_type="application/json")


def v2_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI documentation of an operation's error responses."""
    return {status: ResponseSpec(
        data_container=HTTPValidationError if status == 422 else HTTPExceptionResponse,
        description=_DESCRIPTIONS[status], generate_examples=False) for status in statuses}


# msgspec's messages, as Litestar reports them, to pydantic's error types and messages.
_Explained = tuple[str, str, dict[str, Any] | None]
_PATTERNS: Final[list[tuple[re.Pattern[str], Callable[[re.Match[str]], _Explained]]]] = [
    (re.compile(r"Object missing required field `(?P<f>[^`]+)`"),
     lambda m: ("missing", "Field required", None)),
    (re.compile(r"Object contains unknown field `(?P<f>[^`]+)`"),
     lambda m: ("extra_forbidden", "Extra inputs are not permitted", None)),
    (re.compile(r"Expected `int` >= (?P<n>-?\d+)"),
     lambda m: ("greater_than_equal", f"Input should be greater than or equal to {m['n']}",
                {"ge": int(m["n"])})),
    (re.compile(r"Expected `int` <= (?P<n>-?\d+)"),
     lambda m: ("less_than_equal", f"Input should be less than or equal to {m['n']}", {"le": int(m["n"])})),
    (re.compile(r"Expected `int`"),
     lambda m: ("int_parsing", "Input should be a valid integer, unable to parse string as an integer",
                None)),
    (re.compile(r"Expected `bool`"),
     lambda m: ("bool_parsing", "Input should be a valid boolean, unable to interpret input", None)),
    (re.compile(r"Expected `str` matching regex '(?P<p>.*)'"),
     lambda m: ("string_pattern_mismatch", f"String should match pattern '{m['p']}'", {"pattern": m["p"]})),
    (re.compile(r"Expected `str` of length <= (?P<n>\d+)"),
     lambda m: ("string_too_long", f"String should have at most {m['n']} characters",
                {"max_length": int(m["n"])})),
    (re.compile(r"Expected `str` of length >= (?P<n>\d+)"),
     lambda m: ("string_too_short", f"String should have at least {m['n']} characters",
                {"min_length": int(m["n"])})),
    (re.compile(r"Expected `str`"), lambda m: ("string_type", "Input should be a valid string", None)),
    (re.compile(r"Expected `object`"),
     lambda m: ("model_attributes_type",
                "Input should be a valid dictionary or object to extract fields from", None)),
]


def _item(request: Request[Any, Any, Any], raw: dict[str, Any]) -> ValidationError:
    message = str(raw.get("message", "invalid value"))
    source = getattr(raw.get("source"), "value", raw.get("source")) or "body"
    key = str(raw.get("key") or "")
    explained: _Explained = ("value_error", message, None)
    for pattern, explain in _PATTERNS:
        match = pattern.search(message)
        if match:
            explained = explain(match)
            if "f" in match.groupdict():
                key = match["f"]
            break
    kind, msg, ctx = explained
    if source == "body":
        loc: list[str | int] = ["body"] if key in ("", "data") else ["body", key]
        given: Any = None
    else:
        loc = [str(source), key]
        given = request.query_params.get(key) if source == "query" else request.path_params.get(key)
    return ValidationError(type=kind, loc=loc, msg=msg, input=given,
                           ctx=msgspec.UNSET if ctx is None else ctx)


def _validation(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    raw = exc.extra if isinstance(exc.extra, list) else []
    items = [_item(request, r) for r in raw if isinstance(r, dict)]
    if not items:  # a body that is not JSON at all
        items = [ValidationError(type="json_invalid", loc=["body", 0], msg="JSON decode error",
                                 input={}, ctx={"error": str(exc.detail)})]
    return Response(HTTPValidationError(detail=items), status_code=422, media_type="application/json")


def _http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if isinstance(exc, ValidationException) or (exc.status_code == 400 and "JSON is malformed" in exc.detail):
        return _validation(request, exc if isinstance(exc, ValidationException)
                           else ValidationException(detail=exc.detail))
    status = exc.status_code
    if status >= 500:
        log.error("internal error: %r", exc)
        return detail(status, "Internal Server Error: see the server's log")
    text = exc.detail
    if status == 404 and text == "Not Found":
        text = "Not Found: see /openapi.json for the API's paths"
    elif status == 405:
        text = f"Method Not Allowed (allowed: {(exc.headers or {}).get('allow', 'GET')})"
    return detail(status, text, headers=exc.headers)


def _invalid(_: Request[Any, Any, Any], exc: RequestInvalid) -> Response[Any]:
    return Response(HTTPValidationError(detail=exc.items), status_code=422, media_type="application/json")


def _xcom(_: Request[Any, Any, Any], exc: XComBusError) -> Response[Any]:
    status = status_of(exc)
    if status is None:
        return detail(500, f"Internal Server Error: {exc}")
    return detail(status, str(exc))


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unexpected error answering %s %s", request.method, request.url.path)
    return detail(500, "Internal Server Error: see the server's log")


_V2: Final[dict[type[Exception], Callable[..., Response[Any]]]] = {
    HTTPException: _http, RequestInvalid: _invalid, XComBusError: _xcom, Exception: _unexpected}


def _is_v2(request: Request[Any, Any, Any]) -> bool:
    path = request.scope.get("path", "")
    return path == "/api/v2" or path.startswith(V2_PREFIXES)


def by_path(v1: ExceptionHandlersMap) -> ExceptionHandlersMap:
    """The app's handlers: Airflow 3's shapes under :data:`V2_PREFIXES`, ``v1``'s elsewhere."""
    handlers: dict[Any, Any] = {}
    for exc_type in {*v1, *_V2}:
        if not isinstance(exc_type, type):  # status-code handlers: the app has none
            continue
        old, new = v1.get(exc_type) or v1[Exception], _V2.get(exc_type) or _V2[Exception]

        def handle(request: Request[Any, Any, Any], exc: Exception, *, old: Any = old, new: Any = new) -> Any:
            return new(request, exc) if _is_v2(request) else old(request, exc)

        handlers[exc_type] = handle
    return handlers
