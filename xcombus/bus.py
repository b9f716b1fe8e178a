"""XComBus: push through Kafka, pull from the view, with read-your-writes.

``XComBus`` owns the publisher (and, with ``materialize=True``, an in-process
materializer); ``bus.task_instance(...)`` returns the handle a task uses, with Airflow's
``xcom_push`` / ``xcom_pull``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import socket
from collections.abc import Awaitable, Iterable, Sequence
from datetime import UTC, datetime
from functools import partial
from time import time_ns
from typing import Any, Final

from .backends import BaseXCom, load_backend
from .errors import (
    XComClosedError,
    XComConfigError,
    XComIdentifierError,
    XComSerializationError,
    XComTimeoutError,
    XComValueTooLargeError,
)
from .events import (
    RETURN_VALUE_KEY,
    SCHEMA_VERSION,
    Clear,
    Push,
    TaskInstanceKey,
    encode_event,
    now_us,
    partition_for,
    validate_key,
)
from .materialize import Materializer
from .producer import Publisher
from .records import Receipt, XComRecord
from .settings import Consistency, Settings
from .topic import ensure_topic, require_topic
from .view import ViewNotReadyError, ViewReader
from .watermarks import EndOffsets

__all__ = ["NOTSET", "TaskInstance", "XComBus"]


class _NotSet:
    def __repr__(self) -> str:
        return "NOTSET"


#: Marks ``map_indexes`` as not given (Airflow's ``NOTSET``).
NOTSET: Final = _NotSet()

_POLL_MIN, _POLL_MAX = 0.0005, 0.02


def _to_us(value: datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise XComIdentifierError("logical_date must be timezone-aware (e.g. UTC)")
    return int(value.astimezone(UTC).timestamp() * 1_000_000)


class XComBus:
    """The entry point: ``async with XComBus() as bus: ti = bus.task_instance(...)``.

    Settings come from ``XCOMBUS_*`` variables, overridden by ``settings`` or keyword
    arguments. ``materialize=True`` runs the materializer inside this process, so a
    single script needs no separate consumer. ``create_topic=False`` refuses to start when
    the topic is missing instead of creating it.
    """

    def __init__(self, settings: Settings | None = None, *, materialize: bool = False,
                 create_topic: bool = True, **overrides: Any) -> None:
        base = settings or Settings.from_env()
        self.settings = base.replace(**overrides) if overrides else base
        self.backend: type[BaseXCom] = load_backend(self.settings)
        self.producer_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        # Read on every push: looked up once here (settings are frozen, the backend is
        # chosen once per bus) rather than through attribute chains per push.
        self._serialize_value = self.backend.serialize_value
        self._codec = self.backend.codec
        self._does_io = self.backend.does_io
        self._max_value_bytes = self.settings.max_value_bytes
        self._materialize = materialize
        self._create_topic = create_topic
        self._materializer: Materializer | None = None
        self._publisher = Publisher(self.settings)
        self._end_offsets = EndOffsets(self.settings)
        self._reader: ViewReader | None = None
        self._partitions = 0
        self._state = "new"

    # -- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        """Check the topic, connect the producer and, if asked, start the materializer."""
        if self._state != "new":
            raise XComClosedError(f"this XComBus is {self._state}; create a new one")
        self._state = "starting"
        try:
            self._partitions = await (ensure_topic(self.settings) if self._create_topic
                                      else require_topic(self.settings))
            await self._publisher.start()
            if self._materialize:
                self._materializer = Materializer(self.settings, backend=self.backend)
                await self._materializer.__aenter__()
        except BaseException:
            await self.aclose()
            raise
        self._state = "open"

    async def __aenter__(self) -> XComBus:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Flush pending pushes and release everything. Safe to call twice."""
        if self._state == "closed":
            return
        self._state = "closed"
        try:
            await self._publisher.aclose()
        finally:
            await self._end_offsets.aclose()
            if self._materializer is not None:
                await self._materializer.aclose()
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def _check_open(self) -> None:
        if self._state != "open":
            raise XComClosedError("use the XComBus inside 'async with' (it is not open)")

    @property
    def materializer(self) -> Materializer | None:
        """The in-process materializer (``materialize=True``), else None."""
        return self._materializer

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, *,
                      try_number: int = 1, logical_date: datetime | None = None) -> TaskInstance:
        """The handle of one task instance, with ``xcom_push`` and ``xcom_pull``."""
        return TaskInstance(self, TaskInstanceKey(dag_id, run_id, task_id, map_index),
                            try_number=try_number, logical_date=logical_date)

    # -- push ---------------------------------------------------------------------------
    def partition_of(self, ti: TaskInstanceKey) -> int:
        """The partition holding every event of a task instance."""
        return partition_for(ti.encode(), self._partitions)

    async def push(self, ti: TaskInstanceKey, key: str, value: Any, *, try_number: int = 1,
                   logical_date: int | None = None) -> Receipt:
        """Serialize and publish one XCom; return once the broker holds it durably."""
        self._check_open()
        raw_key = ti.encode()
        return await self._submit(ti, raw_key, partition_for(raw_key, self._partitions), key, value,
                                  try_number, logical_date)

    def _submit(self, ti: TaskInstanceKey, raw_key: bytes, partition: int, key: str, value: Any,
                try_number: int, logical_date: int | None) -> Awaitable[Receipt]:
        """Check, serialize and queue one push; the awaitable resolves on the broker's ack.

        A plain function (not a coroutine) so that ``TaskInstance.xcom_push`` awaits the
        publisher's future directly: every extra coroutine layer costs CPU on each push.
        Errors are raised here, before anything is queued.
        """
        self._check_open()
        validate_key(key)
        if self._does_io:  # object storage: serialize in a thread, off the event loop
            return self._submit_off_loop(ti, raw_key, partition, key, value, try_number, logical_date)
        try:
            data = self._serialize_value(value, key=key, task_id=ti.task_id, dag_id=ti.dag_id,
                                         run_id=ti.run_id, map_index=ti.map_index)
        except (XComSerializationError, XComConfigError):
            raise
        except Exception as exc:  # a backend's own error: translate, keep the cause
            raise self._serialize_error(key, value, exc) from exc
        return self._publisher.submit(partition, raw_key,
                                      self._encode_push(key, data, try_number, logical_date))

    async def _submit_off_loop(self, ti: TaskInstanceKey, raw_key: bytes, partition: int, key: str,
                               value: Any, try_number: int, logical_date: int | None) -> Receipt:
        try:
            data = await asyncio.to_thread(partial(
                self._serialize_value, value, key=key, task_id=ti.task_id, dag_id=ti.dag_id,
                run_id=ti.run_id, map_index=ti.map_index))
        except (XComSerializationError, XComConfigError):
            raise
        except Exception as exc:  # a backend's own error: translate, keep the cause
            raise self._serialize_error(key, value, exc) from exc
        return await self._publisher.submit(partition, raw_key,
                                            self._encode_push(key, data, try_number, logical_date))

    async def push_serialized(self, ti: TaskInstanceKey, key: str, data: bytes, *, codec: str | None = None,
                              try_number: int = 1, logical_date: int | None = None) -> Receipt:
        """Publish bytes already serialized by a backend (``codec``: the one that wrote them,
        the bus backend's by default); return once the broker holds the event durably."""
        self._check_open()
        validate_key(key)
        raw_key = ti.validated().encode()
        event = self._encode_push(key, data, try_number, logical_date, codec or self._codec)
        return await self._publisher.submit(partition_for(raw_key, self._partitions), raw_key, event)

    def _serialize_error(self, key: str, value: Any, exc: Exception) -> XComSerializationError:
        return XComSerializationError(
            f"cannot serialize XCom {key!r} (type {type(value).__qualname__}) with "
            f"{self.backend.__qualname__}: {exc}")

    def _encode_push(self, key: str, data: Any, try_number: int, logical_date: int | None,
                     codec: str | None = None) -> bytes:
        """The push event for serialized ``data``, after checking its type and size."""
        if not isinstance(data, bytes):
            raise XComSerializationError(
                f"{self.backend.__qualname__}.serialize_value must return bytes, not "
                f"{type(data).__qualname__}")
        if len(data) > self._max_value_bytes:
            raise XComValueTooLargeError(
                f"XCom {key!r} serializes to {len(data)} bytes, above the inline limit of "
                f"{self._max_value_bytes} bytes (max_value_bytes); nothing was sent. Large values "
                "belong in object storage: set XCOMBUS_XCOM_BACKEND=xcombus.backends.ObjectStorageXCom")
        return encode_event(Push(schema=SCHEMA_VERSION, key=key, value=data, codec=codec or self._codec,
                                 ts=time_ns() // 1000,  # now_us(), without its call
                                 producer=self.producer_id,
                                 logical_date=logical_date, try_number=try_number))

    async def clear(self, ti: TaskInstanceKey, *, try_number: int = 1) -> Receipt:
        """Publish a clear: every XCom of the task instance is deleted from the view."""
        self._check_open()
        raw_key = ti.encode()
        event = Clear(schema=SCHEMA_VERSION, ts=now_us(), producer=self.producer_id,
                      try_number=try_number)
        return await self._publisher.publish(partition_for(raw_key, self._partitions), raw_key,
                                             encode_event(event))

    # -- pull ---------------------------------------------------------------------------
    def _view(self) -> ViewReader:
        if self._reader is None:
            self._reader = ViewReader(self.settings.view_path, topic=self.settings.topic)
        return self._reader

    async def wait_visible(self, partitions: Iterable[int], *, timeout: float | None = None) -> None:
        """Wait until the view holds every event acknowledged on these partitions so far.

        Raises XComTimeoutError naming the partitions that lag.
        """
        timeout = self.settings.pull_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            async with asyncio.timeout(timeout):  # the broker round trip counts too
                targets = await self._end_offsets.get(sorted(set(partitions)), timeout)
        except TimeoutError:
            raise XComTimeoutError(f"Kafka did not report end offsets within {timeout:g}s") from None
        targets = {p: o for p, o in targets.items() if o > 0}
        delay = _POLL_MIN
        while True:
            # (A view past these end offsets is normal: the log grew since they were read.
            # A view ahead of a re-created topic is caught by the materializer instead.)
            applied = self._applied_offsets()
            lagging = {p: (applied.get(p, 0), end) for p, end in targets.items()
                       if applied.get(p, 0) < end}
            if not lagging:
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                detail = ", ".join(f"partition {p} at {a} of {e}" for p, (a, e) in sorted(lagging.items()))
                raise XComTimeoutError(
                    f"the view at {self.settings.view_path} did not catch up within "
                    f"{timeout:g}s ({detail}): is the materializer running (xcombus "
                    "materialize)? Pass consistency='eventual' to read without waiting")
            if self._materializer is not None:
                await self._materializer.wait_progress(min(remaining, 0.1))
            else:
                await asyncio.sleep(min(delay, remaining))
                delay = min(delay * 2, _POLL_MAX)

    def _applied_offsets(self) -> dict[int, int]:
        if self._materializer is not None:
            return self._materializer.offsets()
        try:
            return self._view().offsets()
        except ViewNotReadyError:
            # The materializer has not created the view (or its tables) yet: keep waiting.
            # Not a check of the path beforehand: the file may appear between the two.
            return {}

    async def read(self, dag_id: str, run_id: str, task_ids: Sequence[str], key: str,
                   map_indexes: Sequence[int] | None, consistency: Consistency | None, *,
                   prior_to: int | None = None, include_prior_dates: bool = False) -> list[XComRecord]:
        """Fetch matching records in one query, after the consistency wait.

        With ``include_prior_dates``, a task with nothing in this run falls back to its
        latest earlier run (logical date before ``prior_to``, or this run's own date).
        """
        self._check_open()
        validate_key(key)
        for task_id in task_ids:
            TaskInstanceKey(dag_id, run_id, task_id, -1).validated()
        if (consistency or self.settings.consistency) == "strong":
            if map_indexes is None or include_prior_dates:  # rows may sit on any partition
                partitions: Iterable[int] = range(self._partitions)
            else:
                partitions = {self.partition_of(TaskInstanceKey(dag_id, run_id, t, i))
                              for t in task_ids for i in map_indexes}
            await self.wait_visible(partitions)
        view = self._view()
        if not include_prior_dates:
            return view.get_tasks(dag_id, run_id, task_ids, key, map_indexes)
        if prior_to is None:
            prior_to = view.logical_date_of(dag_id, run_id)
        if prior_to is None:
            raise XComIdentifierError(
                f"include_prior_dates needs the logical date of run {run_id!r}: pass "
                "logical_date to task_instance()")
        return view.get_tasks_with_prior(dag_id, run_id, task_ids, key, map_indexes, prior_to)

    def deserialize(self, record: XComRecord) -> Any:
        """The value of a record, through the configured backend."""
        return self.backend.deserialize_value(record)

    async def values(self, records: Sequence[XComRecord]) -> list[Any]:
        """Deserialize records (in a worker thread when the backend does I/O)."""
        if self.backend.does_io and records:
            return await asyncio.to_thread(lambda: [self.backend.deserialize_value(r) for r in records])
        return [self.backend.deserialize_value(r) for r in records]


