"""The task API: ``@task``, ``current_task_instance()`` and the sync facade.

    @task
    async def extract() -> dict:
        return {"rows": 42}               # pushed under "return_value"

    @task(multiple_outputs=True)
    def split() -> dict:                 # plain functions run in a worker thread
        ti = current_task_instance()     # a SyncTaskInstance here: no await needed
        rows = ti.xcom_pull(task_ids="extract")
        return {"head": rows, "count": 1}

    await extract.run(bus, "my_dag", "manual__1")

Running a task first publishes a ``clear`` for its task instance, so no reader ever sees
values of an earlier try mixed with the new one; the task's events are ordered after it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import threading
from collections.abc import Callable, Coroutine, Iterable
from datetime import datetime
from typing import Any, Generic, ParamSpec, TypeVar, overload

from .bus import TaskInstance, XComBus
from .errors import XComBusError, XComClosedError, XComTimeoutError
from .events import RETURN_VALUE_KEY
from .pull_rules import NOTSET, NotSet
from .records import Receipt
from .settings import Consistency, Settings

__all__ = ["SyncTaskInstance", "SyncXComBus", "Task", "current_task_instance", "task"]

P = ParamSpec("P")
R = TypeVar("R")
_TI = TypeVar("_TI", "TaskInstance", "SyncTaskInstance")

_current: contextvars.ContextVar[TaskInstance | SyncTaskInstance | None] = contextvars.ContextVar(
    "xcombus_current_task_instance", default=None)


@overload
def current_task_instance() -> TaskInstance | SyncTaskInstance: ...
@overload
def current_task_instance(kind: type[_TI]) -> _TI: ...


def current_task_instance(kind: type[Any] | None = None) -> Any:
    """The task instance running in this context (async tasks get a TaskInstance, plain
    functions a SyncTaskInstance); raise XComBusError outside a running task.

    ``kind`` (``TaskInstance`` or ``SyncTaskInstance``) narrows the type for a type
    checker, and raises XComBusError if the running task got the other kind.
    """
    ti = _current.get()
    if ti is None:
        raise XComBusError("no task is running here: current_task_instance() works inside a "
                           "function run by Task.run() (use @xcombus.task)")
    if kind is not None and not isinstance(ti, kind):
        raise XComBusError(
            f"this task got a {type(ti).__name__}, not a {kind.__name__}: async functions get a "
            "TaskInstance (await its methods), plain functions a SyncTaskInstance")
    return ti


class SyncTaskInstance:
    """A blocking view of a TaskInstance, for plain (non-async) task code.

    Each call runs the async method on the bus's event loop (another thread) and waits for
    it; calling it from that loop's own thread would deadlock, so that is refused.
    """

    def __init__(self, ti: TaskInstance, loop: asyncio.AbstractEventLoop) -> None:
        self.async_ti = ti
        self._loop = loop

    def __getattr__(self, name: str) -> Any:  # dag_id, run_id, task_id, map_index, ...
        return getattr(self.async_ti, name)

    def __repr__(self) -> str:
        return f"<Sync{self.async_ti!r}"[:-1] + ">"

    def _call(self, coro: Coroutine[Any, Any, R], timeout: float) -> R:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            coro.close()
            raise XComBusError("SyncTaskInstance was called on its own event loop: use the "
                               "async TaskInstance (await ti.xcom_push(...)) in async code")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise XComTimeoutError(f"the bus did not answer within {timeout:g}s") from None

    def _bound(self) -> float:
        s = self.async_ti.bus.settings
        return s.connect_timeout + max(s.push_timeout, s.pull_timeout) + 5

    def xcom_push(self, key: str, value: Any) -> Receipt:
        """Push ``value`` under ``key``; returns once durable on the broker."""
        return self._call(self.async_ti.xcom_push(key, value), self._bound())

    def xcom_clear(self) -> Receipt:
        """Delete every XCom of this task instance."""
        return self._call(self.async_ti.xcom_clear(), self._bound())

    def xcom_pull(self, task_ids: str | Iterable[str] | None = None, dag_id: str | None = None,
                  key: str = RETURN_VALUE_KEY, include_prior_dates: bool = False, *,
                  map_indexes: int | Iterable[int] | NotSet | None = NOTSET, default: Any = None,
                  run_id: str | None = None, consistency: Consistency | None = None,
                  try_number: int | None = None) -> Any:
        """Pull XComs with the same rules as :meth:`TaskInstance.xcom_pull` (``try_number``:
        what that try pushed)."""
        return self._call(self.async_ti.xcom_pull(
            task_ids, dag_id, key, include_prior_dates, map_indexes=map_indexes, default=default,
            run_id=run_id, consistency=consistency, try_number=try_number), self._bound())


class Task(Generic[P, R]):
    """A function that, run as a task instance, pushes its return value as XComs."""

    def __init__(self, fn: Callable[P, R], *, task_id: str | None = None,
                 multiple_outputs: bool = False, do_xcom_push: bool = True) -> None:
        self.fn = fn
        self.task_id = task_id or fn.__name__
        self.multiple_outputs = multiple_outputs
        self.do_xcom_push = do_xcom_push
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the plain function (no XComs): handy in unit tests."""
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.task_id}>"

    async def run(self, bus: XComBus, dag_id: str, run_id: str, *args: Any, map_index: int = -1,
                  try_number: int = 1, logical_date: datetime | None = None, **kwargs: Any) -> Any:
        """Run one try of this task instance: clear, call the function, push its result."""
        ti = bus.task_instance(dag_id, run_id, self.task_id, map_index, try_number=try_number,
                               logical_date=logical_date)
        await ti.xcom_clear()  # a new try starts clean; ordered before everything it pushes
        if inspect.iscoroutinefunction(self.fn):
            token = _current.set(ti)
            try:
                result = await self.fn(*args, **kwargs)
            finally:
                _current.reset(token)
        else:
            sync_ti = SyncTaskInstance(ti, asyncio.get_running_loop())

            def call() -> Any:  # runs in a worker thread, with a copy of this context
                _current.set(sync_ti)
                return self.fn(*args, **kwargs)

            result = await asyncio.to_thread(call)
        await self._push_result(ti, result)
        return result

    async def _push_result(self, ti: TaskInstance, result: Any) -> None:
        if not self.do_xcom_push:
            return
        if self.multiple_outputs:
            if not isinstance(result, dict) or not all(isinstance(k, str) for k in result):
                raise XComBusError(
                    f"task {self.task_id!r} has multiple_outputs=True, so it must return a dict "
                    f"with str keys, not {type(result).__qualname__}")
            await asyncio.gather(*(ti.xcom_push(k, v) for k, v in result.items()))
        # As in Airflow, None is not pushed - except by a mapped instance, whose slot in
        # the downstream fan-in must still exist.
        if result is not None or ti.map_index >= 0:
            await ti.xcom_push(RETURN_VALUE_KEY, result)


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...
@overload
def task(*, task_id: str | None = None, multiple_outputs: bool = False,
         do_xcom_push: bool = True) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(fn: Callable[P, R] | None = None, /, *, task_id: str | None = None,
         multiple_outputs: bool = False, do_xcom_push: bool = True) -> Any:
    """Make a function a task: ``@task`` or ``@task(multiple_outputs=True, ...)``."""
    def wrap(f: Callable[P, R]) -> Task[P, R]:
        return Task(f, task_id=task_id, multiple_outputs=multiple_outputs, do_xcom_push=do_xcom_push)

    return wrap(fn) if fn is not None else wrap


