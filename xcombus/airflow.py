"""Apache Airflow's own XCom backend on xcombus: every XCom of unchanged DAGs goes to Kafka.

    pip install 'xcombus[airflow]'
    AIRFLOW__CORE__XCOM_BACKEND=xcombus.airflow.XComBusBackend   # plus the XCOMBUS_* settings

One class serves Airflow 3.3 (``airflow.sdk``) and 2.10 (``airflow.models.xcom``):

- **push** (``serialize_value``, in the task process): the value is serialized with
  xcombus's configured backend (``XCOMBUS_XCOM_BACKEND``: exact round trips; values it
  refuses but Airflow's own serde accepts are written with Airflow's serde), published as a
  push event (acks=all: durable before it returns) carrying the task's try number and the
  run's logical date, and Airflow stores only an :class:`~xcombus.reference.XComReference`
  (identity, topic/partition/offset, size, SHA-256, a bounded preview): a JSON value on
  Airflow 3, JSON bytes on Airflow 2;
- **pull** (``deserialize_value``): a reference is resolved from the local view when this
  host keeps one (the file at ``XCOMBUS_VIEW_PATH`` exists): wait until the view has applied
  the reference's offset, then read it, with no broker round trip; otherwise the one record
  is fetched from the topic. Identity and SHA-256 are checked. Values that are not
  references (written by Airflow's REST API, or before the switch) pass through Airflow's
  own deserialization unchanged;
- **purge** (start of a new try): one ``clear`` event for the task instance, so the log
  shows where each try begins; the purges of the other keys of that try are covered by it;
- ``orm_deserialize_value`` (Airflow 2's UI and REST listings): the reference's label with
  its preview, never a fetch.

Importing this module opens nothing (every Airflow process imports it): the producer, the
view reader and the topic reader start on first use in the task process, are reused for
every XCom of that process, and are closed when it exits.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import logging
import os
import sys
import threading
import time
import types
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

try:  # Airflow 3: the task SDK's base class (what [core] xcom_backend must subclass)
    from airflow.sdk.bases.xcom import BaseXCom as _AirflowBaseXCom

    AIRFLOW_3 = True
except ImportError:
    try:  # Airflow 2.10
        from airflow.models.xcom import BaseXCom as _AirflowBaseXCom
    except ImportError as exc:
        raise ImportError(
            "xcombus.airflow is Apache Airflow's XCom backend and needs Airflow 2.10+ or 3.x: "
            "pip install 'xcombus[airflow]' in the Airflow environment") from exc
    AIRFLOW_3 = False

from .errors import (
    XComBusError,
    XComClosedError,
    XComNotFoundError,
    XComPublishError,
    XComSerializationError,
    XComTimeoutError,
    XComUnsupportedTypeError,
)
from .events import TaskInstanceKey
from .reference import XComReference, make_preview, parse_reference

if TYPE_CHECKING:
    from .backends import BaseXCom as XComCodec
    from .bus import XComBus
    from .fetch import EventFetcher
    from .records import XComRecord
    from .settings import Settings
    from .view import ViewReader

__all__ = ["AIRFLOW_3", "XComBusBackend"]

log = logging.getLogger(__name__)
T = TypeVar("T")

_POLL_MIN, _POLL_MAX = 0.0005, 0.02
#: Class names of the objects Airflow calls a task instance (3.x runtime, 2.x ORM).
_TI_TYPES = frozenset({"RuntimeTaskInstance", "TaskInstance", "TaskInstancePydantic"})


#: XComs Airflow's own components read straight from its table (the scheduler's
#: NotPreviouslySkippedDep reads the branch/skip decision): stored as Airflow would store
#: them, and published to the topic as well, for the audit log.
AIRFLOW_CONTROL_KEYS: frozenset[str] = frozenset({"skipmixin_key"})

#: The task instance whose XCom Airflow 3 is deleting (set by ``delete`` around ``purge``).
_deleting = threading.local()


class XComBusBackend(_AirflowBaseXCom):  # type: ignore[misc]
    """Airflow's ``[core] xcom_backend`` that publishes every XCom to the xcombus topic."""

    @classmethod
    def serialize_value(cls, value: Any, *, key: str | None = None, task_id: str | None = None,
                        dag_id: str | None = None, run_id: str | None = None,
                        map_index: int | None = None, **_: Any) -> Any:
        """Publish ``value`` and return the reference Airflow stores (JSON value or bytes)."""
        if not (key and task_id and dag_id and run_id):
            raise XComBusError(
                "xcombus.airflow.XComBusBackend.serialize_value needs the XCom's key, dag_id, "
                f"run_id and task_id (got key={key!r}, dag_id={dag_id!r}, run_id={run_id!r}, "
                f"task_id={task_id!r}): it is called by Airflow's XCom.set")
        ti = TaskInstanceKey(dag_id, run_id, task_id, -1 if map_index is None else map_index)
        ref = _runtime().push(ti, key, value)
        if key in AIRFLOW_CONTROL_KEYS:
            return _AirflowBaseXCom.serialize_value(value, key=key, task_id=task_id, dag_id=dag_id,
                                                    run_id=run_id, map_index=map_index)
        return ref.to_builtins() if AIRFLOW_3 else ref.to_json()

    @classmethod
    def deserialize_value(cls, result: Any) -> Any:
        """The value behind a stored reference; anything else as Airflow would read it."""
        ref = parse_reference(result.value)
        if ref is None:
            return _AirflowBaseXCom.deserialize_value(result)
        _check_row(ref, result)
        return _runtime().resolve(ref)

    def orm_deserialize_value(self) -> Any:
        """Airflow 2's light form for the UI and REST listings: the label, never a fetch."""
        try:
            ref = parse_reference(self.value)
        except XComBusError as exc:  # one odd row must not break a whole listing
            return f"[xcombus reference, unreadable: {exc}]"
        if ref is not None:
            return ref.label()
        if AIRFLOW_3:
            return self.value
        return _AirflowBaseXCom.orm_deserialize_value(self)

    if AIRFLOW_3:
        @classmethod
        def delete(cls, key: str, task_id: str, dag_id: str, run_id: str,
                   map_index: int | None = None) -> None:
            """Airflow 3 purges through here: remember whose XCom it is, for ``purge``."""
            _deleting.ti = TaskInstanceKey(dag_id, run_id, task_id, -1 if map_index is None else map_index)
            try:
                super().delete(key, task_id, dag_id, run_id, map_index)
            finally:
                _deleting.ti = None

    @classmethod
    def purge(cls, xcom: Any, *args: Any, **kwargs: Any) -> None:
        """A new try deletes this XCom: publish one clear of its task instance."""
        try:
            ref = parse_reference(getattr(xcom, "value", None))
        except XComBusError as exc:  # never block a task's next tries over one stored value
            log.warning("xcombus: not clearing after a stored value that cannot be read: %s", exc)
            return
        if ref is None:
            return
        owner: TaskInstanceKey | None = getattr(_deleting, "ti", None)  # Airflow 3
        dag_id, run_id, task_id, map_index = (
            getattr(xcom, name, None) for name in ("dag_id", "run_id", "task_id", "map_index"))
        if isinstance(map_index, int) and None not in (dag_id, run_id, task_id):
            owner = TaskInstanceKey(str(dag_id), str(run_id), str(task_id), map_index)  # 2.10's row
        if owner is not None and ref.ti != owner:
            log.warning("xcombus: the XCom %r of %s holds a reference to %s: not clearing another "
                        "task instance (a reference written by hand?)", ref.key, tuple(owner), ref.where)
            return
        _runtime().clear(ref)


