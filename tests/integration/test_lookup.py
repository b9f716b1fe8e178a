"""Lookup queries on the view: Python (XComLookup) and `xcombus ls`."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from tests.helpers import cli
from xcombus import DagSummary, Settings, XComBus, XComEntry, XComLookup, XComQueryError

pytestmark = pytest.mark.integration


async def test_filters_time_range_order_paging_and_summaries(settings: Settings) -> None:
    async with XComBus(settings, materialize=True) as bus:
        for i in range(3):
            ti = bus.task_instance("etl", "run_a", "t", i, logical_date=datetime(2026, 1, 1, tzinfo=UTC))
            await ti.xcom_push("return_value", {"i": i})
        await asyncio.sleep(0.05)
        middle = datetime.now(UTC)
        await asyncio.sleep(0.05)
        await bus.task_instance("etl", "run_b", "u").xcom_push("k", (1, 2))
        await bus.task_instance("other", "run_a", "t").xcom_push("k", "x")
        await bus.wait_visible(range(settings.partitions))
    with XComLookup(settings) as lookup:
        everything = lookup.entries()
        assert len(everything) == 5 and lookup.count() == 5
        assert all(isinstance(e, XComEntry) for e in everything)
        assert [e.map_index for e in lookup.entries(dag_id="etl", run_id="run_a")] == [0, 1, 2]
        assert lookup.count(dag_id="etl") == 4 and lookup.count(key="k") == 2
        newer = lookup.entries(since=middle)
        assert {(e.dag_id, e.task_id) for e in newer} == {("etl", "u"), ("other", "t")}
        assert lookup.count(until=middle) == 3
        newest_first = lookup.entries(order_by="timestamp", descending=True)
        assert [e.timestamp for e in newest_first] == sorted((e.timestamp for e in everything), reverse=True)
        page1, page2 = lookup.entries(limit=2), lookup.entries(limit=2, offset=2)
        assert [e.key for e in page1 + page2] == [e.key for e in everything[:4]]
        assert lookup.get("etl", "run_b", "u", "k").value == (1, 2)             # full value
        assert lookup.entries(dag_id="etl", run_id="run_b")[0].value == (1, 2)     # light == full here
        assert lookup.entries(values="none")[0].value is None
        assert lookup.get("etl", "run_b", "u", "missing") is None
        assert lookup.dags() == [DagSummary("etl", 2, 4), DagSummary("other", 1, 1)]
        assert [r.run_id for r in lookup.runs("etl")] == ["run_a", "run_b"]  # by logical date, undated last
        assert [(t.task_id, t.map_index, t.xcoms) for t in lookup.task_instances("etl", "run_a")] == [
            ("t", 0, 1), ("t", 1, 1), ("t", 2, 1)]
        with pytest.raises(XComQueryError):
            lookup.entries(order_by="value")  # type: ignore[arg-type]
        with pytest.raises(XComQueryError):
            lookup.entries(limit=0)
        with pytest.raises(XComQueryError):
            lookup.entries(since=datetime(2026, 1, 1))  # naive: ambiguous
        # Hostile filter values are data, never SQL.
        assert lookup.entries(dag_id="etl' OR '1'='1") == []
    shown = cli("ls", "--json", "--since", middle.strftime("%Y-%m-%dT%H:%M:%S.%f"), "--order-by", "timestamp",
                settings=settings)
    assert shown.returncode == 0, shown.stderr
    assert [json.loads(line)["dag_id"] for line in shown.stdout.splitlines()] == ["etl", "other"]
