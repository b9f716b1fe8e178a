"""The data sets the HTTP tests read (test_http.py and test_web_page.py): a small ETL run and
its neighbours, and a task instance with retries, a zombie try and overrides, pushed through
Kafka and materialized before the tests look at them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import NamedTuple

from xcombus import Receipt, Settings, XComBus

RUN = "manual__2026-11-24T00:00:00+00:00"
RUN2 = "scheduled__2026-11-23T00:00:00+00:00"
#: schemathesis parameters pinning the fuzz runs to one XCom of populate(), so every
#: operation also answers with real entries.
PINNED_FUZZ = f"""
[parameters]
"path.dag_id" = "etl"
"path.dag_run_id" = "{RUN}"
"path.task_id" = "extract"
"path.xcom_key" = "meta"
"""
LOGICAL = datetime(2026, 11, 24, tzinfo=UTC)
LOGICAL2 = datetime(2026, 11, 23, tzinfo=UTC)
META = {"when": datetime(2026, 11, 24, 6, 30, tzinfo=UTC), "tags": {"a"}}
ODD_KEY = "résumé clé"
TOKEN = "s3cret-token-for-tests"
VERSIONS_DAG = "retries"
VERSIONS_RUN = "manual__2026-12-01T00:00:00+00:00"


async def _populate(settings: Settings) -> None:
    async with XComBus(settings, materialize=True) as bus:
        extract = bus.task_instance("etl", RUN, "extract", logical_date=LOGICAL)
        await extract.xcom_push("return_value", {"rows": 42})
        await extract.xcom_push("meta", META)
        for i in range(4):
            await bus.task_instance("etl", RUN, "transform", i, logical_date=LOGICAL).xcom_push(
                "return_value", i * 10)
        load = bus.task_instance("etl", RUN, "load", logical_date=LOGICAL)
        await load.xcom_push("summary", "v1")
        await load.xcom_push("summary", "v2")
        retry = bus.task_instance("etl", RUN, "load", try_number=2, logical_date=LOGICAL)
        await retry.xcom_clear()
        await retry.xcom_push("summary", "v3")
        await retry.xcom_push("return_value", "done")
        await bus.task_instance("etl", RUN2, "extract", logical_date=LOGICAL2).xcom_push("return_value", 7)
        other = bus.task_instance("other", "r1", "t")
        await other.xcom_push("k", None)
        await other.xcom_push(ODD_KEY, "x")
        await bus.wait_visible(range(settings.partitions))


def populate(settings: Settings) -> None:
    """Push the test data set through Kafka and wait until the view holds all of it."""
    asyncio.run(_populate(settings))


class Versions(NamedTuple):
    """Where the events of :func:`populate_versions` landed, in log order."""

    rows: list[Receipt]
    fixed: Receipt


async def _populate_versions(settings: Settings) -> Versions:
    async with XComBus(settings, materialize=True) as bus:
        try1 = bus.task_instance(VERSIONS_DAG, VERSIONS_RUN, "load", try_number=1)
        rows = [await try1.xcom_push("rows", 10), await try1.xcom_push("rows", 11)]
        try2 = bus.task_instance(VERSIONS_DAG, VERSIONS_RUN, "load", try_number=2)
        rows += [await try2.xcom_clear(), await try2.xcom_push("rows", 12)]
        async with XComBus(settings) as other:  # try 1 lives on in another process: a zombie
            zombie = other.task_instance(VERSIONS_DAG, VERSIONS_RUN, "load", try_number=1)
            rows += [await zombie.xcom_push("rows", 99), await zombie.xcom_clear()]
        ti = try2.key
        rows.append(await bus.set_xcom(ti, "rows", 13, actor="alice", reason="JIRA-7 recount"))
        rows.append(await bus.delete_xcom(ti, "rows", actor="bob", reason="bad batch"))
        rows.append(await bus.revert_xcom(ti, "rows", to_offset=rows[3].offset, actor="carol",
                                          reason="undo the delete"))
        fixed = await bus.set_xcom(ti, "fixed", {"by": "hand"}, actor="dave", reason="never pushed")
        await bus.wait_visible(range(settings.partitions))
    return Versions(rows, fixed)


def populate_versions(settings: Settings) -> Versions:
    """Push, clear, fence and override the XComs of one task instance (``retries``/``load``):
    "rows" is pushed by try 1 twice, cleared and pushed by try 2, pushed and cleared again by
    a zombie try 1 (both fenced), set by alice, deleted by bob and reverted by carol to try
    2's push; "fixed" only ever had an override (dave's)."""
    return asyncio.run(_populate_versions(settings))
