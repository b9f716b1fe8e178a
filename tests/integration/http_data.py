"""The data set the HTTP tests read (test_http.py and test_web_page.py): a small ETL run and
its neighbours, pushed through Kafka and materialized before the tests look at it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from xcombus import Settings, XComBus

RUN = "manual__2026-11-24T00:00:00+00:00"
RUN2 = "scheduled__2026-11-23T00:00:00+00:00"
LOGICAL = datetime(2026, 11, 24, tzinfo=UTC)
LOGICAL2 = datetime(2026, 11, 23, tzinfo=UTC)
META = {"when": datetime(2026, 11, 24, 6, 30, tzinfo=UTC), "tags": {"a"}}
ODD_KEY = "résumé clé"
TOKEN = "s3cret-token-for-tests"


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