def _check_row(ref: XComReference, result: Any) -> None:
    """Refuse a reference stored under another XCom than the one it names, where Airflow
    says which XCom it read (2.10 rows carry the identity, 3.x results the key)."""
    stored_as = tuple(getattr(result, name, None) for name in ("dag_id", "run_id", "task_id", "map_index"))
    named = (ref.dag_id, ref.run_id, ref.task_id, ref.map_index)
    key = getattr(result, "key", None)
    if (None not in stored_as and stored_as != named) or (isinstance(key, str) and key != ref.key):
        raise XComSerializationError(
            f"the XCom {key!r} of {stored_as} holds a reference to {ref.where}: refusing to read "
            "another XCom's value through it (a reference written by hand?)")


# -- the task process's connection to xcombus -------------------------------------------

class _Runtime:
    """Everything one process needs to push and pull, started lazily and reused.

    Airflow calls the backend synchronously (possibly from several threads): the async bus
    lives on one event loop that the calling thread runs for the length of each call, one
    thread at a time, within a bound.
    """

    def __init__(self) -> None:
        from .backends import load_backend
        from .settings import Settings

        self.pid = os.getpid()
        self.settings: Settings = Settings.from_env()
        self.codec: type[XComCodec] = load_backend(self.settings)
        self._lock = threading.Lock()  # the loop, the fetcher, the counters
        self._start_lock = threading.Lock()  # held while the bus connects
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bus: XComBus | None = None
        self._fetcher: EventFetcher | None = None
        self._reader: ViewReader | None = None
        self._reader_lock = threading.Lock()
        self._drive_lock = threading.Lock()  # one thread runs the loop at a time
        self._closed = False
        #: task instance -> offset of the last clear this process published for it.
        self._cleared: dict[TaskInstanceKey, int] = {}
        #: Types already reported as written with Airflow's serde (logged once each).
        self._airflow_serde_types: set[str] = set()
        #: What this process did, logged at exit: pushes, clears, reads from the view,
        #: records fetched from the topic.
        self.counts = {"pushes": 0, "clears": 0, "view_reads": 0, "topic_reads": 0}
        s = self.settings
        self._bound = s.connect_timeout * 3 + max(s.push_timeout, s.pull_timeout) + 5

    def _count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    # -- the loop
    def _call(self, make: Any, bound: float | None = None) -> Any:
        """Run ``make()`` (a coroutine) on the runtime's loop, driven by the calling thread,
        and return its result, bounded.

        The calling thread runs the loop itself rather than handing the coroutine to a loop
        thread: every push waits for the broker, and each cross-thread hand-off adds a wake-up
        on both sides of that wait. Nothing runs on the loop between calls, which suits a
        producer that only ever waits for its own requests.
        """
        bound = self._bound if bound is None else bound
        loop = self._ensure_loop()

        async def bounded() -> Any:
            async with asyncio.timeout(bound):
                return await make()

        if asyncio._get_running_loop() is None:
            outcome = self._drive(loop, bounded)
        else:  # async code blocking its own loop on a sync Airflow call: drive ours elsewhere
            box: list[Any] = []
            worker = threading.Thread(target=lambda: box.append(self._drive(loop, bounded)),
                                      name="xcombus-airflow")
            worker.start()
            worker.join()
            outcome = box[0]
        if isinstance(outcome, _Failed):
            error = outcome.error
            if isinstance(error, TimeoutError) and not isinstance(error, XComBusError):
                raise XComTimeoutError(f"xcombus did not answer within {bound:g}s") from None
            raise error
        return outcome

    def _drive(self, loop: asyncio.AbstractEventLoop, bounded: Any) -> Any:
        """Run ``loop`` in this thread until ``bounded()`` is done; one thread at a time."""
        with self._drive_lock:
            try:
                return loop.run_until_complete(bounded())
            except Exception as exc:  # re-raised by _call, in the caller's thread
                return _Failed(exc)

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise XComClosedError("xcombus was closed in this process (it is exiting)")
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                atexit.register(self.close)
            return self._loop

    def bus(self) -> XComBus:
        """The producer side, connected on first use (the topic must exist)."""
        bus = self._bus
        if bus is not None:
            return bus
        with self._start_lock:  # other threads wait for this connection, then share it
            if self._bus is None:
                from .bus import XComBus

                fresh = XComBus(self.settings, create_topic=False)
                self._call(fresh.start)  # a failed start leaves nothing behind to reuse
                self._bus = fresh
                log.info("xcombus: publishing XComs to topic %r on %s", self.settings.topic,
                         self.settings.bootstrap_servers)
            return self._bus

    # -- push
    def push(self, ti: TaskInstanceKey, key: str, value: Any) -> XComReference:
        ti = ti.validated()
        data, codec = self._serialize(ti, key, value)
        try_number, logical_date = task_facts(ti)
        bus = self.bus()
        receipt = self._call(lambda: bus.push_serialized(
            ti, key, data, codec=codec, try_number=try_number, logical_date=logical_date))
        self._count("pushes")
        if receipt.offset < 0:
            raise XComPublishError(
                f"XCom {key!r} is durable on {receipt.topic} partition {receipt.partition}, but the "
                "broker did not report its offset (a retried batch), so no reference can point at "
                "it: run the task again")
        return XComReference(
            dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, map_index=ti.map_index, key=key,
            try_number=try_number, topic=receipt.topic, partition=receipt.partition,
            offset=receipt.offset, size=len(data), value_size=_value_size(data),
            sha256=hashlib.sha256(data).hexdigest(), codec=codec, type=type(value).__qualname__,
            preview=make_preview(value, self.settings.preview_bytes))

    def _serialize(self, ti: TaskInstanceKey, key: str, value: Any) -> tuple[bytes, str]:
        codec = self.codec
        try:
            return codec.serialize_value(value, key=key, task_id=ti.task_id, dag_id=ti.dag_id,
                                         run_id=ti.run_id, map_index=ti.map_index), codec.codec
        except XComUnsupportedTypeError as refused:
            # An unchanged DAG may push what Airflow's serde handles and xcombus's codec
            # does not (pendulum datetimes, numpy scalars, pydantic models...): keep it
            # working, with the codec's offload, when the codec can read such values back.
            from .backends import AIRFLOW_SERDE_CODEC

            if not self.codec.can_read(AIRFLOW_SERDE_CODEC):
                raise
            try:
                raw = _airflow_dumps(value)
            except Exception as exc:
                raise XComSerializationError(
                    f"{refused}; Apache Airflow's own serializer refused it too ({exc})") from refused
            kind = f"{type(value).__module__}.{type(value).__qualname__}"
            if kind not in self._airflow_serde_types:
                self._airflow_serde_types.add(kind)
                log.info("xcombus: %s values are written with Airflow's serde (codec %s): %s",
                         kind, AIRFLOW_SERDE_CODEC, refused)
            return codec.offload(raw, key=key, task_id=ti.task_id, dag_id=ti.dag_id,
                                 run_id=ti.run_id, map_index=ti.map_index), AIRFLOW_SERDE_CODEC

    # -- clear
    def clear(self, ref: XComReference) -> None:
        ti = ref.ti
        if ref.topic != self.settings.topic:
            log.warning("xcombus: not clearing %s: it lives on topic %r, this process publishes "
                        "to %r", ref.where, ref.topic, self.settings.topic)
            return
        with self._lock:
            if ref.offset < self._cleared.get(ti, -1):
                return  # a clear this process already published covers this version
        # Unknown running try: clear as the referenced try. That clear hides every row of the
        # task instance and can never fence the running try (which is at least that one); a
        # guess one higher would fence every push of a re-run that keeps its try number
        # (`airflow tasks test`).
        current, _ = task_facts(ti, default_try=ref.try_number)
        bus = self.bus()
        receipt = self._call(lambda: bus.clear(ti, try_number=current))
        with self._lock:
            self._cleared[ti] = max(receipt.offset, self._cleared.get(ti, -1))
            self.counts["clears"] += 1

    # -- pull
    def resolve(self, ref: XComReference) -> Any:
        """The value a reference points at, checked against its identity and SHA-256."""
        if ref.topic != self.settings.topic:
            # A reference names its topic; reading any topic it names would let a stored
            # value (Airflow 3 stores REST writes raw) reach data this deployment never wrote.
            raise XComSerializationError(
                f"{ref.where} is on topic {ref.topic!r}, and this deployment reads "
                f"{self.settings.topic!r} (XCOMBUS_TOPIC): refusing a reference to another topic")
        has_view = os.path.exists(self.settings.view_path)  # a host a materializer serves
        record, overridden = self._from_view(ref) if has_view else (self._from_topic(ref), False)
        if record is None:
            return None  # deleted by an override: what Airflow answers for an XCom that is not there
        if not overridden:  # an override is a deliberate new version, not the one referenced
            ref.check(record)
        from .backends import AIRFLOW_SERDE_CODEC, airflow_serde_loads

        if not self.codec.can_read(record.codec) and record.codec == AIRFLOW_SERDE_CODEC:
            return airflow_serde_loads(record)  # Airflow is here, whatever codec is configured
        return self.codec.deserialize_value(record)

    def _view(self) -> ViewReader:
        if self._reader is None:
            from .view import ViewReader

            self._reader = ViewReader(self.settings.view_path, topic=self.settings.topic)
        return self._reader

    def _from_view(self, ref: XComReference) -> tuple[XComRecord | None, bool]:
        """The referenced version from the view (or the log when the view moved on), or the
        override that replaced it since: ``(record, overridden)``; ``(None, True)`` when an
        override deleted it."""
        deadline = time.monotonic() + self.settings.pull_timeout
        delay = _POLL_MIN
        while True:
            with self._reader_lock:  # held per query, never across the wait
                applied = self._view().offsets().get(ref.partition, 0)
            if applied > ref.offset:
                break
            if time.monotonic() > deadline:
                raise XComTimeoutError(
                    f"the view at {self.settings.view_path} has applied partition {ref.partition} "
                    f"up to offset {applied}, and {ref.where} needs it past {ref.offset}: is the "
                    f"materializer running (xcombus materialize)? It did not catch up within "
                    f"{self.settings.pull_timeout:g}s (XCOMBUS_PULL_TIMEOUT)")
            time.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)
        with self._reader_lock:
            record = self._view().get(ref.dag_id, ref.run_id, ref.task_id, ref.map_index, ref.key)
        if record is not None and (record.partition, record.offset) == (ref.partition, ref.offset):
            self._count("view_reads")
            return record, False
        decided, overridden = self._override_since(ref, record)
        if decided:
            return overridden, True
        # The view holds another version now (a later push of the key, a clear): the one
        # Airflow refers to is still on the log.
        return self._from_topic(ref), False

    def _override_since(self, ref: XComReference,
                        current: XComRecord | None) -> tuple[bool, XComRecord | None]:
        """``(True, the view's row)`` when the XCom's latest change after the referenced
        version is an override (``xcombus set/delete/revert``; the row is None for a delete),
        else ``(False, None)``: the reference is read as it is.

        Tasks read an overridden value exactly like a task-written one, as they do outside
        Airflow: Airflow's table still holds the reference to the version the override
        replaced, so the view's version index says what happened since."""
        with self._reader_lock:
            versions = self._view().versions(ref.dag_id, ref.run_id, ref.task_id, ref.map_index, ref.key)
        later = [v for v in versions
                 if v.partition == ref.partition and v.offset > ref.offset and not v.fenced]
        if not later or later[-1].kind != "override":
            return False, None
        last = later[-1]
        if current is not None and (current.partition, current.offset) == (last.partition, last.offset):
            self._count("view_reads")
            log.info("xcombus: %s was overridden by %s at %s@%d: reading the override", ref.where,
                     last.actor, ref.topic, last.offset)
            return True, current
        if current is None and last.size is None:
            log.warning("xcombus: %s was deleted by %s (an override at %s@%d): the pull reads None",
                        ref.where, last.actor, ref.topic, last.offset)
            return True, None
        return False, None

    def _from_topic(self, ref: XComReference) -> XComRecord:
        from .events import Push, decode_event, decode_ti_key
        from .fetch import EventFetcher
        from .records import XComRecord

        with self._lock:
            if self._fetcher is None:
                self._fetcher = EventFetcher(self.settings)
            fetcher = self._fetcher
        try:
            raw = self._call(lambda: fetcher.fetch(ref.partition, ref.offset))
        except XComNotFoundError as exc:
            raise XComNotFoundError(f"cannot read {ref.where}: {exc}") from exc
        self._count("topic_reads")
        try:
            ti = decode_ti_key(raw.key)
            event = decode_event(raw.value)
        except Exception as exc:
            raise XComSerializationError(f"the event of {ref.where} cannot be decoded: {exc}") from exc
        if type(event) is not Push:
            raise XComSerializationError(f"the event at the position of {ref.where} is a "
                                         f"{type(event).__name__.lower()}, not a push")
        return XComRecord(*ti, event.key, event.value, event.codec, event.ts, event.logical_date,
                          event.producer, event.try_number, raw.partition, raw.offset)

    # -- exit
    def close(self) -> None:
        """Flush and disconnect (at interpreter exit). Safe to call twice; later calls of
        the backend in this process raise XComClosedError."""
        with self._lock:
            if self._closed or os.getpid() != self.pid:
                return
            self._closed = True
            loop = self._loop
        if loop is None:
            return
        bus, fetcher = self._bus, self._fetcher

        async def shutdown() -> None:
            try:
                if bus is not None:
                    await bus.aclose()
            finally:
                if fetcher is not None:
                    await fetcher.aclose()

        log.info("xcombus: %(pushes)d pushes, %(clears)d clears, %(view_reads)d reads from the "
                 "view, %(topic_reads)d records fetched from the topic", self.counts)
        bound = self.settings.push_timeout + self.settings.connect_timeout
        try:
            if self._drive_lock.acquire(timeout=bound):  # a stuck thread must not hang the exit
                try:
                    loop.run_until_complete(asyncio.wait_for(shutdown(), bound))
                    loop.close()
                finally:
                    self._drive_lock.release()
            else:
                log.warning("xcombus: another thread kept the connection to Kafka busy for %gs "
                            "at exit: closing without flushing it", bound)
        except Exception:
            log.exception("xcombus: closing the connection to Kafka failed")
        finally:
            with self._reader_lock:
                if self._reader is not None:
                    self._reader.close()
                    self._reader = None


