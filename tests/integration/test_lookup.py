"""Lookup queries on the view: Python (XComLookup) and `xcombus ls`."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from tests.helpers import cli, make_settings
from xcombus import DagSummary, Settings, XComBus, XComEntry, XComLookup, XComQueryError

pytestmark = pytest.mark.integration


async def _populate(settings: Settings) -> datetime:
    """Five XComs: three map indexes of etl/run_a/t (dated), then, after a moment ``middle``,
    etl/run_b/u and other/run_a/t. Returns ``middle``."""
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
    return middle


@pytest.fixture(scope="module")
def view(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, datetime]:
    """One populated view for the read-only tests of this module (filled once)."""
    settings = make_settings(kafka, tmp_path_factory.mktemp("lookup"))
    return settings, asyncio.run(_populate(settings))


def test_filters_count_and_select(view: tuple[Settings, datetime]) -> None:
    settings, _ = view
    with XComLookup(settings) as lookup:
        everything = lookup.entries()
        assert len(everything) == 5 and lookup.count() == 5
        assert all(isinstance(e, XComEntry) for e in everything)
        assert [e.map_index for e in lookup.entries(dag_id="etl", run_id="run_a")] == [0, 1, 2]
        assert lookup.count(dag_id="etl") == 4 and lookup.count(key="k") == 2


def test_time_range(view: tuple[Settings, datetime]) -> None:
    settings, middle = view
    with XComLookup(settings) as lookup:
        newer = lookup.entries(since=middle)
        assert {(e.dag_id, e.task_id) for e in newer} == {("etl", "u"), ("other", "t")}
        assert lookup.count(until=middle) == 3


def test_order_and_paging(view: tuple[Settings, datetime]) -> None:
    settings, _ = view
    with XComLookup(settings) as lookup:
        everything = lookup.entries()
        newest_first = lookup.entries(order_by="timestamp", descending=True)
        assert [e.timestamp for e in newest_first] == sorted((e.timestamp for e in everything), reverse=True)
        page1, page2 = lookup.entries(limit=2), lookup.entries(limit=2, offset=2)
        assert [e.key for e in page1 + page2] == [e.key for e in everything[:4]]


def test_values_full_light_and_none(view: tuple[Settings, datetime]) -> None:
    settings, _ = view
    with XComLookup(settings) as lookup:
        assert lookup.get("etl", "run_b", "u", "k").value == (1, 2)             # full value
        assert lookup.entries(dag_id="etl", run_id="run_b")[0].value == (1, 2)     # light == full here
        assert lookup.entries(values="none")[0].value is None
        assert lookup.get("etl", "run_b", "u", "missing") is None


def test_summaries_of_dags_runs_and_task_instances(view: tuple[Settings, datetime]) -> None:
    settings, _ = view
    with XComLookup(settings) as lookup:
        assert lookup.dags() == [DagSummary("etl", 2, 4), DagSummary("other", 1, 1)]
        assert [r.run_id for r in lookup.runs("etl")] == ["run_a", "run_b"]  # by logical date, undated last
        assert [(t.task_id, t.map_index, t.xcoms) for t in lookup.task_instances("etl", "run_a")] == [
            ("t", 0, 1), ("t", 1, 1), ("t", 2, 1)]


def test_bad_queries_are_refused_and_filter_values_are_data(view: tuple[Settings, datetime]) -> None:
    settings, _ = view
    with XComLookup(settings) as lookup:
        with pytest.raises(XComQueryError):
            lookup.entries(order_by="value")  # type: ignore[arg-type]
        with pytest.raises(XComQueryError):
            lookup.entries(limit=0)
        with pytest.raises(XComQueryError):
            lookup.entries(since=datetime(2026, 1, 1))  # naive: ambiguous
        # Hostile filter values are data, never SQL.
        assert lookup.entries(dag_id="etl' OR '1'='1") == []


def test_cli_ls_filters_and_orders(view: tuple[Settings, datetime]) -> None:
    settings, middle = view
    shown = cli("ls", "--json", "--since", middle.strftime("%Y-%m-%dT%H:%M:%S.%f"), "--order-by", "timestamp",
                settings=settings)
    assert shown.returncode == 0, shown.stderr
    assert [json.loads(line)["dag_id"] for line in shown.stdout.splitlines()] == ["etl", "other"]
