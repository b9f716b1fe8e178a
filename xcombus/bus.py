"""XComBus: push through Kafka, pull from the view, with read-your-writes.

``XComBus`` owns the publisher (and, with ``materialize=True``, an in-process
materializer); ``bus.task_instance(...)`` returns the handle a task uses, with Airflow's
``xcom_push`` / ``xcom_pull``. The bus wires the parts together and keeps the push path
short; the pull rules are :mod:`xcombus.pull_rules`, the read-your-writes wait
:mod:`xcombus.consistency`.

Only what pushing needs is imported here: the view reader (sqlite3) and the materializer
(the consumer loop, metrics) load when a process first pulls or materializes.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from time import time_ns
from typing import TYPE_CHECKING, Any

from ._time import now_us, to_us
from .backends import BaseXCom, load_backend
from .consistency import MaterializerProgress, ReadYourWrites, ViewPoller, ViewProgress, partitions_of_pull
from .errors import (
    XComClosedError,
    XComConfigError,
    XComIdentifierError,
    XComNotFoundError,
    XComQueryError,
    XComSerializationError,
    XComValueTooLargeError,
    XComViewError,
)
from .events import (
    CLEAR_SCHEMA,
    OVERRIDE_SCHEMA,
    PUSH_SCHEMA,
    RETURN_VALUE_KEY,
    Clear,
    EventDecodeError,
    Override,
    Push,
    TaskInstanceKey,
    decode_event,
    decode_ti_key,
    encode_event,
    partition_for,
    validate_actor,
    validate_key,
    validate_reason,
)
from .producer import Publisher
from .pull_rules import NOTSET, NotSet, plan_pull, shape_pull
from .records import Receipt, XComRecord
from .settings import Consistency, Settings, settings_with
from .topic import ensure_topic, require_topic

if TYPE_CHECKING:
    from .fetch import EventFetcher
    from .materialize import Materializer
    from .view import ViewReader

__all__ = ["NOTSET", "NotSet", "TaskInstance", "XComBus"]

#: A task instance's bound push: ``(key, value, try_number, logical_date_us)`` -> receipt.
_PushFn = Callable[[str, Any, int, "int | None"], Awaitable[Receipt]]


class XComBus:
    """The entry point: ``async with XComBus() as bus: ti = bus.task_instance(...)``.

    Settings come from ``XCOMBUS_*`` variables, overridden by ``settings`` or keyword
    arguments. ``materialize=True`` runs the materializer inside this process, so a
    single script needs no separate consumer. ``create_topic=False`` refuses to start when
    the topic is missing instead of creating it.
    """

    def __init__(self, settings: Settings | None = None, *, materialize: bool = False,
                 create_topic: bool = True, **overrides: Any) -> None:
        self.settings = settings_with(settings, **overrides)
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
        self._consistency = ReadYourWrites(self.settings, self._view_progress)
        self._reader: ViewReader | None = None
        #: Reads records by position for per-try reads (opened on the first one).
        self._fetcher: EventFetcher | None = None
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
                from .materialize import Materializer  # only processes that materialize load it

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
            await self._consistency.aclose()
            if self._materializer is not None:
                await self._materializer.aclose()
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            if self._fetcher is not None:
                await self._fetcher.aclose()
                self._fetcher = None

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

    def _bind_push(self, ti: TaskInstanceKey, raw_key: bytes) -> _PushFn:
        """The push path of one task instance, for :class:`TaskInstance` (its only caller).

        Checks the bus is open (the partition count is known from then on) and fixes the
        task instance's identity, so each push passes only what changes.
        """
        self._check_open()
        return partial(self._submit, ti, raw_key, partition_for(raw_key, self._partitions))

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
        data = await self._serialize_in_thread(ti, key, value)
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

    async def _serialize_in_thread(self, ti: TaskInstanceKey, key: str, value: Any) -> Any:
        """The backend's serialization of ``value``, run in a worker thread (a backend may do I/O)."""
        try:
            return await asyncio.to_thread(partial(
                self._serialize_value, value, key=key, task_id=ti.task_id, dag_id=ti.dag_id,
                run_id=ti.run_id, map_index=ti.map_index))
        except (XComSerializationError, XComConfigError):
            raise
        except Exception as exc:  # a backend's own error: translate, keep the cause
            raise self._serialize_error(key, value, exc) from exc

    def _serialize_error(self, key: str, value: Any, exc: Exception) -> XComSerializationError:
        return XComSerializationError(
            f"cannot serialize XCom {key!r} (type {type(value).__qualname__}) with "
            f"{self.backend.__qualname__}: {exc}")

    def _check_serialized(self, key: str, data: Any) -> None:
        """Refuse what a backend returned unless it is bytes within the inline limit."""
        if not isinstance(data, bytes):
            raise XComSerializationError(
                f"{self.backend.__qualname__}.serialize_value must return bytes, not "
                f"{type(data).__qualname__}")
        if len(data) > self._max_value_bytes:
            raise XComValueTooLargeError(
                f"XCom {key!r} serializes to {len(data)} bytes, above the inline limit of "
                f"{self._max_value_bytes} bytes (max_value_bytes); nothing was sent. Large values "
                "belong in object storage: set XCOMBUS_XCOM_BACKEND=xcombus.backends.ObjectStorageXCom")

    def _encode_push(self, key: str, data: Any, try_number: int, logical_date: int | None,
                     codec: str | None = None) -> bytes:
        """The push event for serialized ``data``, after checking its type and size."""
        self._check_serialized(key, data)
        return encode_event(Push(schema=PUSH_SCHEMA, key=key, value=data, codec=codec or self._codec,
                                 ts=time_ns() // 1000,  # now_us() inlined: the hot path
                                 producer=self.producer_id,
                                 logical_date=logical_date, try_number=try_number))

    async def clear(self, ti: TaskInstanceKey, *, try_number: int = 1) -> Receipt:
        """Publish a clear: every XCom of the task instance is deleted from the view."""
        self._check_open()
        raw_key = ti.encode()
        event = Clear(schema=CLEAR_SCHEMA, ts=now_us(), producer=self.producer_id,
                      try_number=try_number)
        return await self._publisher.publish(partition_for(raw_key, self._partitions), raw_key,
                                             encode_event(event))

    # -- overrides: manual changes, audited -----------------------------------------------
    async def set_xcom(self, ti: TaskInstanceKey, key: str, value: Any, *, reason: str,
                       actor: str | None = None, consistency: Consistency | None = None) -> Receipt:
        """Set one XCom by hand: publish an override recording who (``actor``, else
        ``settings.actor``, else the OS user), why (``reason``) and the version it replaces.

        The value is serialized by the bus's backend exactly as a push's, so tasks read it
        like a task-written one. The replaced version is read from the view after the
        consistency wait (``consistency``, default ``settings.consistency``); without a view
        file the override names none. Returns once the broker holds the event; a pull that
        starts after that sees it.
        """
        self._check_open()
        validate_key(key)
        data = await self._serialize_in_thread(ti.validated(), key, value)
        self._check_serialized(key, data)
        return await self._override(ti, key, data, self._codec, reason=reason, actor=actor,
                                    consistency=consistency, must_exist=False)

    async def delete_xcom(self, ti: TaskInstanceKey, key: str, *, reason: str, actor: str | None = None,
                          consistency: Consistency | None = None) -> Receipt:
        """Delete one XCom by hand: an override without a value, audited like :meth:`set_xcom`.

        Raises XComNotFoundError when the view (after the consistency wait) has no such
        XCom, and XComViewError without a view file: a delete must name what it deletes.
        """
        return await self._override(ti, key, None, None, reason=reason, actor=actor,
                                    consistency=consistency, must_exist=True)

    async def revert_xcom(self, ti: TaskInstanceKey, key: str, *, to_offset: int, reason: str,
                          actor: str | None = None, consistency: Consistency | None = None) -> Receipt:
        """Re-publish the version of one XCom at ``to_offset`` (in its task instance's
        partition, as ``xcombus history`` lists it) as an override: the same serialized bytes
        and codec, so tasks read exactly what that version held (a delete reverts to a delete).

        Raises XComNotFoundError when that offset holds no version of this XCom.
        """
        self._check_open()
        ti = ti.validated()
        validate_key(key)
        partition = self.partition_of(ti)
        raw = await self._records().fetch(partition, to_offset)
        where = f"partition {partition} offset {to_offset}"
        try:
            event = decode_event(raw.value) if decode_ti_key(raw.key) == ti else None
        except EventDecodeError as exc:
            raise XComNotFoundError(f"{where} is not an xcombus event ({exc}): nothing to revert to") \
                from None
        if not isinstance(event, Push | Override) or event.key != key:
            raise XComNotFoundError(
                f"{where} holds no version of XCom {key!r} of {ti.dag_id}/{ti.run_id}/{ti.task_id}"
                f"[{ti.map_index}]: pick an offset from `xcombus history` of that XCom")
        return await self._override(ti, key, event.value, event.codec, reason=reason, actor=actor,
                                    consistency=consistency, must_exist=False)

    async def _override(self, ti: TaskInstanceKey, key: str, data: bytes | None, codec: str | None, *,
                        reason: str, actor: str | None, consistency: Consistency | None,
                        must_exist: bool) -> Receipt:
        """Publish one override of ``ti``'s ``key`` (``data`` None: delete)."""
        self._check_open()
        ti = ti.validated()
        validate_key(key)
        validate_reason(reason)
        actor = validate_actor(actor or self.settings.actor or _os_user())
        partition = self.partition_of(ti)
        replaces: tuple[int, int] | None = None
        current_try = 1
        if self._materializer is not None or Path(self.settings.view_path).exists():
            if (consistency or self.settings.consistency) == "strong":
                await self.wait_visible([partition])
            view = self._view()
            current = view.get(*ti, key)
            replaces = None if current is None else (current.partition, current.offset)
            current_try = view.current_try(*ti)
        elif must_exist:
            raise XComViewError(
                f"deleting XCom {key!r} needs the view to check it exists, and "
                f"{self.settings.view_path} does not exist: run `xcombus materialize` (XCOMBUS_VIEW_PATH)")
        if must_exist and replaces is None:
            raise XComNotFoundError(
                f"no XCom {key!r} of {ti.dag_id}/{ti.run_id}/{ti.task_id}[{ti.map_index}] in the view: "
                "nothing to delete (`xcombus ls` lists what there is)")
        event = Override(schema=OVERRIDE_SCHEMA, key=key, value=data, codec=codec, ts=now_us(),
                         producer=self.producer_id, actor=actor, reason=reason, replaces=replaces,
                         try_number=current_try)
        raw_key = ti.encode()
        return await self._publisher.publish(partition, raw_key, encode_event(event))

    def _records(self) -> EventFetcher:
        """The reader of single records by position (per-try reads, reverts): scattered
        positions, so one record batch per fetch."""
        if self._fetcher is None:
            from .fetch import ONE_BATCH, EventFetcher  # aiokafka's consumer: loaded on first use

            self._fetcher = EventFetcher(self.settings, fetch_bytes=ONE_BATCH)
        return self._fetcher

    # -- pull ---------------------------------------------------------------------------
    def _view(self) -> ViewReader:
        if self._reader is None:
            from .view import ViewReader  # sqlite3: loaded when this process first reads

            self._reader = ViewReader(self.settings.view_path, topic=self.settings.topic)
        return self._reader

    def _view_progress(self) -> ViewProgress:
        """Where one read-your-writes wait learns the view's offsets: the in-process
        materializer (woken by its commits), else the view file (polled)."""
        if self._materializer is not None:
            return MaterializerProgress(self._materializer)
        return ViewPoller(self._view)

    async def wait_visible(self, partitions: Iterable[int], *, timeout: float | None = None) -> None:
        """Wait until the view holds every event acknowledged on these partitions so far.

        Raises XComTimeoutError naming the partitions that lag (``timeout`` defaults to
        ``pull_timeout``).
        """
        await self._consistency.wait_visible(partitions, timeout=timeout)

    async def read(self, dag_id: str, run_id: str, task_ids: Sequence[str], key: str, *,
                   map_indexes: Sequence[int] | None = None, consistency: Consistency | None = None,
                   include_prior_dates: bool = False, prior_to: int | None = None,
                   try_number: int | None = None) -> list[XComRecord]:
        """Fetch matching records in one query, after the consistency wait.

        ``map_indexes=None`` reads every map index. With ``include_prior_dates``, a task
        with nothing in this run falls back to its latest earlier run (logical date before
        ``prior_to``, µs, or this run's own date).

        With ``try_number``, each record is what that try of the task instance last pushed
        under ``key`` (or set by an override while it was the current try), read from the
        topic at the position the view's version index gives, also when the view no longer
        shows that try's rows (a cleared or fenced try); task instances whose try N pushed
        nothing there are left out. It needs explicit ``map_indexes`` (the index is found
        by identity, it cannot list map indexes) and no ``include_prior_dates``.
        """
        self._check_open()
        validate_key(key)
        for task_id in task_ids:
            TaskInstanceKey(dag_id, run_id, task_id, -1).validated()
        if try_number is not None and (map_indexes is None or include_prior_dates):
            raise XComQueryError("a read of one try needs the map indexes to read (map_indexes) and "
                                 "cannot fall back to prior dates (include_prior_dates)")
        if (consistency or self.settings.consistency) == "strong":
            await self.wait_visible(partitions_of_pull(
                self._partitions, dag_id, run_id, task_ids, map_indexes,
                include_prior_dates=include_prior_dates))
        view = self._view()
        if try_number is not None:
            assert map_indexes is not None  # checked above
            found = []
            for task_id in task_ids:
                for map_index in map_indexes:
                    ti = TaskInstanceKey(dag_id, run_id, task_id, map_index)
                    record = await self._read_try(view, ti, key, try_number)
                    if record is not None:
                        found.append(record)
            return found
        if not include_prior_dates:
            return view.get_tasks(dag_id, run_id, task_ids, key, map_indexes)
        if prior_to is None:
            prior_to = view.logical_date_of(dag_id, run_id)
        if prior_to is None:
            raise XComIdentifierError(
                f"include_prior_dates needs the logical date of run {run_id!r}: pass "
                "logical_date to task_instance()")
        return view.get_tasks_with_prior(dag_id, run_id, task_ids, key, map_indexes, prior_to)

    async def _read_try(self, view: ViewReader, ti: TaskInstanceKey, key: str,
                        try_number: int) -> XComRecord | None:
        """What try ``try_number`` of ``ti`` last wrote under ``key``, from the topic (the
        newest indexed version of that try whose record really is this XCom's: the index
        finds XComs by a hash of their identity)."""
        fetcher = self._records()
        for entry in reversed(view.versions(*ti, key)):
            if entry.kind == "clear" or entry.try_number != try_number:
                continue
            raw = await fetcher.fetch(entry.partition, entry.offset)
            try:
                if decode_ti_key(raw.key) != ti:
                    continue
                event = decode_event(raw.value)
            except EventDecodeError as exc:
                raise XComViewError(f"the version index of {view.path} points at partition "
                                    f"{entry.partition} offset {entry.offset}, which is not an event of "
                                    f"ours ({exc}): is the view of this topic? Rebuild it") from None
            if not isinstance(event, Push | Override) or event.key != key:
                continue
            if event.value is None or event.codec is None:
                return None  # an override deleted the XCom while this try was current
            logical_date = event.logical_date if isinstance(event, Push) else None
            return XComRecord(*ti, key, event.value, event.codec, event.ts, logical_date, event.producer,
                              entry.try_number, entry.partition, entry.offset)
        if not view.version_index_complete():
            raise XComViewError(
                f"{view.path} was upgraded from an older xcombus: its version index starts at the "
                f"upgrade and has no try {try_number} of {ti.task_id}[{ti.map_index}] {key!r}. Rebuild "
                "the view (xcombus rebuild --into NEW.db --swap) to read older tries")
        return None

    def deserialize(self, record: XComRecord) -> Any:
        """The value of a record, through the configured backend."""
        return self.backend.deserialize_value(record)

    async def values(self, records: Sequence[XComRecord]) -> list[Any]:
        """Deserialize records (in a worker thread when the backend does I/O)."""
        if self.backend.does_io and records:
            return await asyncio.to_thread(lambda: [self.backend.deserialize_value(r) for r in records])
        return [self.backend.deserialize_value(r) for r in records]


