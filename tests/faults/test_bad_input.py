"""Bad input on the topic: dead letters with reasons, good events applied in order, and a
retry after the fix that never undoes anything newer."""

from __future__ import annotations

import json
import zlib

import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from tests.helpers import EXAMPLES, cli
from xcombus import Settings, XComBus
from xcombus.events import SCHEMA_VERSION, Push, TaskInstanceKey, encode_event, now_us, partition_for
from xcombus.view import ViewReader

A = TaskInstanceKey("d", "r", "a")
B = TaskInstanceKey("d", "r", "b")


def zlib_push(key: str, value: object) -> bytes:
    """A push written by a producer configured with the example backend."""
    data = zlib.compress(msgspec.json.encode(value))
    return encode_event(Push(schema=SCHEMA_VERSION, key=key, value=data, codec="example-zlib-json/1",
                             ts=now_us(), producer="other-team"))


async def test_bad_events_are_dead_lettered_and_retried_after_the_fix(settings: Settings,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    async with XComBus(settings) as bus:  # creates the topic
        part_a = partition_for(A.encode(), settings.partitions)
        part_b = partition_for(B.encode(), settings.partitions)
        await producer.start()
        try:
            async def raw(ti: TaskInstanceKey | None, value: bytes | None, key: bytes | None = None) -> None:
                part = partition_for(ti.encode(), settings.partitions) if ti else part_a
                await producer.send_and_wait(settings.topic, key=key or (ti.encode() if ti else None),
                                             value=value, partition=part)

            await raw(A, zlib_push("a", {"from": "zlib"}))              # dead now, applied after the fix
            await raw(A, zlib_push("b", "old"))                         # dead now, superseded later
            await bus.task_instance("d", "r", "a").xcom_push("b", "b-new")
            await raw(B, zlib_push("c", "resurrect me?"))              # dead now, cleared later
            await bus.task_instance("d", "r", "b").xcom_clear()
            future = msgspec.msgpack.encode({"kind": "push", "schema": 99, "key": "k", "value": b"1",
                                             "codec": "msgspec-json/1", "ts": 1, "producer": "p"})
            await raw(A, future)                                        # a schema from the future
            await raw(A, b"\x00garbage")
            await raw(None, b"x", key=b'["d","r/../etc","t",-1]')     # not a task instance id
            await raw(A, encode_event(Push(schema=1, key="j", value=b"{not json", codec="msgspec-json/1",
                                           ts=1, producer="p")))     # refused by the backend
            await bus.task_instance("d", "r", "a").xcom_push("after", "applied in order")
        finally:
            await producer.stop()
        async with XComBus(settings, materialize=True) as m:
            assert await m.task_instance("d", "r", "x").xcom_pull(task_ids="a", key="after") == "applied in order"
    reader = ViewReader(settings.view_path)
    dead = reader.dead_letters()
    reader.close()
    reasons = [d.reason for d in dead]
    assert len(dead) == 7
    assert sum("codec 'example-zlib-json/1'" in r for r in reasons) == 3
    assert any("schema version 99" in r for r in reasons)
    assert any("undecodable" in r for r in reasons)
    assert any("task instance key" in r for r in reasons)
    assert any("refuses the value" in r for r in reasons)
    listed = cli("deadletters", "list", "--json", settings=settings)
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 7
    assert {json.loads(line)["partition"] for line in listed.stdout.splitlines()} <= {part_a, part_b}

    # The fix: configure the backend that reads these values, then retry.
    fixed = settings.replace(xcom_backend="example_backend.ZlibJsonXCom")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    retried = cli("deadletters", "retry", settings=fixed)
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout) == {"applied": 1, "superseded": 2, "still_failing": 4}
    async with XComBus(fixed, materialize=True) as bus:
        reader_ti = bus.task_instance("d", "r", "x")
        assert await reader_ti.xcom_pull(task_ids="a", key="a") == {"from": "zlib"}
        assert await reader_ti.xcom_pull(task_ids="a", key="b") == "b-new"      # not undone
        assert await reader_ti.xcom_pull(task_ids="b", key="c", default="gone") == "gone"  # not resurrected
    reader = ViewReader(settings.view_path)
    assert len(reader.dead_letters()) == 4
    reader.close()


async def test_retry_refuses_while_a_materializer_writes(settings: Settings) -> None:
    async with XComBus(settings, materialize=True):
        result = cli("deadletters", "retry", settings=settings)
    assert result.returncode == 1 and "another materializer" in result.stderr
