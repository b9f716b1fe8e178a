"""Airflow 3's ``xcom_pull`` rules as pure functions (docs/semantics.md).

A pull is answered in three steps: :func:`plan_pull` turns the caller's arguments into the
rows to ask for (which DAG run, which tasks, which map indexes), the bus reads those rows in
one query, and :func:`shape_pull` shapes the values into what Airflow returns: a bare
value, a list, or the default. Neither step touches Kafka or the view, so every rule is
unit-tested without a broker (tests/unit/test_pull_rules.py).

The shapes, in short:

- ``map_indexes`` not given (:data:`NOTSET`): every map index of each task. One task gives
  its value, or the list of its mapped values in map-index order, or ``default`` when it
  has none; several tasks give one flat list in task order, where a task with nothing
  contributes one ``None``.
- ``map_indexes`` given (an int, ``None`` for the unmapped instance, or several): one value
  per (task, map index) pair in product order, ``default`` for a missing pair; a bare value
  when both the task and the map index were given as single values.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any, Final, NamedTuple, Protocol, final

from .events import TaskInstanceKey

__all__ = ["NOTSET", "NotSet", "PullPlan", "PulledRow", "plan_pull", "shape_pull"]


@final
class NotSet:
    """The type of :data:`NOTSET`: an argument that was not given (Airflow's ``NOTSET``),
    as opposed to an explicit ``None``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NOTSET"


#: Marks ``map_indexes`` as not given (Airflow's ``NOTSET``): read every map index.
NOTSET: Final = NotSet()


class PullPlan(NamedTuple):
    """What one pull reads, and how its answer is shaped."""

    dag_id: str
    run_id: str
    #: The tasks to read, in the order the answer lists them.
    task_ids: list[str]
    #: The map indexes to read, in answer order; None: every map index (NOTSET).
    map_indexes: list[int] | None
    #: A single task id was asked for (or none: the pulling task's own).
    one_task: bool
    #: A single map index was asked for (an int, or None for the unmapped instance).
    one_index: bool
    #: The pull reads the pulling task instance's own DAG run.
    same_run: bool


class PulledRow(Protocol):
    """What shaping needs of a row read for a pull (an ``XComRecord`` has it)."""

    @property
    def task_id(self) -> str: ...

    @property
    def map_index(self) -> int: ...


def plan_pull(puller: TaskInstanceKey, task_ids: str | Iterable[str] | None, dag_id: str | None,
              run_id: str | None, map_indexes: int | Iterable[int] | NotSet | None) -> PullPlan:
    """The rows a pull by ``puller`` asks for (``None`` ids mean the puller's own)."""
    same_run = run_id in (None, puller.run_id) and dag_id in (None, puller.dag_id)
    one_task = task_ids is None or isinstance(task_ids, str)
    tasks = [task_ids or puller.task_id] if isinstance(task_ids, str | None) else list(task_ids)
    indexes: list[int] | None
    if isinstance(map_indexes, NotSet):
        one_index, indexes = False, None
    elif map_indexes is None or isinstance(map_indexes, int):
        one_index, indexes = True, [-1 if map_indexes is None else map_indexes]
    else:
        one_index, indexes = False, list(map_indexes)
    return PullPlan(dag_id or puller.dag_id, run_id or puller.run_id, tasks, indexes, one_task,
                    one_index, same_run)


def shape_pull(plan: PullPlan, rows: Sequence[PulledRow], values: Sequence[Any], default: Any) -> Any:
    """The answer to a pull: ``values[i]`` is the value of ``rows[i]``, rows as read (by task,
    then map index)."""
    if plan.map_indexes is None:
        by_task: dict[str, list[Any]] = {}
        for row, value in zip(rows, values, strict=True):
            by_task.setdefault(row.task_id, []).append(value)
        if plan.one_task:
            found = by_task.get(plan.task_ids[0])
            if not found:
                return default
            return found[0] if len(found) == 1 else found
        out: list[Any] = []
        for task in plan.task_ids:
            out.extend(by_task.get(task) or [None])
        return out
    by_pair = dict(zip([(r.task_id, r.map_index) for r in rows], values, strict=True))
    answer = [by_pair.get(pair, default) for pair in itertools.product(plan.task_ids, plan.map_indexes)]
    if plan.one_task and plan.one_index:
        return answer[0]
    return answer
