"""Scenario 4: materializers joining and leaving one consumer group (each with its own
file), and independent replicas that must end identical."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.helpers import start_materializer, stop_process
from xcombus import Settings, XComBus
from xcombus.consistency import EndOffsets
from xcombus.rebuild import rebuild, verify
from xcombus.view import ViewReader


def applied(path: str) -> tuple[dict[int, int], dict[int, int]]:
    reader = ViewReader(path)
    try:
        return reader.offsets(), reader.applied_events()
    finally:
        reader.close()


async def test_members_join_and_leave_one_group_and_replicas_converge(settings: Settings,
                                                                       tmp_path: Path) -> None:
    group = settings.replace(group_id=f"g-{settings.topic}", partitions=6)
    files = [str(tmp_path / f"member{i}.db") for i in range(3)]
    members = [group.replace(view_path=f) for f in files]
    stop = asyncio.Event()
    async with XComBus(group) as bus:
        async def load() -> None:
            i = 0
            while not stop.is_set():
                await asyncio.gather(*(bus.task_instance("d", "r", f"t{(i + j) % 30}", j % 3)
                                       .xcom_push(f"k{j % 4}", i + j) for j in range(50)))
                i += 50
                await asyncio.sleep(0.01)

        pusher = asyncio.create_task(load())
        procs = [start_materializer(members[0])]
        await asyncio.sleep(3)
        procs.append(start_materializer(members[1]))   # joins: the group rebalances
        await asyncio.sleep(4)
        procs.append(start_materializer(members[2]))   # joins
        await asyncio.sleep(4)
        for p in (procs[2], procs[1]):                 # leave again, one after the other
            assert stop_process(p)[0] == 0
            await asyncio.sleep(4)
        stop.set()
        await pusher
        ends_reader = EndOffsets(group)
        ends = {p: o for p, o in (await ends_reader.get(range(6), 10)).items() if o}
        await ends_reader.aclose()
        for _ in range(300):  # the member left standing owns every partition again
            if applied(files[0])[0] == ends:
                break
            await asyncio.sleep(0.2)
        assert stop_process(procs[0])[0] == 0
    # Every member applied each partition it held as one gap-free prefix, exactly once.
    owners: dict[int, int] = {}
    for f in files:
        offsets, events = applied(f)
        assert offsets == events, f"{f}: events applied twice or skipped"
        for p in offsets:
            owners[p] = owners.get(p, 0) + 1
    assert len(owners) == 6 and max(owners.values()) >= 2  # partitions really moved between members
    # The member left standing holds the full view, equal row for row to a rebuild.
    assert applied(files[0])[0] == ends
    rebuilt = await rebuild(group, tmp_path / "rebuilt.db")
    assert verify(files[0], rebuilt.path).same
    # Two independent replicas (their own groups and files) end identical to it.
    replicas = [settings.replace(partitions=6, view_path=str(tmp_path / f"replica{i}.db")) for i in range(2)]
    procs = [start_materializer(r) for r in replicas]
    try:
        async with XComBus(replicas[0]) as bus:
            await bus.wait_visible(range(6))
        async with XComBus(replicas[1]) as bus:
            await bus.wait_visible(range(6))
    finally:
        for p in procs:
            stop_process(p)
    assert verify(replicas[0].view_path, replicas[1].view_path).same
    assert verify(replicas[0].view_path, files[0]).same