class _Failed:
    """An exception raised on the loop, carried back to the calling thread."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _value_size(data: bytes) -> int:
    """The serialized value's size: ``len(data)``, or the size an object reference records."""
    if len(data) < 4096 and data.startswith(b'{"__type__":"xcombus.objref"'):
        from .backends import ObjectRef

        with contextlib.suppress(Exception):
            return ObjectRef.from_tree(msgspec.json.decode(data)).size
    return len(data)


_state_lock = threading.Lock()
_current: _Runtime | None = None


def _runtime() -> _Runtime:
    """This process's runtime (a forked child gets its own: it must not share the parent's
    connections)."""
    global _current
    rt = _current
    if rt is not None and rt.pid == os.getpid():
        return rt
    with _state_lock:
        if _current is None or _current.pid != os.getpid():
            _current = _Runtime()
        return _current


def _forget_after_fork() -> None:
    global _current
    _current = None


os.register_at_fork(after_in_child=_forget_after_fork)


# -- what the running task says about itself ---------------------------------------------

def _is_ti(obj: Any, ti: TaskInstanceKey) -> bool:
    if type(obj).__name__ not in _TI_TYPES:
        return False
    try:
        return (obj.dag_id, obj.run_id, obj.task_id, getattr(obj, "map_index", -1)) == tuple(ti)
    except Exception:  # a detached ORM object, a half-built model
        return False


