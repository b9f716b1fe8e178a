"""Airflow's xcom_pull rules, row by row (docs/semantics.md), on the real broker."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from xcombus import NOTSET, Settings, XComBus, XComIdentifierError

pytestmark = pytest.mark.integration

RUN = "manual__2026-11-24T00:00:00+00:00"


@pytest.fixture
async def bus(settings: Settings) -> AsyncIterator[XComBus]:
    async with XComBus(settings, materialize=True) as b:
        yield b


async def push(bus: XComBus, task_id: str, value: object, *, map_index: int = -1, key: str = "return_value",
               run_id: str = RUN, dag_id: str = "dag", logical_date: datetime | None = None) -> None:
    await bus.task_instance(dag_id, run_id, task_id, map_index,
                            logical_date=logical_date).xcom_push(key, value)


def me(bus: XComBus, task_id: str = "me", **kw: object) -> object:
    return bus.task_instance("dag", RUN, task_id, **kw)  # type: ignore[arg-type]


async def test_task_ids_none_means_the_calling_task(bus: XComBus) -> None:
    await push(bus, "me", "mine")
    await push(bus, "other", "theirs")
    assert await me(bus).xcom_pull() == "mine"


async def test_key_defaults_to_return_value_and_other_keys_are_separate(bus: XComBus) -> None:
    await push(bus, "up", 1)
    await push(bus, "up", 2, key="extra")
    assert await me(bus).xcom_pull(task_ids="up") == 1
    assert await me(bus).xcom_pull(task_ids="up", key="extra") == 2


async def test_unmapped_upstream_gives_its_bare_value(bus: XComBus) -> None:
    await push(bus, "up", {"a": 1})
    assert await me(bus).xcom_pull(task_ids="up") == {"a": 1}


async def test_mapped_upstream_gives_a_list_in_map_index_order(bus: XComBus) -> None:
    for i in (2, 0, 3, 1):
        await push(bus, "mapped", f"v{i}", map_index=i)
    assert await me(bus).xcom_pull(task_ids="mapped") == ["v0", "v1", "v2", "v3"]


async def test_mapped_upstream_with_one_instance_collapses_to_its_value(bus: XComBus) -> None:
    await push(bus, "mapped", "only", map_index=0)
    assert await me(bus).xcom_pull(task_ids="mapped") == "only"


async def test_single_task_with_nothing_returns_default(bus: XComBus) -> None:
    assert await me(bus).xcom_pull(task_ids="nothing") is None
    assert await me(bus).xcom_pull(task_ids="nothing", default=42) == 42


async def test_list_of_task_ids_gives_a_list_in_task_order(bus: XComBus) -> None:
    await push(bus, "b", "B")
    await push(bus, "a", "A")
    for i in range(2):
        await push(bus, "m", i, map_index=i)
    assert await me(bus).xcom_pull(task_ids=["b", "a"]) == ["B", "A"]
    assert await me(bus).xcom_pull(task_ids=["m", "a"]) == [0, 1, "A"]
    # A task with nothing contributes one None (Airflow 3), and a one-element list stays a list.
    assert await me(bus).xcom_pull(task_ids=["a", "missing", "b"]) == ["A", None, "B"]
    assert await me(bus).xcom_pull(task_ids=["a"]) == ["A"]


async def test_map_indexes_int_gives_one_value(bus: XComBus) -> None:
    for i in range(3):
        await push(bus, "m", i * 10, map_index=i)
    assert await me(bus).xcom_pull(task_ids="m", map_indexes=2) == 20
    assert await me(bus).xcom_pull(task_ids="m", map_indexes=7, default="d") == "d"


async def test_map_indexes_none_reads_the_unmapped_value(bus: XComBus) -> None:
    await push(bus, "t", "unmapped")
    await push(bus, "t", "mapped", map_index=0)
    assert await me(bus).xcom_pull(task_ids="t", map_indexes=None) == "unmapped"


async def test_map_indexes_list_gives_product_order_with_defaults(bus: XComBus) -> None:
    for t in ("x", "y"):
        for i in range(2):
            await push(bus, t, f"{t}{i}", map_index=i)
    got = await me(bus).xcom_pull(task_ids=["y", "x"], map_indexes=[1, 0, 5], default="-")
    assert got == ["y1", "y0", "-", "x1", "x0", "-"]
    assert await me(bus).xcom_pull(task_ids="x", map_indexes=[1]) == ["x1"]
    assert await me(bus).xcom_pull(task_ids=["x"], map_indexes=0) == ["x0"]


async def test_dag_id_and_run_id_overrides(bus: XComBus) -> None:
    await push(bus, "up", "other dag", dag_id="dag2")
    await push(bus, "up", "other run", run_id="scheduled__2026-01-01T00:00:00+00:00")
    await push(bus, "up", "this run")
    assert await me(bus).xcom_pull(task_ids="up") == "this run"
    assert await me(bus).xcom_pull(task_ids="up", dag_id="dag2") == "other dag"
    assert await me(bus).xcom_pull(task_ids="up", run_id="scheduled__2026-01-01T00:00:00+00:00") == "other run"


async def test_a_pushed_none_is_a_value_not_a_miss(bus: XComBus) -> None:
    await push(bus, "up", None)
    assert await me(bus).xcom_pull(task_ids="up", map_indexes=None, default="d") is None


async def test_include_prior_dates_falls_back_to_the_latest_earlier_run(bus: XComBus) -> None:
    day = datetime(2026, 11, 1, tzinfo=UTC)
    runs = {f"scheduled__2026-11-0{d}T00:00:00+00:00": day + timedelta(days=d - 1) for d in (1, 2, 3)}
    names = list(runs)
    await push(bus, "up", "day1", run_id=names[0], logical_date=runs[names[0]])
    await push(bus, "up", "day2", run_id=names[1], logical_date=runs[names[1]])
    await push(bus, "later", "day3", run_id=names[2], logical_date=runs[names[2]])  # another task
    # The downstream of run 3 finds nothing of "up" in its own run: day 2 is the latest before it.
    ti = bus.task_instance("dag", names[2], "me", logical_date=runs[names[2]])
    assert await ti.xcom_pull(task_ids="up") is None
    assert await ti.xcom_pull(task_ids="up", include_prior_dates=True) == "day2"
    # Its own run wins when it has the value; runs after it are never used.
    await push(bus, "up", "day3", run_id=names[2], logical_date=runs[names[2]])
    assert await ti.xcom_pull(task_ids="up", include_prior_dates=True) == "day3"
    early = bus.task_instance("dag", "manual__early", "me", logical_date=day - timedelta(days=1))
    assert await early.xcom_pull(task_ids="up", include_prior_dates=True, default="none") == "none"
    # Without a logical date there is nothing to compare with: a clear error.
    undated = bus.task_instance("dag", "manual__undated", "me")
    with pytest.raises(XComIdentifierError, match="logical date"):
        await undated.xcom_pull(task_ids="up", include_prior_dates=True)


async def test_fan_in_over_1000_mapped_instances_is_one_query(bus: XComBus) -> None:
    await asyncio.gather(*(push(bus, "mapped", i, map_index=i) for i in range(1000)))
    ti = me(bus)
    assert await ti.xcom_pull(task_ids="mapped") == list(range(1000))  # waits, opens the reader
    statements: list[str] = []
    db: sqlite3.Connection = bus._view()._db
    db.set_trace_callback(statements.append)
    try:
        values = await ti.xcom_pull(task_ids="mapped", consistency="eventual")
    finally:
        db.set_trace_callback(None)
    assert values == list(range(1000))
    assert [s for s in statements if "FROM xcom" in s and s.lstrip().upper().startswith("SELECT")] \
        and len([s for s in statements if "FROM xcom" in s]) == 1


def test_notset_is_distinct_from_none() -> None:
    assert NOTSET is not None and repr(NOTSET) == "NOTSET"
