"""Typed records handed out by reads and handed to backends."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Receipt", "XComRecord"]


class Receipt(NamedTuple):
    """Where a push landed: durable at (topic, partition, offset) when xcom_push returns."""

    topic: str
    partition: int
    offset: int


class XComRecord(NamedTuple):
    """One materialized XCom: identity, the stored (serialized) value, and its provenance.

    ``value`` is the backend's serialized form; a backend's ``deserialize_value(record)``
    turns it into the Python value (as Airflow's backends receive the XCom row).
    """

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    key: str
    value: bytes
    codec: str
    #: Producer time of the push, µs since the epoch (UTC).
    timestamp: int
    logical_date: int | None
    producer: str
    try_number: int
    partition: int
    offset: int
