"""The @task decorator, current_task_instance(), retries and the sync facade, on the real broker."""

from __future__ import annotations

import threading

import pytest

from xcombus import (
    Settings,
    SyncTaskInstance,
    SyncXComBus,
    TaskInstance,
    XComBus,
    XComBusError,
    current_task_instance,
    task,
)

pytestmark = pytest.mark.integration
RUN = "manual__2026-11-24T00:00:00+00:00"


@task
async def extract() -> dict[str, int]:
    ti = current_task_instance()
    assert isinstance(ti, TaskInstance) and ti.task_id == "extract"
    assert current_task_instance(TaskInstance) is ti
    with pytest.raises(XComBusError, match="not a SyncTaskInstance"):
        current_task_instance(SyncTaskInstance)
    await ti.xcom_push("side", "pushed by hand")
    return {"rows": 3}


@task(multiple_outputs=True)
def split(prefix: str) -> dict[str, object]:
    ti = current_task_instance()  # plain functions get a blocking handle
    assert isinstance(ti, SyncTaskInstance) and threading.current_thread() is not threading.main_thread()
    rows = ti.xcom_pull(task_ids="extract")["rows"]
    return {"count": rows, "label": f"{prefix}-{rows}"}


@task(do_xcom_push=False)
async def quiet() -> str:
    return "not pushed"


@task(multiple_outputs=True)
async def wrong() -> list[int]:
    return [1, 2]


async def test_return_value_is_pushed_and_context_is_available(settings: Settings) -> None:
    async with XComBus(settings, materialize=True) as bus:
        assert await extract.run(bus, "dag", RUN) == {"rows": 3}
        reader = bus.task_instance("dag", RUN, "reader")
        assert await reader.xcom_pull(task_ids="extract") == {"rows": 3}
        assert await reader.xcom_pull(task_ids="extract", key="side") == "pushed by hand"


async def test_multiple_outputs_pushes_each_item_and_the_whole_dict(settings: Settings) -> None:
    async with XComBus(settings, materialize=True) as bus:
        await extract.run(bus, "dag", RUN)
        await split.run(bus, "dag", RUN, "p")
        reader = bus.task_instance("dag", RUN, "reader")
        assert await reader.xcom_pull(task_ids="split", key="count") == 3
        assert await reader.xcom_pull(task_ids="split", key="label") == "p-3"
        assert await reader.xcom_pull(task_ids="split") == {"count": 3, "label": "p-3"}


async def test_do_xcom_push_false_pushes_nothing(settings: Settings) -> None:
    async with XComBus(settings, materialize=True) as bus:
        assert await quiet.run(bus, "dag", RUN) == "not pushed"
        assert await bus.task_instance("dag", RUN, "r").xcom_pull(task_ids="quiet", default="none") == "none"


async def test_multiple_outputs_needs_a_dict(settings: Settings) -> None:
    async with XComBus(settings) as bus:
        with pytest.raises(XComBusError, match="must return a dict"):
            await wrong.run(bus, "dag", RUN)


def test_current_task_instance_outside_a_task_is_a_clear_error() -> None:
    with pytest.raises(XComBusError, match="no task is running"):
        current_task_instance()
    assert extract.__name__ == "extract" and quiet.task_id == "quiet"


async def test_a_new_try_clears_the_previous_tries_values(settings: Settings) -> None:
    attempts: list[int] = []

    @task
    async def flaky() -> str:
        ti = current_task_instance()
        attempts.append(ti.try_number)
        if ti.try_number == 1:
            await ti.xcom_push("partial", "from try 1")
            await ti.xcom_push("job_id", "a1")
            raise RuntimeError("boom")
        # The retry picks up its failed predecessor's external job, which pulls no longer show.
        assert await ti.xcom_pull(key="job_id", default="none") == "none"
        previous = await ti.xcom_pull(key="job_id", try_number=ti.try_number - 1)
        await ti.xcom_push("job_id", f"{previous}+a2")
        return "ok"

    async with XComBus(settings, materialize=True) as bus:
        with pytest.raises(RuntimeError):
            await flaky.run(bus, "dag", RUN, try_number=1)
        reader = bus.task_instance("dag", RUN, "reader")
        assert await reader.xcom_pull(task_ids="flaky", key="partial") == "from try 1"
        await flaky.run(bus, "dag", RUN, try_number=2)
        assert await reader.xcom_pull(task_ids="flaky", key="partial", default="gone") == "gone"
        assert await reader.xcom_pull(task_ids="flaky", key="job_id") == "a1+a2"
        assert await reader.xcom_pull(task_ids="flaky") == "ok"
    assert attempts == [1, 2]


async def test_mapped_instance_returning_none_keeps_its_slot(settings: Settings) -> None:
    @task
    async def maybe(i: int) -> int | None:
        return None if i == 1 else i

    async with XComBus(settings, materialize=True) as bus:
        for i in range(3):
            await maybe.run(bus, "dag", RUN, i, map_index=i)
        assert await bus.task_instance("dag", RUN, "r").xcom_pull(task_ids="maybe") == [0, None, 2]


def test_sync_facade_for_plain_programs(settings: Settings) -> None:
    with SyncXComBus(settings, materialize=True) as bus:
        up = bus.task_instance("dag", RUN, "up")
        receipt = up.xcom_push("return_value", [1, 2])
        assert receipt.offset >= 0
        assert bus.task_instance("dag", RUN, "down").xcom_pull(task_ids="up") == [1, 2]
        assert up.task_id == "up" and up.map_index == -1
        retry = bus.task_instance("dag", RUN, "up", try_number=2)
        retry.xcom_push("return_value", [3])
        down = bus.task_instance("dag", RUN, "down")
        assert down.xcom_pull(task_ids="up") == [3]
        assert down.xcom_pull(task_ids="up", try_number=1) == [1, 2]


def test_sync_facade_runs_tasks(settings: Settings) -> None:
    with SyncXComBus(settings, materialize=True) as bus:
        bus.run_task(extract, "dag", RUN)
        assert bus.run_task(split, "dag", RUN, "s") == {"count": 3, "label": "s-3"}
        assert bus.task_instance("dag", RUN, "r").xcom_pull(task_ids="split", key="count") == 3
