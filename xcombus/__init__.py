"""xcombus: Airflow-style XComs on a Kafka event bus, materialized into SQLite.

    async with XComBus() as bus:
        ti = bus.task_instance("my_dag", "manual__2026-01-01", "extract")
        await ti.xcom_push("return_value", {"rows": 42})
        value = await ti.xcom_pull(task_ids="extract")

Data flows one way: task -> producer -> topic -> materializer -> SQLite view -> pull.
Lower layers stay in their modules (``xcombus.view.ViewReader``, ``xcombus.backends.ObjectRef``).
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below, for type checkers and IDEs; at run time they load lazily
    from .backends import BaseXCom, MsgspecXCom, ObjectStorageXCom, load_backend
    from .bus import TaskInstance, XComBus
    from .errors import (
        XComBrokerError,
        XComBusError,
        XComClosedError,
        XComConfigError,
        XComConnectTimeoutError,
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
    from .lookup import DagRunSummary, DagSummary, TaskInstanceSummary, Values, XComEntry, XComLookup
    from .materialize import Materializer
    from .pull_rules import NOTSET, NotSet
    from .records import Receipt, XComRecord
    from .settings import Consistency, Settings
    from .taskflow import SyncTaskInstance, SyncXComBus, Task, current_task_instance, task

#: Where each public name lives. Importing ``xcombus`` loads nothing else: a process
#: (every Airflow component imports ``xcombus.airflow``) pays only for what it uses.
_LAZY: dict[str, str] = {
    "BaseXCom": "backends",
    "Consistency": "settings",
    "DagRunSummary": "lookup",
    "DagSummary": "lookup",
    "Materializer": "materialize",
    "MsgspecXCom": "backends",
    "NOTSET": "pull_rules",
    "NotSet": "pull_rules",
    "ObjectStorageXCom": "backends",
    "Receipt": "records",
    "Settings": "settings",
    "SyncTaskInstance": "taskflow",
    "SyncXComBus": "taskflow",
    "Task": "taskflow",
    "TaskInstance": "bus",
    "TaskInstanceKey": "events",
    "TaskInstanceSummary": "lookup",
    "Values": "lookup",
    "XComBrokerError": "errors",
    "XComBus": "bus",
    "XComBusError": "errors",
    "XComClosedError": "errors",
    "XComConfigError": "errors",
    "XComConnectTimeoutError": "errors",
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
    "Consistency",
    "DagRunSummary",
    "DagSummary",
    "Materializer",
    "MsgspecXCom",
    "NOTSET",
    "NotSet",
    "ObjectStorageXCom",
    "Receipt",
    "Settings",
    "SyncTaskInstance",
    "SyncXComBus",
    "Task",
    "TaskInstance",
    "TaskInstanceKey",
    "TaskInstanceSummary",
    "Values",
    "XComBrokerError",
    "XComBus",
    "XComBusError",
    "XComClosedError",
    "XComConfigError",
    "XComConnectTimeoutError",
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


def __getattr__(name: str) -> Any:
    if name == "__version__":  # from the installed metadata: one source, pyproject.toml
        from importlib.metadata import version

        value: Any = version(__name__)
    else:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'xcombus' has no attribute {name!r}")
        from importlib import import_module

        value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__, "__version__"])
