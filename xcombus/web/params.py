"""Path and query parameters of the API: their OpenAPI documentation and their checks.

Identifiers are checked with the same rules as pushes (:class:`xcombus.events.TaskInstanceKey`
and :func:`xcombus.events.validate_key`), so a request names an XCom exactly as a task does;
a bad one is a 400 whose detail says which part is wrong and what is allowed.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from litestar.params import Parameter

from ..errors import XComIdentifierError
from ..events import ID_PATTERN, RUN_ID_PATTERN, TaskInstanceKey, validate_key
from ..limits import MAX_PAGE

__all__ = [
    "KEY_PATTERN",
    "MAX_INT",
    "MAX_PAGE",
    "WILDCARD",
    "AnyDagId",
    "AnyRunId",
    "AnyTaskId",
    "DagId",
    "KeyPath",
    "OneMapIndex",
    "RunId",
    "TaskId",
    "check_filters",
    "check_one",
    "check_run",
]

#: ``~`` in a listing's dag_id, dag_run_id or task_id means "any", as in Airflow.
WILDCARD: Final = "~"
#: Bound of offsets and map indexes (Airflow's map indexes are 32-bit): a larger number is a
#: 400 naming the parameter, never an overflow in SQLite.
MAX_INT: Final = 2**31 - 1

# The documented patterns are the ones TaskInstanceKey checks (and validate_key for keys).
_ID: Final = ID_PATTERN
_RUN_ID: Final = RUN_ID_PATTERN
#: Documents the printable-key rule; Unicode classes beyond C0/C1 controls are checked by the server.
KEY_PATTERN: Final = r"^[^\x00-\x1f\x7f-\x9f]{1,512}$"


def _path(description: str, pattern: str) -> Any:
    """A path parameter documented with its pattern (checked in the handler, with a clearer message)."""
    return Parameter(description=description, schema_extra={"pattern": pattern})


AnyDagId = Annotated[str, _path("The DAG id, or `~` for every DAG.", f"^(~|{_ID})$")]
AnyRunId = Annotated[str, _path("The DAG run id, or `~` for every run.", f"^{_RUN_ID}$")]
AnyTaskId = Annotated[str, _path("The task id, or `~` for every task.", f"^(~|{_ID})$")]
DagId = Annotated[str, _path("The DAG id.", f"^{_ID}$")]
RunId = Annotated[str, _path("The DAG run id.", f"^{_RUN_ID}$")]
TaskId = Annotated[str, _path("The task id.", f"^{_ID}$")]
KeyPath = Annotated[str, _path(
    "The XCom key: 1-512 printable characters (Python's str.isprintable).", KEY_PATTERN)]
OneMapIndex = Annotated[int, Parameter(
    ge=-1, le=MAX_INT, description="The map index: -1 (the default) for an unmapped task instance.")]


def _wild(value: str) -> str | None:
    return None if value == WILDCARD else value


def check_filters(dag_id: str, run_id: str, task_id: str,
                  key: str | None) -> tuple[str | None, str | None, str | None]:
    """A listing's path filters with ``~`` as None; raise XComIdentifierError for a bad one."""
    filters = _wild(dag_id), _wild(run_id), _wild(task_id)
    # Check every given part with the push-side rules; placeholders stand in for wildcards.
    TaskInstanceKey(filters[0] or "x", filters[1] or "x", filters[2] or "x").validated()
    if key is not None:
        validate_key(key)
    return filters


def check_one(dag_id: str, run_id: str, task_id: str, key: str, map_index: int) -> TaskInstanceKey:
    """The task instance of one XCom; raise XComIdentifierError for a bad part or a wildcard.

    As in Airflow, ``~`` is no wildcard here: a run id may be ``~`` itself, a dag or task id never.
    """
    for name, value in (("dag_id", dag_id), ("task_id", task_id)):
        if value == WILDCARD:
            raise XComIdentifierError(
                f"{name} '~' (any) is allowed only when listing xcomEntries; name one XCom here")
    validate_key(key)
    return TaskInstanceKey(dag_id, run_id, task_id, map_index).validated()


def check_run(dag_id: str, run_id: str | None = None) -> None:
    """Check the DAG id (and run id) of a browsing path; raise XComIdentifierError for a bad one."""
    check_one(dag_id, "x" if run_id is None else run_id, "x", "x", -1)
