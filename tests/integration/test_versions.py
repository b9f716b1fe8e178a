"""Versions and tries on the real broker: fenced zombie tries, per-try reads, history from
the version index, and a rebuild that equals the live view including the index."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from xcombus import Settings, XComBus, XComIdentifierError, XComNotFoundError
from xcombus.audit import history
from xcombus.rebuild import rebuild, verify

pytestmark = pytest.mark.integration
RUN = "manual__2026-12-03T00:00:00+00:00"


async def test_a_zombie_try_never_changes_what_pulls_see_and_history_lists_it(settings: Settings,
                                                                             tmp_path: Path) -> None:
    async with XComBus(settings, materialize=True) as bus:
        try1 = bus.task_instance("d", RUN, "t", try_number=1)
        await try1.xcom_push("k", "from try 1")
        try2 = bus.task_instance("d", RUN, "t", try_number=2)
        await try2.xcom_clear()
        await try2.xcom_push("k", "from try 2")
        reader = bus.task_instance("d", RUN, "reader")
        zombie = XComBus(settings)  # another process's producer, as a zombie's would be
        async with zombie:
            ghost = zombie.task_instance("d", RUN, "t", try_number=1)
            for start in range(0, 1000, 100):
                await asyncio.gather(*(ghost.xcom_push("k", f"zombie {i}") for i in range(start, start + 100)))
                assert await reader.xcom_pull(task_ids="t", key="k") == "from try 2"
            await ghost.xcom_push("k", "zombie last")
            await ghost.xcom_clear()  # a clear of the older try is fenced too
        assert await reader.xcom_pull(task_ids="t", key="k") == "from try 2"
        assert await reader.xcom_pull(task_ids="t", key="k", try_number=1) == "zombie last"
        await bus.wait_visible(range(settings.partitions))
    events = await history(settings, "d", RUN, "t", "k")
    assert [e.kind for e in events] == ["push", "clear", "push", *["fenced"] * 1002]
    assert sorted(e.value for e in events[3:-2]) == sorted(f"zombie {i}" for i in range(1000))
    assert events[-2].value == "zombie last" and events[-2].try_number == 1
    assert events[-1].key is None and events[-1].try_number == 1  # the fenced clear
    # The scan of the log (no view) tells the same story.
    scanned = await history(settings, "d", RUN, "t", "k", view=tmp_path / "absent.db")
    assert scanned == events
    rebuilt = await rebuild(settings, tmp_path / "rebuilt.db")
    result = verify(settings.view_path, rebuilt.path)
    assert result.same, result.differences


async def test_per_try_reads_see_a_cleared_try(settings: Settings) -> None:
    async with XComBus(settings, materialize=True) as bus:
        try1 = bus.task_instance("d", RUN, "etl", try_number=1)
        await try1.xcom_push("job_id", "external-1")
        await try1.xcom_push("partial", "half done")
        try2 = bus.task_instance("d", RUN, "etl", try_number=2)
        await try2.xcom_clear()
        # The retry reads its failed predecessor's checkpoint; pulls without a try do not see it.
        assert await try2.xcom_pull(key="job_id", default="none") == "none"
        assert await try2.xcom_pull(key="job_id", try_number=1) == "external-1"
        await try2.xcom_push("job_id", "external-2")
        reader = bus.task_instance("d", RUN, "reader")
        assert await reader.xcom_pull(task_ids="etl", key="job_id") == "external-2"
        assert await reader.xcom_pull(task_ids="etl", key="job_id", try_number=1) == "external-1"
        assert await reader.xcom_pull(task_ids="etl", key="job_id", try_number=2) == "external-2"
        assert await reader.xcom_pull(task_ids="etl", key="partial", default="gone") == "gone"
        assert await reader.xcom_pull(task_ids="etl", key="partial", try_number=1) == "half done"
        assert await reader.xcom_pull(task_ids="etl", key="partial", try_number=3, default="never") == "never"
        records = await bus.read("d", RUN, ["etl"], "job_id", map_indexes=[-1], try_number=1)
        assert [(r.try_number, r.value) for r in records] == [(1, b'"external-1"')]


async def test_a_try_that_died_after_publishing_leaves_nothing_once_the_next_try_publishes(
        settings: Settings) -> None:
    async with XComBus(settings, materialize=True) as bus:
        dead = bus.task_instance("d", RUN, "t", 4, try_number=1)
        await dead.xcom_push("a", 1)
        await dead.xcom_push("b", 2)  # ... then the worker died, no clear ever came
        retry = bus.task_instance("d", RUN, "t", 4, try_number=2)
        await retry.xcom_push("c", 3)
        reader = bus.task_instance("d", RUN, "reader")
        pulls = [await reader.xcom_pull(task_ids="t", key=k, map_indexes=4, default="gone") for k in "abc"]
        assert pulls == ["gone", "gone", 3]
        assert await reader.xcom_pull(task_ids="t", key="a", map_indexes=4, try_number=1) == 1


async def test_overrides_are_read_like_pushes_and_audited_then_reverted(settings: Settings) -> None:
    async with XComBus(settings, materialize=True) as bus:
        etl = bus.task_instance("d", RUN, "etl", try_number=2)
        first = await etl.xcom_push("rows", {"count": 10})
        ti = etl.key
        fixed = await bus.set_xcom(ti, "rows", {"count": 12}, actor="alice", reason="JIRA-7 recount")
        reader = bus.task_instance("d", RUN, "reader")
        # A task reads the override exactly like a task-written value.
        assert await reader.xcom_pull(task_ids="etl", key="rows") == {"count": 12}
        [record] = await bus.read("d", RUN, ["etl"], "rows")
        assert (record.partition, record.offset, record.try_number) == (fixed.partition, fixed.offset, 2)
        await bus.delete_xcom(ti, "rows", actor="bob", reason="bad batch")
        assert await reader.xcom_pull(task_ids="etl", key="rows", default="gone") == "gone"
        with pytest.raises(XComNotFoundError, match="nothing to delete"):
            await bus.delete_xcom(ti, "rows", actor="bob", reason="twice")
        reverted = await bus.revert_xcom(ti, "rows", to_offset=first.offset, actor="carol", reason="undo")
        assert await reader.xcom_pull(task_ids="etl", key="rows") == {"count": 10}
        with pytest.raises(XComNotFoundError, match="no version of XCom 'other'"):
            await bus.revert_xcom(ti, "other", to_offset=first.offset, actor="carol", reason="wrong key")
        with pytest.raises(XComIdentifierError, match="needs a reason"):
            await bus.set_xcom(ti, "rows", 1, actor="alice", reason=" ")
        # A later try's push replaces an override like any row; the override is still history.
        await bus.task_instance("d", RUN, "etl", try_number=2).xcom_push("rows", {"count": 11})
        await bus.wait_visible(range(settings.partitions))
    events = await history(settings, "d", RUN, "etl", "rows")
    assert [(e.kind, e.actor, e.reason, e.try_number) for e in events] == [
        ("push", None, None, 2),
        ("override", "alice", "JIRA-7 recount", 2),
        ("override", "bob", "bad batch", 2),
        ("override", "carol", "undo", 2),
        ("push", None, None, 2),
    ]
    assert events[1].replaces == (first.partition, first.offset)
    assert events[2].replaces == (fixed.partition, fixed.offset) and events[2].value is None
    assert events[3].replaces is None and events[3].value == {"count": 10}
    assert (events[3].partition, events[3].offset) == (reverted.partition, reverted.offset)
    scanned = await history(settings, "d", RUN, "etl", "rows", view="/nonexistent/view.db")
    assert scanned == events


async def test_an_override_without_actor_takes_the_configured_one(settings: Settings) -> None:
    configured = msgspec.structs.replace(settings, actor="ops-bot")
    async with XComBus(configured, materialize=True) as bus:
        ti = bus.task_instance("d", RUN, "t").key
        await bus.set_xcom(ti, "k", [1, 2], reason="seed")
        await bus.wait_visible(range(settings.partitions))
    [event] = await history(settings, "d", RUN, "t", "k")
    assert (event.kind, event.actor, event.value) == ("override", "ops-bot", [1, 2])