def _find_ti(ti: TaskInstanceKey) -> Any:
    """The running task instance object, if this call comes from inside it.

    Airflow 3 pushes return values and purges before a new try outside the task context,
    and ``airflow dags test`` runs every task in one process (so AIRFLOW_CTX_* may belong
    to the previous task): the caller's frames hold the task instance in every case.
    """
    frame: types.FrameType | None = sys._getframe(1)
    for _ in range(100):
        if frame is None:
            break
        local = frame.f_locals
        for name in ("ti", "task_instance", "self"):
            obj = local.get(name)
            if obj is not None and _is_ti(obj, ti):
                return obj
        frame = frame.f_back
    with contextlib.suppress(Exception):  # Airflow's documented way, inside execute()
        if AIRFLOW_3:
            from airflow.sdk import get_current_context
        else:
            from airflow.operators.python import get_current_context
        obj = get_current_context().get("ti")
        if obj is not None and _is_ti(obj, ti):
            return obj
    return None


def _to_us(moment: Any) -> int | None:
    if isinstance(moment, datetime) and moment.tzinfo is not None:
        return int(moment.timestamp() * 1_000_000)
    if isinstance(moment, str) and moment:
        with contextlib.suppress(ValueError):
            return _to_us(datetime.fromisoformat(moment))
    return None