class SyncXComBus:
    """XComBus for plain synchronous programs: the bus runs on its own event-loop thread.

        with SyncXComBus() as bus:
            ti = bus.task_instance("dag", "run", "task")
            ti.xcom_push("k", 1)
    """

    def __init__(self, settings: Settings | None = None, *, materialize: bool = False,
                 **overrides: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="xcombus-loop",
                                        daemon=True)
        self.bus = XComBus(settings, materialize=materialize, **overrides)
        self._started = False

    def _wait(self, coro: Coroutine[Any, Any, R]) -> R:
        bound = self.bus.settings.connect_timeout * 3 + self.bus.settings.push_timeout + 5
        try:
            return asyncio.run_coroutine_threadsafe(coro, self._loop).result(bound)
        except TimeoutError:
            raise XComTimeoutError(f"the bus did not answer within {bound:g}s") from None

    def __enter__(self) -> SyncXComBus:
        if self._started:
            raise XComClosedError("a SyncXComBus can be entered once")
        self._started = True
        self._thread.start()
        try:
            self._wait(self.bus.start())
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, *,
                      try_number: int = 1, logical_date: datetime | None = None) -> SyncTaskInstance:
        """A blocking task-instance handle."""
        return SyncTaskInstance(self.bus.task_instance(dag_id, run_id, task_id, map_index,
                                                       try_number=try_number,
                                                       logical_date=logical_date), self._loop)

    def run_task(self, t: Task[Any, Any], dag_id: str, run_id: str, *args: Any, **kwargs: Any) -> Any:
        """Run a task (see :meth:`Task.run`) and wait for it."""
        return self._wait(t.run(self.bus, dag_id, run_id, *args, **kwargs))

    def close(self) -> None:
        """Flush and close the bus, then stop the loop thread. Safe to call twice."""
        if self._thread.is_alive():
            try:
                self._wait(self.bus.aclose())
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(10)
        if not self._loop.is_closed() and not self._loop.is_running():
            self._loop.close()
