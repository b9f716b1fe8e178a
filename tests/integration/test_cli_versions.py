"""The command line of versions and tries, as a user runs it against a materializer process:
audited overrides (set, delete, revert), per-try pulls, ls filtered by try, and history with
kinds, tries, actors and reasons (its table and its JSON lines)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import cli, settings_env, start_materializer, stop_process
from xcombus import Receipt, Settings, XComBus
from xcombus.lookup import XComLookup

pytestmark = pytest.mark.integration
RUN = "manual__2026-12-03T00:00:00+00:00"
TI = ("--dag-id", "d", "--run-id", RUN, "--task-id", "etl")


@pytest.fixture
def materialized(settings: Settings) -> Iterator[Settings]:
    """The test's topic with an ``xcombus materialize`` process keeping its view."""
    created = cli("topic", "create", settings=settings)
    assert created.returncode == 0, created.stderr
    mat = start_materializer(settings)
    try:
        yield settings
    finally:
        stop_process(mat)


def run(*args: str, settings: Settings, **env: str) -> Any:
    """``xcombus ARGS`` with the test's settings (plus ``env``), a table wide enough to keep
    each row on one line."""
    return cli(*args, env={**settings_env(settings), "COLUMNS": "250", **env})


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


async def push(settings: Settings, task_id: str, key: str, value: Any, *, try_number: int = 1,
               map_index: int = -1, clear_first: bool = False) -> Receipt:
    async with XComBus(settings) as bus:
        ti = bus.task_instance("d", RUN, task_id, map_index, try_number=try_number)
        if clear_first:
            await ti.xcom_clear()
        return await ti.xcom_push(key, value)


async def all_visible(settings: Settings) -> None:
    """Wait until the materializer has applied everything published so far (ls reads the
    view as it is)."""
    async with XComBus(settings) as bus:
        await bus.wait_visible(range(settings.partitions))


async def pull(settings: Settings, key: str, **kwargs: Any) -> Any:
    """What a task of the run pulls from etl (through the view the materializer keeps)."""
    async with XComBus(settings) as bus:
        return await bus.task_instance("d", RUN, "reader").xcom_pull(task_ids="etl", key=key, **kwargs)


def test_set_delete_and_revert_are_read_by_tasks_and_audited_in_history(materialized: Settings) -> None:
    s = materialized
    first = asyncio.run(push(s, "etl", "rows", {"count": 10}, try_number=2))
    other = asyncio.run(push(s, "etl", "other", 1, try_number=2))

    missing = run("set", *TI, "rows", '{"count": 12}', "--actor", "alice", settings=s)
    assert missing.returncode == 2 and "Missing option '--reason'" in missing.stderr
    blank = run("set", *TI, "rows", "1", "--reason", " ", settings=s)
    assert blank.returncode == 2 and "needs a reason" in blank.stderr

    done = run("set", *TI, "rows", '{"count": 12}', "--reason", "JIRA-7 recount", "--actor", "alice",
               settings=s)
    assert done.returncode == 0, done.stderr
    [fixed] = json_lines(done.stdout)
    assert fixed["partition"] == first.partition and fixed["offset"] > first.offset
    assert (fixed["kind"], fixed["action"], fixed["actor"], fixed["reason"], fixed["try_number"]) == (
        "override", "set", "alice", "JIRA-7 recount", 2)
    assert fixed["replaces"] == [first.partition, first.offset]
    assert asyncio.run(pull(s, "rows")) == {"count": 12}  # a task reads it like a push

    # The actor from the environment when --actor is not given.
    deleted = run("delete", *TI, "rows", "--reason", "bad batch", settings=s, XCOMBUS_ACTOR="ops-bot")
    assert deleted.returncode == 0, deleted.stderr
    [gone] = json_lines(deleted.stdout)
    assert (gone["actor"], gone["replaces"]) == ("ops-bot", [fixed["partition"], fixed["offset"]])
    assert asyncio.run(pull(s, "rows", default="gone")) == "gone"
    pulled = run("pull", *TI, "--key", "rows", settings=s)
    assert pulled.returncode == 1 and "no XCom 'rows'" in pulled.stderr

    again = run("delete", *TI, "rows", "--reason", "twice", settings=s)
    assert again.returncode == 1 and "nothing to delete" in again.stderr and again.stdout == ""
    unknown = run("delete", *TI, "never-pushed", "--reason", "typo", settings=s)
    assert unknown.returncode == 1 and "no XCom 'never-pushed'" in unknown.stderr

    wrong = run("revert", *TI, "rows", "--to", str(other.offset), "--reason", "undo", settings=s)
    assert wrong.returncode == 1 and "holds no version of XCom 'rows'" in wrong.stderr
    reverted = run("revert", *TI, "rows", "--to", str(first.offset), "--reason", "undo", "--actor", "carol",
                   settings=s)
    assert reverted.returncode == 0, reverted.stderr
    [back] = json_lines(reverted.stdout)
    assert back["reverted_to"] == [first.partition, first.offset] and back["replaces"] is None
    assert asyncio.run(pull(s, "rows")) == {"count": 10}
    assert json.loads(run("pull", *TI, "--key", "rows", settings=s).stdout) == {"count": 10}

    as_json = run("history", *TI, "--key", "rows", "--json", settings=s)
    assert as_json.returncode == 0, as_json.stderr
    events = json_lines(as_json.stdout)
    assert [(e["kind"], e["try_number"], e["actor"], e["reason"], e["replaces"], e["value"]) for e in events] == [
        ("push", 2, None, None, None, {"count": 10}),
        ("override", 2, "alice", "JIRA-7 recount", [first.partition, first.offset], {"count": 12}),
        ("override", 2, "ops-bot", "bad batch", [fixed["partition"], fixed["offset"]], None),
        ("override", 2, "carol", "undo", None, {"count": 10}),
    ]
    # The fields scripts read before overrides existed are all still there.
    assert {"partition", "offset", "dag_id", "run_id", "task_id", "map_index", "key", "codec", "producer",
            "timestamp", "logical_date"} <= set(events[0])

    table = run("history", *TI, "--key", "rows", settings=s)
    assert table.returncode == 0, table.stderr
    header = next(line for line in table.stdout.splitlines() if "time (UTC)" in line)
    assert header.split() == ["at", "kind", "try", "time", "(UTC)", "by", "reason", "value"]
    rows = [line.split() for line in table.stdout.splitlines() if line.strip().startswith(f"{first.partition}:")]
    assert [(r[0], r[1], r[2]) for r in rows] == [(f"{e['partition']}:{e['offset']}", e["kind"], "2")
                                                   for e in events]
    assert "alice" in rows[1] and "JIRA-7" in rows[1]
    assert f"(replaces {first.partition}:{first.offset})" in " ".join(rows[1])
    assert "ops-bot" in rows[2] and "(deleted)" in rows[2]
    assert "carol" in rows[3] and "undo" in rows[3]