def task_facts(ti: TaskInstanceKey, *, default_try: int = 1) -> tuple[int, int | None]:
    """The running try number of ``ti`` and its run's logical date (µs), from Airflow.

    Sources, in order: the task instance object in the caller's frames (or Airflow's
    current context), then the ``AIRFLOW_CTX_*`` variables when they name this task
    instance, then ``default_try`` and no date.
    """
    obj = _find_ti(ti)
    if obj is not None:
        try_number = getattr(obj, "try_number", None)
        logical: Any = None
        with contextlib.suppress(Exception):
            context = getattr(obj, "_ti_context_from_server", None)
            logical = context.dag_run.logical_date if context is not None else obj.execution_date
        if isinstance(try_number, int) and try_number >= 0:
            return max(try_number, 1), _to_us(logical)
    env = os.environ
    if (env.get("AIRFLOW_CTX_DAG_ID"), env.get("AIRFLOW_CTX_DAG_RUN_ID"),
            env.get("AIRFLOW_CTX_TASK_ID")) == (ti.dag_id, ti.run_id, ti.task_id):
        raw_try = env.get("AIRFLOW_CTX_TRY_NUMBER", "")
        logical = env.get("AIRFLOW_CTX_LOGICAL_DATE") or env.get("AIRFLOW_CTX_EXECUTION_DATE")
        if raw_try.isdigit():
            return max(int(raw_try), 1), _to_us(logical)
    return default_try, None


# -- Airflow's own serde, for values xcombus's codec refuses -----------------------------

def _airflow_dumps(value: Any) -> bytes:
    import json

    if AIRFLOW_3:
        from airflow.sdk.serde import serialize

        return json.dumps(serialize(value)).encode()
    from airflow.utils.json import XComEncoder

    return json.dumps(value, cls=XComEncoder).encode()
