"""Interchangeable backends end to end: a custom one, object storage, resolution errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from tests.helpers import EXAMPLES, cli, settings_env, start_materializer, stop_process
from xcombus import (
    ObjectStorageXCom,
    Settings,
    XComBus,
    XComConfigError,
    XComNotFoundError,
    XComRecord,
    XComSerializationError,
    load_backend,
)
from xcombus.deadletters import retry_dead_letters
from xcombus.events import SCHEMA_VERSION, Push, TaskInstanceKey, encode_event, now_us
from xcombus.view import ViewReader

pytestmark = pytest.mark.integration
RUN = "manual__2026-11-24T00:00:00+00:00"


@pytest.fixture
def examples_importable(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    yield


async def test_custom_backend_end_to_end_with_light_listings(settings: Settings, examples_importable: None) -> None:
    custom = settings.replace(xcom_backend="example_backend.ZlibJsonXCom")
    value = {"rows": list(range(200)), "note": "compressed on the topic"}
    mat = start_materializer(custom)
    try:
        async with XComBus(custom) as bus:
            await bus.task_instance("dag", RUN, "up").xcom_push("return_value", value)
            assert await bus.task_instance("dag", RUN, "down").xcom_pull(task_ids="up") == value
    finally:
        assert stop_process(mat)[0] == 0
    reader = ViewReader(custom.view_path)
    [row] = reader.entries()
    reader.close()
    assert row.codec == "example-zlib-json/1" and row.value[:1] == b"\x78"  # zlib header
    listed = cli("ls", "--json", settings=custom)
    assert listed.returncode == 0, listed.stderr
    light = json.loads(listed.stdout)["value"]
    assert light.endswith(f"[{len(row.value)} bytes stored]") and "…" in light  # the preview
    # A reader configured with another backend refuses these values instead of misreading.
    other = settings.replace(view_path=settings.view_path + ".default")
    mat = start_materializer(other)
    try:
        async with XComBus(other) as bus:
            await bus.wait_visible(range(other.partitions))
    finally:
        stop_process(mat)
    reader = ViewReader(other.view_path)
    dead, rows = reader.dead_letters(), reader.entries()
    reader.close()
    assert rows == [] and len(dead) == 1 and "example-zlib-json/1" in dead[0].reason


def test_backend_is_resolved_at_start_up(settings: Settings) -> None:
    with pytest.raises(XComConfigError, match="cannot be imported"):
        XComBus(settings, xcom_backend="no_such_module.Backend")
    with pytest.raises(XComConfigError, match=r"not a subclass of xcombus\.BaseXCom"):
        XComBus(settings, xcom_backend="xcombus.settings.Settings")
    with pytest.raises(XComConfigError, match="dotted path"):
        XComBus(settings, xcom_backend="Backend")
    env = {**settings_env(settings), "XCOMBUS_XCOM_BACKEND": "no_such_module.Backend"}
    # The checkout's script (the CLI's twin) maps a configuration error to exit 2 as well.
    proc = subprocess.run([sys.executable, "-m", "consumers.materializer"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "no_such_module" in proc.stderr


@pytest.fixture
def objstore(settings: Settings, tmp_path: Path) -> Settings:
    return settings.replace(xcom_backend="xcombus.backends.ObjectStorageXCom",
                            object_storage_path=str(tmp_path / "objects"),
                            object_storage_threshold=100, object_storage_compression="gzip")


def objects(s: Settings) -> list[Path]:
    return sorted(p for p in Path(s.object_storage_path).rglob("*") if p.is_file())


@pytest.mark.parametrize("compression", ["", "gzip", "zstd"])
async def test_large_values_go_to_object_storage(objstore: Settings, compression: str) -> None:
    s = objstore.replace(object_storage_compression=compression)
    big = {"blob": bytes(range(256)) * 40, "text": "x" * 5000}
    async with XComBus(s, materialize=True) as bus:
        ti = bus.task_instance("dag", RUN, "t")
        await ti.xcom_push("small", [1, 2])
        await ti.xcom_push("big", big)
        assert await ti.xcom_pull(task_ids="t", key="big") == big
        assert await ti.xcom_pull(task_ids="t", key="small") == [1, 2]
    [obj] = objects(s)
    assert obj.name.endswith({"": ".json", "gzip": ".json.gz", "zstd": ".json.zst"}[compression])
    if compression:
        assert obj.stat().st_size < 3000  # compressed well below the ~15 kB of JSON
    reader = ViewReader(s.view_path)
    rows = {r.key: r for r in reader.entries()}
    reader.close()
    assert b"xcombus.objref" in rows["big"].value and len(rows["big"].value) < 400
    assert b"objref" not in rows["small"].value  # below the threshold: inline


async def test_listing_shows_the_reference_without_reading_the_object(objstore: Settings) -> None:
    async with XComBus(objstore, materialize=True) as bus:
        await bus.task_instance("dag", RUN, "t").xcom_push("big", "y" * 1000)
        await bus.wait_visible(range(objstore.partitions))
    for obj in objects(objstore):
        obj.unlink()  # listings must not need the payload
    listed = cli("ls", "--json", settings=objstore)
    assert listed.returncode == 0, listed.stderr
    light = json.loads(listed.stdout)["value"]
    assert light.startswith("<object file://") and "(1002 bytes)" in light
    backend = load_backend(objstore)
    reader = ViewReader(objstore.view_path)
    [row] = reader.entries()
    reader.close()
    with pytest.raises(XComNotFoundError, match="missing from object storage"):
        backend.deserialize_value(row)


async def test_replaced_and_cleared_payloads_are_purged(objstore: Settings) -> None:
    async with XComBus(objstore) as bus:
        ti = bus.task_instance("dag", RUN, "t")
        await ti.xcom_push("k", "a" * 500)   # replaced within one materializer batch
        await ti.xcom_push("k", "b" * 500)
        assert len(objects(objstore)) == 2
        async with XComBus(objstore, materialize=True) as mbus:
            await mbus.wait_visible(range(objstore.partitions))
            assert len(objects(objstore)) == 1
            await ti.xcom_push("k", "c" * 500)  # replaces a stored row
            assert await mbus.task_instance("dag", RUN, "r").xcom_pull(task_ids="t", key="k") == "c" * 500
            assert len(objects(objstore)) == 1
            await ti.xcom_clear()  # a new try: the payload goes too
            assert await mbus.task_instance("dag", RUN, "r").xcom_pull(task_ids="t", key="k") is None
            assert objects(objstore) == []


async def test_threshold_minus_one_never_and_zero_always(objstore: Settings) -> None:
    for threshold, expected in ((-1, 0), (0, 1)):
        s = objstore.replace(object_storage_threshold=threshold,
                             object_storage_path=f"{objstore.object_storage_path}-{threshold + 1}")
        async with XComBus(s) as bus:
            await bus.task_instance("dag", RUN, "t").xcom_push("k", "z" * 2000 if threshold < 0 else 1)
        assert len(objects(s)) == expected


async def test_object_paths_never_escape_the_base(objstore: Settings) -> None:
    backend = load_backend(objstore)
    assert backend is ObjectStorageXCom
    base = Path(objstore.object_storage_path).resolve()
    for parts in [("..", "..", "..", -1, "../../etc/passwd"), ("d", "r", "t", 0, "/abs/key"),
                  ("d", ".", "..", 1, "a\\..\\b"), ("d", "r", "t", -1, "%2e%2e/x")]:
        path = Path(backend.object_path(dag_id=parts[0], run_id=parts[1], task_id=parts[2],
                                        map_index=parts[3], key=parts[4])).resolve()
        assert base in path.parents, path
        assert len(path.relative_to(base).parts) == 6
    async with XComBus(objstore, materialize=True) as bus:
        ti = bus.task_instance("..", "..", "..")
        await ti.xcom_push("../../../escape", "e" * 1000)
        assert await ti.xcom_pull(task_ids="..", key="../../../escape") == "e" * 1000
    [obj] = objects(objstore)
    assert base in obj.resolve().parents


async def test_forged_references_are_refused_and_never_deleted(objstore: Settings, tmp_path: Path) -> None:
    victim = tmp_path / "precious.db"
    victim.write_text("do not delete")
    forged = (b'{"__type__":"xcombus.objref","__value__":{"url":"file://' + str(victim).encode()
              + b'","size":13,"sha256":"0"}}')
    async with XComBus(objstore) as bus:
        ti = TaskInstanceKey("dag", RUN, "t")
        producer = AIOKafkaProducer(bootstrap_servers=objstore.bootstrap_servers)
        await producer.start()
        await producer.send_and_wait(objstore.topic, key=ti.encode(), value=encode_event(
            Push(schema=1, key="k", value=forged, codec="msgspec-json/1", ts=1, producer="attacker")),
            partition=bus.partition_of(ti))
        await producer.stop()
        await bus.task_instance("dag", RUN, "t").xcom_push("k", "z" * 500)  # would purge the forged ref
        async with XComBus(objstore, materialize=True) as mbus:
            assert await mbus.task_instance("dag", RUN, "r").xcom_pull(task_ids="t", key="k") == "z" * 500
    assert victim.read_text() == "do not delete"
    reader = ViewReader(objstore.view_path)
    [dead] = reader.dead_letters()
    reader.close()
    assert "refusing object reference" in dead.reason
    backend = load_backend(objstore)
    record = XComRecord("dag", RUN, "t", -1, "k", forged, "msgspec-json/1", 0, None, "p", 1, 0, 0)
    with pytest.raises(XComSerializationError, match="refusing object reference"):
        backend.purge(record)
    with pytest.raises(XComSerializationError, match="refusing object reference"):
        backend.deserialize_value(record)
    assert victim.exists()


def test_object_storage_configuration_errors(objstore: Settings) -> None:
    with pytest.raises(XComConfigError):
        Settings.from_env({}, object_storage_compression="lzma")
    with pytest.raises(XComConfigError, match="not usable"):
        load_backend(objstore.replace(object_storage_path="nosuchproto://bucket/x"))
    with pytest.raises(XComSerializationError, match="object storage"):
        from xcombus import MsgspecXCom, XComRecord
        ref = b'{"__type__":"xcombus.objref","__value__":{"url":"file:///x","size":1,"sha256":"0"}}'
        MsgspecXCom.deserialize_value(XComRecord("d", "r", "t", -1, "k", ref, MsgspecXCom.codec, 0, None,
                                                 "p", 1, 0, 0))


async def test_retried_dead_letters_free_the_payloads_nothing_refers_to(objstore: Settings) -> None:
    """Object references refused by a misconfigured materializer are dead letters; retried
    after the fix, the payloads no row refers to any more (a push replaced within the
    retried batch, a push something newer already decided) are purged, the rest kept."""
    big = "z" * 1000  # above the threshold of 100 bytes: stored as an object
    async with XComBus(objstore) as bus:
        ti = bus.task_instance("dag", RUN, "t")
        await ti.xcom_push("a", big + "1")   # replaced by the next push, in the retried batch
        await ti.xcom_push("a", big + "2")   # applied by the retry
        await ti.xcom_push("b", big + "3")   # decided by the newer inline push below
        await ti.xcom_push("b", "inline")    # applied at once
    assert len(objects(objstore)) == 3
    elsewhere = objstore.replace(object_storage_path=str(Path(objstore.object_storage_path).parent / "other"))
    async with XComBus(elsewhere, materialize=True) as bus:  # references outside its store: refused
        assert await bus.task_instance("dag", RUN, "x").xcom_pull(task_ids="t", key="b") == "inline"
    reader = ViewReader(objstore.view_path)
    assert len(reader.dead_letters()) == 3
    reader.close()

    summary = await retry_dead_letters(objstore)
    assert (summary.applied, summary.superseded, summary.still_failing) == (1, 2, 0)
    async with XComBus(objstore, materialize=True) as bus:
        reader_ti = bus.task_instance("dag", RUN, "x")
        assert await reader_ti.xcom_pull(task_ids="t", key="a") == big + "2"
        assert await reader_ti.xcom_pull(task_ids="t", key="b") == "inline"
    reader = ViewReader(objstore.view_path)
    [row] = [r for r in reader.entries() if r.key == "a"]
    reader.close()
    ref = load_backend(objstore).reference(row)
    assert ref is not None
    [kept] = objects(objstore)
    assert kept.name in ref.url


async def test_a_duplicated_event_keeps_its_payload(objstore: Settings) -> None:
    """A producer that sends an event twice (the same reference) must not lose the payload:
    neither the materializer nor a dead-letter retry purges an object a row still uses."""
    big = "d" * 1000
    async with XComBus(objstore, materialize=True) as bus:
        ti = bus.task_instance("dag", RUN, "t")
        await ti.xcom_push("k", big)
        assert await ti.xcom_pull(task_ids="t", key="k") == big
    reader = ViewReader(objstore.view_path)
    [row] = reader.entries()
    reader.close()
    assert len(objects(objstore)) == 1
    duplicate = encode_event(Push(schema=SCHEMA_VERSION, key="k", value=row.value, codec=row.codec,
                                  ts=now_us(), producer="at-least-once"))
    raw_key = TaskInstanceKey("dag", RUN, "t").encode()
    producer = AIOKafkaProducer(bootstrap_servers=objstore.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(objstore.topic, key=raw_key, value=duplicate,
                                     partition=row.partition)
        async with XComBus(objstore, materialize=True) as bus:  # the materializer replaces the row
            assert await bus.task_instance("dag", RUN, "x").xcom_pull(task_ids="t", key="k") == big
        assert len(objects(objstore)) == 1
        # Once more, dead-lettered by a materializer looking elsewhere, then retried.
        await producer.send_and_wait(objstore.topic, key=raw_key, value=duplicate,
                                     partition=row.partition)
    finally:
        await producer.stop()
    elsewhere = objstore.replace(object_storage_path=str(Path(objstore.object_storage_path).parent / "other"))
    async with XComBus(elsewhere, materialize=True) as bus:
        await bus.wait_visible(range(objstore.partitions))
    summary = await retry_dead_letters(objstore)
    assert (summary.applied, summary.still_failing) == (1, 0)
    assert len(objects(objstore)) == 1
    async with XComBus(objstore, materialize=True) as bus:
        assert await bus.task_instance("dag", RUN, "x").xcom_pull(task_ids="t", key="k") == big