def test_pull_try_reads_a_cleared_try_and_ls_try_filters_rows(materialized: Settings) -> None:
    s = materialized
    asyncio.run(push(s, "etl", "job_id", "external-1"))
    asyncio.run(push(s, "etl", "job_id", "mapped-1", map_index=3))
    asyncio.run(push(s, "etl", "job_id", "external-2", try_number=2, clear_first=True))
    asyncio.run(push(s, "etl", "rows", 5, try_number=2))
    asyncio.run(push(s, "other", "return_value", "still try 1"))

    def pulled(*args: str) -> Any:
        result = run("pull", *TI, "--key", "job_id", *args, settings=s)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    assert pulled() == ["external-2", "mapped-1"]  # every map index without --try
    assert pulled("--map-index", "-1") == "external-2"
    assert pulled("--try", "1") == "external-1"  # try 2's clear hid it from plain pulls
    assert pulled("--try", "2") == "external-2"
    assert pulled("--try", "1", "--map-index", "3") == "mapped-1"
    never = run("pull", *TI, "--key", "job_id", "--try", "3", settings=s)
    assert never.returncode == 1 and "from try 3" in never.stderr
    assert "default -1" in run("pull", "--help", settings=s).stdout

    asyncio.run(all_visible(s))

    def listed(*args: str) -> list[tuple[str, int, str, int]]:
        result = run("ls", "--json", "--dag-id", "d", *args, settings=s)
        assert result.returncode == 0, result.stderr
        return [(e["task_id"], e["map_index"], e["key"], e["try_number"]) for e in json_lines(result.stdout)]

    assert listed("--try", "2") == [("etl", -1, "job_id", 2), ("etl", -1, "rows", 2)]
    assert listed("--try", "1") == [("etl", 3, "job_id", 1), ("other", -1, "return_value", 1)]
    assert listed("--try", "3") == []
    table = run("ls", "--dag-id", "d", "--try", "2", settings=s)
    assert "external-2" in table.stdout and "still try 1" not in table.stdout
    with XComLookup(s) as lookup:
        assert lookup.count(dag_id="d", try_number=2) == 2 and lookup.count(dag_id="d") == 4
        assert [e.key for e in lookup.entries(try_number=2, task_id="etl")] == ["job_id", "rows"]


def test_a_fenced_zombie_push_shows_as_fenced_in_history(materialized: Settings) -> None:
    s = materialized
    asyncio.run(push(s, "etl", "k", "from try 1"))
    asyncio.run(push(s, "etl", "k", "from try 2", try_number=2, clear_first=True))
    zombie = asyncio.run(push(s, "etl", "k", "zombie", try_number=1))

    pulled = run("pull", *TI, "--key", "k", settings=s)
    assert json.loads(pulled.stdout) == "from try 2"
    assert json.loads(run("pull", *TI, "--key", "k", "--try", "1", settings=s).stdout) == "zombie"

    events = json_lines(run("history", *TI, "--key", "k", "--json", settings=s).stdout)
    assert [(e["kind"], e["try_number"], e["value"]) for e in events] == [
        ("push", 1, "from try 1"), ("clear", 2, None), ("push", 2, "from try 2"), ("fenced", 1, "zombie")]
    table = run("history", *TI, "--key", "k", settings=s).stdout
    [fenced] = [line.split() for line in table.splitlines() if f"{zombie.partition}:{zombie.offset} " in line]
    assert fenced[1:3] == ["fenced", "1"] and '"zombie"' in fenced
