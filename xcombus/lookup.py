"""Lookup queries on the view: filters, ordering, paging, typed entries.

    with XComLookup() as lookup:
        for entry in lookup.entries(dag_id="etl", since=datetime(2026, 11, 1, tzinfo=UTC)):
            print(entry.task_id, entry.key, entry.value)        # the light form

Values come back in their light form (the backend's ``orm_deserialize_value``, which
never fetches remote payloads) unless ``values="full"`` asks for ``deserialize_value``.
Reads are eventual: they show the view as it is (a pull is the read-your-writes path).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from ._time import from_us, to_us
from .backends import BaseXCom, load_backend
from .errors import XComQueryError
from .records import XComRecord
from .settings import Settings, settings_with
from .view import ViewReader

__all__ = ["DagRunSummary", "DagSummary", "TaskInstanceSummary", "Values", "XComEntry", "XComLookup"]

#: The form of the values a lookup returns: the backend's light form
#: (``orm_deserialize_value``), the full value (``deserialize_value``), or none.
Values = Literal["light", "full", "none"]


class XComEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One XCom as lookups return it."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    key: str
    #: The light form, the full value, or None (``values="none"``).
    value: Any
    timestamp: datetime
    logical_date: datetime | None
    producer: str
    try_number: int
    codec: str
    partition: int
    offset: int


class DagSummary(msgspec.Struct, frozen=True):
    """A DAG that has XComs in the view: how many runs and XComs."""

    dag_id: str
    runs: int
    xcoms: int


class DagRunSummary(msgspec.Struct, frozen=True):
    """A DAG run that has XComs: its logical date, how many XComs, the time of the last push."""

    run_id: str
    logical_date: datetime | None
    xcoms: int
    last_push: datetime


class TaskInstanceSummary(msgspec.Struct, frozen=True):
    """A task instance that has XComs: how many, and the time of the last push."""

    task_id: str
    map_index: int
    xcoms: int
    last_push: datetime


class XComLookup:
    """Read-only queries on one view file (a context manager; safe beside a materializer)."""

    def __init__(self, settings: Settings | None = None, *, backend: type[BaseXCom] | None = None,
                 **overrides: Any) -> None:
        self.settings = settings_with(settings, **overrides)
        self.backend = backend or load_backend(self.settings)
        self._reader: ViewReader | None = None

    @property
    def reader(self) -> ViewReader:
        """The underlying ViewReader, opened on first use."""
        if self._reader is None:
            self._reader = ViewReader(self.settings.view_path)
        return self._reader

    def __enter__(self) -> XComLookup:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the view file. Safe to call twice."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def entry(self, record: XComRecord, values: Values = "light") -> XComEntry:
        """An XComRecord as an XComEntry, with its value in the asked form."""
        if values == "light":
            value = self.backend.orm_deserialize_value(record)
        elif values == "full":
            value = self.backend.deserialize_value(record)
        elif values == "none":
            value = None
        else:
            raise XComQueryError(f"values must be 'light', 'full' or 'none', not {values!r}")
        return XComEntry(dag_id=record.dag_id, run_id=record.run_id, task_id=record.task_id,
                         map_index=record.map_index, key=record.key, value=value,
                         timestamp=from_us(record.timestamp),
                         logical_date=from_us(record.logical_date), producer=record.producer,
                         try_number=record.try_number, codec=record.codec,
                         partition=record.partition, offset=record.offset)

    def entries(self, *, dag_id: str | None = None, run_id: str | None = None,
             task_id: str | None = None, key: str | None = None, map_index: int | None = None,
             since: datetime | int | None = None, until: datetime | int | None = None,
             order_by: Literal["identity", "timestamp"] = "identity", descending: bool = False,
             limit: int = 100, offset: int = 0, values: Values = "light",
             try_number: int | None = None) -> list[XComEntry]:
        """XComs matching every given filter (``None`` matches all), one page of them.

        ``try_number`` keeps the rows written by that try (an override's row carries its
        task instance's current try)."""
        records = self.reader.entries(dag_id=dag_id, run_id=run_id, task_id=task_id, key=key,
                                   map_index=map_index, since=to_us(since), until=to_us(until),
                                   order_by=order_by, descending=descending, limit=limit,
                                   offset=offset, try_number=try_number)
        return [self.entry(r, values) for r in records]

    def count(self, *, dag_id: str | None = None, run_id: str | None = None,
              task_id: str | None = None, key: str | None = None, map_index: int | None = None,
              since: datetime | int | None = None, until: datetime | int | None = None,
              try_number: int | None = None) -> int:
        """How many XComs match (the total behind paged entries)."""
        return self.reader.count(dag_id=dag_id, run_id=run_id, task_id=task_id, key=key,
                                 map_index=map_index, since=to_us(since), until=to_us(until),
                                 try_number=try_number)

    def get(self, dag_id: str, run_id: str, task_id: str, key: str, map_index: int = -1, *,
            values: Values = "full") -> XComEntry | None:
        """One XCom, or None."""
        record = self.reader.get(dag_id, run_id, task_id, map_index, key)
        return None if record is None else self.entry(record, values)

    def dags(self) -> list[DagSummary]:
        """Every DAG with XComs, by dag_id."""
        return [DagSummary(dag_id, runs, n) for dag_id, runs, n in self.reader.dags()]

    def runs(self, dag_id: str) -> list[DagRunSummary]:
        """The runs of a DAG that have XComs, newest first."""
        return [DagRunSummary(run_id, from_us(logical), n, from_us(last))
                for run_id, logical, n, last in self.reader.runs(dag_id)]

    def task_instances(self, dag_id: str, run_id: str) -> list[TaskInstanceSummary]:
        """The task instances of a run that have XComs."""
        return [TaskInstanceSummary(task_id, map_index, n, from_us(last))
                for task_id, map_index, n, last in self.reader.task_instances(dag_id, run_id)]