def _os_user() -> str:
    """Who runs this process, as the operating system knows them (an override's default actor)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (a container's uid)
        raise XComConfigError("an override needs an actor and this process has no user name: "
                              "pass --actor (actor=) or set XCOMBUS_ACTOR") from None


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
        self._logical_us = to_us(logical_date, what="logical_date must be timezone-aware",
                                 error=XComIdentifierError)
        self._raw_key = key.encode()
        #: This task instance's push path, bound once the bus is open (see XComBus._bind_push).
        self._push: _PushFn | None = None

    @property
    def key(self) -> TaskInstanceKey:
        """The task instance's identity (not an XCom key: ``xcom_push(key=...)`` names a value)."""
        return self._key

    @property
    def try_number(self) -> int:
        """The try this handle pushes as."""
        return self._try_number

    @property
    def logical_date(self) -> datetime | None:
        """The DAG run's logical date, when given."""
        return self._logical_date

    @property
    def dag_id(self) -> str:
        """The DAG id."""
        return self._key.dag_id

    @property
    def run_id(self) -> str:
        """The DAG run id."""
        return self._key.run_id

    @property
    def task_id(self) -> str:
        """The task id."""
        return self._key.task_id

    @property
    def map_index(self) -> int:
        """The map index (-1: not mapped)."""
        return self._key.map_index

    def __repr__(self) -> str:
        k = self.key
        return (f"<TaskInstance {k.dag_id}.{k.task_id} run={k.run_id} map_index={k.map_index} "
                f"try={self.try_number}>")

    async def xcom_push(self, key: str, value: Any) -> Receipt:
        """Push ``value`` under ``key``; returns once durable on the broker."""
        push = self._push
        if push is None:
            push = self._push = self.bus._bind_push(self._key, self._raw_key)
        return await push(key, value, self._try_number, self._logical_us)

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
        map_indexes: int | Iterable[int] | NotSet | None = NOTSET,
        default: Any = None,
        run_id: str | None = None,
        consistency: Consistency | None = None,
        try_number: int | None = None,
    ) -> Any:
        """Pull XComs with Airflow 3's rules (see docs/semantics.md and
        :mod:`xcombus.pull_rules`).

        By default the pull sees every push that returned before it began (it waits for
        the view, bounded by ``pull_timeout``); ``consistency="eventual"`` reads the view
        as it is.

        ``try_number=N`` returns what try N of each task instance last pushed under ``key``
        instead, including a try whose values the view no longer shows (a retry reading its
        failed predecessor's checkpoint). Without ``map_indexes`` it reads this task
        instance's own map index when pulling its own task, else the unmapped instance.
        """
        plan = plan_pull(self._key, task_ids, dag_id, run_id, map_indexes)
        indexes = plan.map_indexes
        if try_number is not None and indexes is None:
            indexes = [self.map_index if task_ids is None else -1]
        records = await self.bus.read(
            plan.dag_id, plan.run_id, plan.task_ids, key, map_indexes=indexes,
            consistency=consistency, include_prior_dates=include_prior_dates,
            # Prior runs are "before this task instance's logical date" when reading our own run.
            prior_to=self._logical_us if plan.same_run else None, try_number=try_number)
        return shape_pull(plan, records, await self.bus.values(records), default)
