"""The core pipeline on the real broker: push -> topic -> materializer -> view -> pull."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time

import pytest
from aiokafka import AIOKafkaProducer

from tests.helpers import MATERIALIZER, cli, settings_env, start_materializer, stop_process
from xcombus import (
    Settings,
    XComBrokerError,
    XComBus,
    XComSerializationError,
    XComTimeoutError,
    XComValueTooLargeError,
)
from xcombus.consistency import EndOffsets
from xcombus.view import ViewReader

pytestmark = pytest.mark.integration


async def end_offsets(settings: Settings) -> dict[int, int]:
    eo = EndOffsets(settings)
    try:
        return await eo.get(range(settings.partitions), 10)
    finally:
        await eo.aclose()


async def test_push_returns_a_receipt_and_in_process_pull_sees_it(settings: Settings) -> None:
    async with XComBus(settings, materialize=True) as bus:
        ti = bus.task_instance("dag", "run1", "extract")
        receipt = await ti.xcom_push("return_value", {"rows": [1, 2, 3]})
        assert receipt.topic == settings.topic and receipt.offset >= 0
        assert receipt.partition == bus.partition_of(ti.key)
        down = bus.task_instance("dag", "run1", "load")
        assert await down.xcom_pull(task_ids="extract") == {"rows": [1, 2, 3]}
        assert await down.xcom_pull(task_ids="missing", default="none") == "none"
        assert await down.xcom_pull(task_ids=["extract", "missing"]) == [{"rows": [1, 2, 3]}, None]


async def test_round_trip_across_two_processes(settings: Settings) -> None:
    mat = start_materializer(settings)
    try:
        pushed = cli("push", "--dag-id", "d", "--run-id", "r", "--task-id", "a", "greeting",
                     '{"hello": ["world", 1.5, null]}', settings=settings)
        assert pushed.returncode == 0, pushed.stderr
        receipt = json.loads(pushed.stdout)
        assert set(receipt) == {"topic", "partition", "offset"}
        # A pull issued right after the push returned, in another process, sees it.
        pulled = cli("pull", "--dag-id", "d", "--run-id", "r", "--task-id", "a", "--key", "greeting",
                     settings=settings)
        assert pulled.returncode == 0, pulled.stderr
        assert json.loads(pulled.stdout) == {"hello": ["world", 1.5, None]}
        missing = cli("pull", "--dag-id", "d", "--run-id", "r", "--task-id", "a", "--key", "nope",
                      settings=settings)
        assert missing.returncode == 1 and "no XCom 'nope'" in missing.stderr
    finally:
        code, out = stop_process(mat)
    assert code == 0, out


async def test_pull_right_after_a_push_in_another_process_waits_for_the_view(settings: Settings) -> None:
    """The materializer runs in its own process and is deliberately behind; the pull waits."""
    mat = start_materializer(settings)
    try:
        async with XComBus(settings) as bus:
            for i in range(20):
                pushed = cli("push", "--dag-id", "d", "--run-id", "r", "--task-id", "up", "return_value",
                             str(i), settings=settings)
                assert pushed.returncode == 0, pushed.stderr
                value = await bus.task_instance("d", "r", "down").xcom_pull(task_ids="up")
                assert value == i  # never the previous value: the pull saw the push
    finally:
        stop_process(mat)


async def test_clear_then_new_pushes_apply_in_order(settings: Settings) -> None:
    async with XComBus(settings, materialize=True) as bus:
        try1 = bus.task_instance("d", "r", "t", 2, try_number=1)
        await try1.xcom_push("k1", "old-1")
        await try1.xcom_push("k2", "old-2")
        try2 = bus.task_instance("d", "r", "t", 2, try_number=2)
        await try2.xcom_clear()
        await try2.xcom_push("k1", "new-1")
        reader = bus.task_instance("d", "r", "other")
        assert await reader.xcom_pull(task_ids="t", key="k1", map_indexes=2) == "new-1"
        assert await reader.xcom_pull(task_ids="t", key="k2", map_indexes=2, default="gone") == "gone"
    # The same order holds when the view is rebuilt from the log by a fresh materializer.
    fresh = settings.replace(view_path=settings.view_path + ".rebuilt")
    async with XComBus(fresh, materialize=True) as bus:
        reader = bus.task_instance("d", "r", "other")
        assert await reader.xcom_pull(task_ids="t", key="k1", map_indexes=2) == "new-1"
        assert await reader.xcom_pull(task_ids="t", key="k2", map_indexes=2) is None


async def test_mapped_fan_in_is_ordered_by_map_index(settings: Settings) -> None:
    async with XComBus(settings, materialize=True) as bus:
        await asyncio.gather(*(bus.task_instance("d", "r", "m", i).xcom_push("return_value", i * 10)
                               for i in reversed(range(12))))
        down = bus.task_instance("d", "r", "down")
        assert await down.xcom_pull(task_ids="m") == [i * 10 for i in range(12)]
        assert await down.xcom_pull(task_ids="m", map_indexes=[3, 1]) == [30, 10]


async def test_concurrent_pushes_are_batched_and_all_acknowledged(settings: Settings) -> None:
    async with XComBus(settings, materialize=True) as bus:
        receipts = await asyncio.gather(*(bus.task_instance("d", "r", f"t{i % 50}", i // 50)
                                          .xcom_push("k", i) for i in range(5000)))
        assert len({(r.partition, r.offset) for r in receipts}) == 5000
        down = bus.task_instance("d", "r", "down")
        values = await down.xcom_pull(task_ids=[f"t{i}" for i in range(50)], key="k")
    assert sorted(values) == list(range(5000))


async def test_materializer_restart_resumes_without_loss_or_duplicates(settings: Settings) -> None:
    async with XComBus(settings) as bus:
        async def burst(start: int, n: int) -> None:
            await asyncio.gather(*(bus.task_instance("d", "r", "t", i % 40).xcom_push(f"k{i % 7}", i)
                                   for i in range(start, start + n)))

        await burst(0, 2000)
        first = start_materializer(settings)
        await bus.wait_visible(range(settings.partitions))
        assert stop_process(first)[0] == 0
        await burst(2000, 2000)  # written while no materializer runs
        second = start_materializer(settings)
        await asyncio.sleep(0.5)
        third_kill = second  # kill -9 in the middle, then start again
        third_kill.kill()
        third_kill.wait(30)
        await burst(4000, 1000)
        final = start_materializer(settings)
        try:
            await bus.wait_visible(range(settings.partitions))
        finally:
            assert stop_process(final)[0] == 0
    ends = await end_offsets(settings)
    reader = ViewReader(settings.view_path)
    try:
        assert reader.offsets() == {p: o for p, o in ends.items() if o}
        # Every event applied exactly once: the applied counters equal the log length.
        assert sum(reader.applied_events().values()) == sum(ends.values()) == 5000
        rows = {(r.map_index, r.key): int(r.value) for r in reader.entries(limit=10_000)}
    finally:
        reader.close()
    expected: dict[tuple[int, str], int] = {}
    for i in range(5000):
        expected[(i % 40, f"k{i % 7}")] = max(expected.get((i % 40, f"k{i % 7}"), -1), i)
    assert rows == expected


async def test_foreign_malformed_messages_are_dead_lettered(settings: Settings) -> None:
    async with XComBus(settings) as bus:
        ti = bus.task_instance("d", "r", "t")
        before = await ti.xcom_push("a", 1)
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
        await producer.start()
        try:
            part = before.partition
            key = ti.key.encode()
            bad = [(key, b"\xc1 not msgpack"), (b"not a key", b"x"), (None, b"x"), (key, None),
                   (key, b'{"kind":"push","schema":1}')]
            for k, v in bad:
                await producer.send_and_wait(settings.topic, key=k, value=v, partition=part)
        finally:
            await producer.stop()
        after = await ti.xcom_push("b", 2)
        await ti.xcom_push("a", 3)
        mat = start_materializer(settings)
        try:
            assert await bus.task_instance("d", "r", "x").xcom_pull(task_ids="t", key="a") == 3
            assert await bus.task_instance("d", "r", "x").xcom_pull(task_ids="t", key="b") == 2
        finally:
            code, out = stop_process(mat)
        assert code == 0, out
    reader = ViewReader(settings.view_path)
    dead = reader.dead_letters()
    reader.close()
    assert [d.offset for d in dead] == list(range(before.offset + 1, after.offset))
    assert all(d.partition == part and d.reason for d in dead)
    assert dead[0].value == b"\xc1 not msgpack"


async def test_unserializable_value_is_refused_and_nothing_is_sent(settings: Settings) -> None:
    async with XComBus(settings) as bus:
        ti = bus.task_instance("d", "r", "t")
        before = await end_offsets(settings)
        with pytest.raises(XComSerializationError, match=r"'bad'.*builtins.object"):
            await ti.xcom_push("bad", {"a": [object()]})
        with pytest.raises(XComValueTooLargeError, match="max_value_bytes"):
            await ti.xcom_push("huge", "x" * (settings.max_value_bytes + 1))
        assert await end_offsets(settings) == before


async def test_unreachable_broker_fails_within_its_bound(settings: Settings) -> None:
    unreachable = settings.replace(bootstrap_servers="127.0.0.1:1", connect_timeout=2.0)
    started = time.monotonic()
    with pytest.raises(XComBrokerError, match="is the broker running"):
        async with XComBus(unreachable):
            pass
    assert time.monotonic() - started < 2.0 * 3 + 5  # bounded: never a hang


async def test_pull_times_out_naming_lagging_partitions_when_no_materializer(settings: Settings) -> None:
    async with XComBus(settings.replace(pull_timeout=1.0)) as bus:
        ti = bus.task_instance("d", "r", "t")
        receipt = await ti.xcom_push("k", 1)
        with pytest.raises(XComTimeoutError, match=f"partition {receipt.partition} at 0 of"):
            await ti.xcom_pull(task_ids="t", key="k", map_indexes=None)
        # The explicit opt-out reads the (empty) view without waiting, once it exists.
        async with XComBus(settings, materialize=True):
            pass
        await bus.task_instance("d", "r", "t").xcom_pull(task_ids="t", key="k", consistency="eventual")


def test_materializer_exits_zero_on_sigterm_and_sigint(settings: Settings) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        mat = start_materializer(settings)
        time.sleep(3)
        code, out = stop_process(mat, sig)
        assert code == 0, out
    second = subprocess.run(MATERIALIZER,
                            env={**settings_env(settings), "XCOMBUS_BOOTSTRAP_SERVERS": "127.0.0.1:1",
                                 "XCOMBUS_CONNECT_TIMEOUT": "2"},
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 1 and "is the broker running" in second.stderr


def test_push_and_pull_on_uvloop(settings: Settings) -> None:
    # The event loop is the application's choice; uvloop is the one docs/benchmarks.md
    # recommends for high push rates, so the whole path must work on it too.
    uvloop = pytest.importorskip("uvloop")  # installed by the test extra on Linux and macOS

    async def main() -> None:
        assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        async with XComBus(settings, materialize=True) as bus:
            tis = [bus.task_instance("dag", "run", f"t{i}", map_index=i) for i in range(20)]
            receipts = await asyncio.gather(*(ti.xcom_push("k", {"i": i}) for i, ti in enumerate(tis)))
            assert len({(r.partition, r.offset) for r in receipts}) == 20
            down = bus.task_instance("dag", "run", "down")
            for i in range(20):
                assert await down.xcom_pull(task_ids=f"t{i}", key="k", map_indexes=i) == {"i": i}

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
async def test_every_compression_codec_round_trips(settings: Settings, codec: str) -> None:
    settings = settings.replace(compression=codec)
    async with XComBus(settings, materialize=True) as bus:
        producer = bus._publisher._producer
        assert producer is not None
        assert producer._compression_type == (None if codec == "none" else codec)
        tis = [bus.task_instance("dag", "run", "up", map_index=i) for i in range(50)]
        await asyncio.gather(*(ti.xcom_push("k", f"value {i} " * 20) for i, ti in enumerate(tis)))
        down = bus.task_instance("dag", "run", "down")
        assert await down.xcom_pull(task_ids="up", key="k") == [f"value {i} " * 20 for i in range(50)]
