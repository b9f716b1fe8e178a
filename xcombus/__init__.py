"""xcombus: Airflow-style XComs on a Kafka event bus, materialized into SQLite.

    async with XComBus() as bus:
        ti = bus.task_instance("my_dag", "manual__2026-01-01", "extract")
        await ti.xcom_push("return_value", {"rows": 42})
        value = await ti.xcom_pull(task_ids="extract")

Data flows one way: task -> producer -> topic -> materializer -> SQLite view -> pull.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below, for type checkers and IDEs; at run time they load lazily
    from .backends import BaseXCom, MsgspecXCom, ObjectRef, ObjectStorageXCom, load_backend
    from .bus import NOTSET, TaskInstance, XComBus
    from .errors import (
        XComBrokerError,
        XComBusError,
        XComClosedError,
        XComConfigError,
        XComIdentifierError,
        XComNotFoundError,
        XComPublishError,
        XComQueryError,
        XComSerializationError,
        XComTimeoutError,
        XComUnsupportedTypeError,
        XComValueTooLargeError,
        XComViewError,
        XComViewLockedError,
    )
    from .events import TaskInstanceKey
    from .lookup import DagRunSummary, TaskInstanceSummary, XComEntry, XComLookup
    from .materialize import Materializer
    from .records import Receipt, XComRecord
    from .settings import Settings
    from .taskflow import SyncTaskInstance, SyncXComBus, Task, current_task_instance, task
    from .view import ViewReader

#: Where each public name lives. Importing ``xcombus`` loads nothing else: a process
#: (every Airflow component imports ``xcombus.airflow``) pays only for what it uses.
_LAZY: dict[str, str] = {
    "BaseXCom": "backends",
    "DagRunSummary": "lookup",
    "Materializer": "materialize",
    "MsgspecXCom": "backends",
    "NOTSET": "bus",
    "ObjectRef": "backends",
    "ObjectStorageXCom": "backends",
    "Receipt": "records",
    "Settings": "settings",
    "SyncTaskInstance": "taskflow",
    "SyncXComBus": "taskflow",
    "Task": "taskflow",
    "TaskInstance": "bus",
    "TaskInstanceKey": "events",
    "TaskInstanceSummary": "lookup",
    "ViewReader": "view",
    "XComBrokerError": "errors",
    "XComBus": "bus",
    "XComBusError": "errors",
    "XComClosedError": "errors",
    "XComConfigError": "errors",
    "XComEntry": "lookup",
    "XComIdentifierError": "errors",
    "XComLookup": "lookup",
    "XComNotFoundError": "errors",
    "XComPublishError": "errors",
    "XComQueryError": "errors",
    "XComRecord": "records",
    "XComSerializationError": "errors",
    "XComTimeoutError": "errors",
    "XComUnsupportedTypeError": "errors",
    "XComValueTooLargeError": "errors",
    "XComViewError": "errors",
    "XComViewLockedError": "errors",
    "current_task_instance": "taskflow",
    "load_backend": "backends",
    "task": "taskflow",
}

__all__ = [
    "BaseXCom",
    "DagRunSummary",
    "Materializer",
    "MsgspecXCom",
    "NOTSET",
    "ObjectRef",
    "ObjectStorageXCom",
    "Receipt",
    "Settings",
    "SyncTaskInstance",
    "SyncXComBus",
    "Task",
    "TaskInstance",
    "TaskInstanceKey",
    "TaskInstanceSummary",
    "ViewReader",
    "XComBrokerError",
    "XComBus",
    "XComBusError",
    "XComClosedError",
    "XComConfigError",
    "XComEntry",
    "XComIdentifierError",
    "XComLookup",
    "XComNotFoundError",
    "XComPublishError",
    "XComQueryError",
    "XComRecord",
    "XComSerializationError",
    "XComTimeoutError",
    "XComUnsupportedTypeError",
    "XComValueTooLargeError",
    "XComViewError",
    "XComViewLockedError",
    "current_task_instance",
    "load_backend",
    "task",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'xcombus' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
