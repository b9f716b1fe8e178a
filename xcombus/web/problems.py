"""Errors as JSON in Airflow's problem shape (``type, title, status, detail``), never a traceback.

Bad input is a 4xx whose detail says what is wrong; a view that is not there yet or an
unreachable broker is a 503; anything unexpected is a 500 whose detail points at the
server's log (where the traceback goes), not at the code.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any, Final

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import ExceptionHandlersMap

from ..errors import (
    XComBrokerError,
    XComBusError,
    XComIdentifierError,
    XComNotFoundError,
    XComQueryError,
    XComSerializationError,
    XComTimeoutError,
    XComViewError,
)
from .models import Problem

__all__ = ["PROBLEM_JSON", "exception_handlers", "problem", "problem_responses", "status_of"]

log = logging.getLogger("xcombus.web")

PROBLEM_JSON: Final = "application/problem+json"
# Airflow's problem types are links to its error reference, named per status.
_TYPE_BASE: Final = "https://airflow.apache.org/docs/apache-airflow/stable/stable-rest-api-ref.html#section/Errors/"
_TYPE_NAMES: Final = {400: "BadRequest", 401: "Unauthenticated", 403: "PermissionDenied",
                      404: "NotFound", 405: "MethodNotAllowed", 409: "AlreadyExists"}

#: Which status each xcombus error is answered with (the most specific class wins).
_STATUS_OF: Final[list[tuple[type[XComBusError], int]]] = [
    (XComIdentifierError, 400),
    (XComQueryError, 400),
    (XComNotFoundError, 404),
    (XComSerializationError, 422),
    (XComViewError, 503),
    (XComBrokerError, 503),
    (XComTimeoutError, 504),
]

_DESCRIPTIONS: Final = {
    400: "A parameter is invalid; the detail names it and says what is allowed.",
    401: "The server has an API token and the request did not carry it as `Authorization: Bearer <token>`.",
    404: "Nothing matches (the detail says what was looked for).",
    422: "The stored value cannot be deserialized by this server's XCom backend configuration.",
    503: "The view is not there yet (start the materializer) or the Kafka broker cannot be reached.",
    504: "Reading the topic took longer than the configured timeouts.",
}


def problem(status: int, detail: str, *, title: str | None = None,
            headers: dict[str, str] | None = None) -> Response[Problem]:
    """A problem response."""
    body = Problem(type=_TYPE_BASE + _TYPE_NAMES.get(status, "Unknown"),
                   title=title or HTTPStatus(status).phrase, status=status, detail=detail)
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI documentation of the problem responses an operation may give."""
    return {status: ResponseSpec(data_container=Problem, description=_DESCRIPTIONS[status],
                                 media_type=PROBLEM_JSON, generate_examples=False)
            for status in statuses}


def _validation_detail(exc: ValidationException) -> str:
    problems = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict) and item.get("key"):
            source = item.get("source", "request")
            where = f"{getattr(source, 'value', source)} parameter {item['key']!r}"
            problems.append(f"{where}: {item.get('message', 'invalid value')}")
    return "; ".join(problems) or exc.detail


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    if isinstance(exc, ValidationException):
        return problem(400, _validation_detail(exc), headers=exc.headers)
    status = exc.status_code
    if status >= 500:  # Litestar's own internal errors: no details out
        log.error("internal error: %r", exc)
        return problem(status, "internal server error: see the server's log")
    detail = exc.detail
    if status == 404 and detail == "Not Found":
        detail = "no such resource: see /openapi.json for the API's paths"
    elif status == 405:
        allowed = (exc.headers or {}).get("allow", "GET")
        detail = f"{request.method} is not allowed here (allowed: {allowed}): the API is read-only"
    return problem(status, detail, headers=exc.headers)


def status_of(exc: XComBusError) -> int | None:
    """The HTTP status an xcombus error is answered with (v1 and v2 alike); None: a bug."""
    for cls, status in _STATUS_OF:
        if isinstance(exc, cls):
            return status
    log.error("unexpected xcombus error: %s", exc)
    return None


def _xcom_error(_: Request[Any, Any, Any], exc: XComBusError) -> Response[Problem]:
    status = status_of(exc)
    if status is None:
        return problem(500, f"internal server error: {exc}")
    return problem(status, str(exc))


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    log.exception("unexpected error answering %s %s", request.method, request.url.path)
    return problem(500, "internal server error: see the server's log")


#: The app's exception handlers.
exception_handlers: Final[ExceptionHandlersMap] = {
    HTTPException: _http_error,
    XComBusError: _xcom_error,
    Exception: _unexpected,
}