class TaskInstance:
    """One running task instance: what ``ti`` is inside an Airflow task.

    Its identity is fixed at creation (read-only attributes), so the identifiers are
    validated and the message key encoded once here, not on every push.
    """

    def __init__(self, bus: XComBus, key: TaskInstanceKey, *, try_number: int = 1,
                 logical_date: datetime | None = None) -> None:
        self.bus = bus
        self._key = key.validated()
        self._try_number = try_number
        self._logical_date = logical_date
        self._logical_us = _to_us(logical_date)
        self._raw_key = key.encode()
        #: The partition of every event of this task instance; known once the bus is open.
        self._partition = -1

    key = property(lambda self: self._key)
    try_number = property(lambda self: self._try_number)
    logical_date = property(lambda self: self._logical_date)
    dag_id = property(lambda self: self._key.dag_id)
    run_id = property(lambda self: self._key.run_id)
    task_id = property(lambda self: self._key.task_id)
    map_index = property(lambda self: self._key.map_index)

    def __repr__(self) -> str:
        k = self.key
        return (f"<TaskInstance {k.dag_id}.{k.task_id} run={k.run_id} map_index={k.map_index} "
                f"try={self.try_number}>")

    async def xcom_push(self, key: str, value: Any) -> Receipt:
        """Push ``value`` under ``key``; returns once durable on the broker."""
        bus = self.bus
        if self._partition < 0:
            bus._check_open()  # the partition count is known once the bus is open
            self._partition = partition_for(self._raw_key, bus._partitions)
        return await bus._submit(self._key, self._raw_key, self._partition, key, value,
                                 self._try_number, self._logical_us)

    async def xcom_clear(self) -> Receipt:
        """Delete every XCom of this task instance (what a new try does first)."""
        return await self.bus.clear(self._key, try_number=self._try_number)

    async def xcom_pull(
        self,
        task_ids: str | Iterable[str] | None = None,
        dag_id: str | None = None,
        key: str = RETURN_VALUE_KEY,
        include_prior_dates: bool = False,
        *,
        map_indexes: int | Iterable[int] | _NotSet | None = NOTSET,
        default: Any = None,
        run_id: str | None = None,
        consistency: Consistency | None = None,
    ) -> Any:
        """Pull XComs with Airflow 3's rules (see docs/semantics.md).

        By default the pull sees every push that returned before it began (it waits for
        the view, bounded by ``pull_timeout``); ``consistency="eventual"`` reads the view
        as it is.
        """
        same_run = run_id in (None, self.run_id) and dag_id in (None, self.dag_id)
        dag_id = dag_id or self.dag_id
        run_id = run_id or self.run_id
        single_task = task_ids is None or isinstance(task_ids, str)
        tasks: list[str] = ([task_ids or self.task_id] if single_task  # type: ignore[list-item]
                            else list(task_ids))  # type: ignore[arg-type]
        # Prior runs are "before this task instance's logical date" when reading our own run.
        prior = {"include_prior_dates": include_prior_dates,
                 "prior_to": self._logical_us if same_run else None}
        if isinstance(map_indexes, _NotSet):
            records = await self.bus.read(dag_id, run_id, tasks, key, None, consistency, **prior)
            by_task: dict[str, list[Any]] = {}
            for rec, value in zip(records, await self.bus.values(records), strict=True):
                by_task.setdefault(rec.task_id, []).append(value)
            if single_task:
                values = by_task.get(tasks[0])
                if not values:
                    return default
                return values[0] if len(values) == 1 else values
            out: list[Any] = []
            for task in tasks:
                out.extend(by_task.get(task) or [None])
            return out
        single_index = map_indexes is None or isinstance(map_indexes, int)
        indexes = [-1 if map_indexes is None else map_indexes] if single_index else list(map_indexes)  # type: ignore[arg-type]
        records = await self.bus.read(dag_id, run_id, tasks, key, indexes, consistency, **prior)
        found = dict(zip([(r.task_id, r.map_index) for r in records],
                         await self.bus.values(records), strict=True))
        values = [found.get(pair, default) for pair in itertools.product(tasks, indexes)]
        if single_task and single_index:
            return values[0]
        return values
