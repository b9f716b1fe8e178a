"""xcombus: Airflow-style XComs on a Kafka event bus, materialized into SQLite.

    async with XComBus() as bus:
        ti = bus.task_instance("my_dag", "manual__2026-01-01", "extract")
        await ti.xcom_push("return_value", {"rows": 42})
        value = await ti.xcom_pull(task_ids="extract")

Data flows one way: task -> producer -> topic -> materializer -> SQLite view -> pull.
"""

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
    XComValueTooLargeError,
    XComViewError,
    XComViewLockedError,
)
from .events import TaskInstanceKey
from .lookup import DagRunSummary, TaskInstanceSummary, XComEntry, XComLookup
from .materialize import Materializer
from .records import Receipt, XComRecord
from .settings import Settings
from .task import SyncTaskInstance, SyncXComBus, Task, current_task_instance, task
from .view import ViewReader

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
    "XComValueTooLargeError",
    "XComViewError",
    "XComViewLockedError",
    "current_task_instance",
    "load_backend",
    "task",
]

__version__ = "0.1.0"
