"""XComBusBackend called the way real Airflow 3.3 and 2.10 call it, inside their own
environments: cheap imports, pass-through of values that are not references, references
that resolve (or fail clearly), Airflow's own serde for values xcombus's codec refuses,
one clear for several purges, and misconfiguration that fails a task with what to set."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.records_to_delete import RecordsToDelete

from tests.airflow.support import tail
from tests.airflow_env import AirflowEnv
from tests.helpers import start_materializer, stop_process
from xcombus import Settings, XComBus
from xcombus.audit import history
from xcombus.events import TaskInstanceKey
from xcombus.reference import parse_reference

# The first test of a session may build an Airflow environment (pip, ~1-3 min) first.
pytestmark = [pytest.mark.airflow, pytest.mark.integration, pytest.mark.timeout(1500)]

UNREACHABLE = "127.0.0.1:1"  # nothing listens there: any connection attempt fails at once

#: Imports Airflow's base class the way Airflow itself does first (on 2.10, importing the
#: backend before airflow.models.xcom is a circular import), and a stand-in for the row or
#: result object Airflow hands to deserialize_value and purge.
PRELUDE = """
import json, sys
try:
    import airflow.sdk.bases.xcom
    from airflow.sdk.execution_time.comms import XComResult
    AF3 = True
    def stored(value):  # what Airflow 3 hands over: XComResult(key, value), under its key
        key = value.get("key", "k") if isinstance(value, dict) else "k"
        return XComResult(key=key, value=value)
    def as_stored(returned):  # what serialize_value returned, as the API would store it
        return stored(json.loads(json.dumps(returned)))
except ImportError:
    import airflow.models.xcom
    AF3 = False
    class Row:  # what Airflow 2.10 hands over: a row with .value (JSON bytes)
        def __init__(self, value):
            self.value = value
    def stored(value):
        return Row(value if isinstance(value, bytes) else json.dumps(value).encode())
    def as_stored(returned):
        return Row(returned)
from xcombus.airflow import XComBusBackend
"""


def _python(af: AirflowEnv, code: str, env: dict[str, str], timeout: float = 300) -> str:
    done = af.python_run(PRELUDE + code, env=env, timeout=timeout)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"Airflow {af.version}:\n{tail(output)}"
    return done.stdout


def test_importing_the_backend_opens_nothing(airflow: AirflowEnv, settings: Settings) -> None:
    """Every Airflow process imports the backend (as soon as it imports Airflow's XCom
    module): beside Airflow's default it loads no Kafka client, SQLite driver or HTTP stack,
    starts no thread, and Airflow's CLI works with the broker unreachable."""
    code = """
import json, sys, threading, time
threads = threading.active_count()
started = time.perf_counter()
try:
    import airflow.sdk.bases.xcom  # resolves [core] xcom_backend, as every Airflow 3 process does
    from airflow.sdk.execution_time.xcom import XCom
except ImportError:
    from airflow.models.xcom import XCom  # Airflow 2.10
elapsed = time.perf_counter() - started
print("RESULT", json.dumps({"ms": elapsed * 1000, "backend": XCom.__name__,
                            "modules": sorted({m.split(".")[0] for m in sys.modules}),
                            "threads": threading.active_count() - threads}))
"""

    def probe(backend: str) -> dict:
        env = airflow.env(settings, XCOMBUS_BOOTSTRAP_SERVERS=UNREACHABLE,
                          AIRFLOW__CORE__XCOM_BACKEND=backend)
        done = airflow.python_run(code, env=env)
        assert done.returncode == 0, tail(done.stdout + done.stderr)
        line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
        result: dict = json.loads(line[7:])
        return result

    default = probe("airflow.sdk.execution_time.xcom.BaseXCom" if airflow.major >= 3
                    else "airflow.models.xcom.BaseXCom")
    ours = probe("xcombus.airflow.XComBusBackend")
    assert ours["backend"] == "XComBusBackend" and default["backend"] == "BaseXCom"
    added = set(ours["modules"]) - set(default["modules"])
    assert added <= {"xcombus", "msgspec", "__editable___xcombus_0_1_0_finder"}, added
    assert ours["threads"] == default["threads"], (ours["threads"], default["threads"])
    print(f"Airflow {airflow.version}: importing its XCom module took {ours['ms']:.0f} ms with "
          f"xcombus, {default['ms']:.0f} ms with the default backend; modules added: {sorted(added)}")
    env = airflow.env(settings, XCOMBUS_BOOTSTRAP_SERVERS=UNREACHABLE)
    parsed = airflow.run("dags", "reserialize", env=env, timeout=300)  # parses every DAG file
    assert parsed.returncode == 0, tail(parsed.stdout + parsed.stderr)
    listed = airflow.run("dags", "list", env=env, timeout=300)
    assert listed.returncode == 0, tail(listed.stdout + listed.stderr)
    assert "xcombus_features" in listed.stdout


def test_values_without_a_reference_pass_through(airflow: AirflowEnv, settings: Settings) -> None:
    """Values written by Airflow's REST API or by the default backend before the switch are
    read as Airflow reads them; purging them publishes nothing (the broker is unreachable)."""
    env = airflow.env(settings, XCOMBUS_BOOTSTRAP_SERVERS=UNREACHABLE)
    code = """
api = {"from": "api", "n": [1, 2]}
assert XComBusBackend.deserialize_value(stored(api)) == api
if AF3:  # the default backend's row: Airflow's serde envelope as a JSON value
    from airflow.sdk.bases.xcom import BaseXCom
    before = stored(json.loads(json.dumps(BaseXCom.serialize_value({"t": (1, 2)}))))
    assert XComBusBackend.deserialize_value(before) == {"t": (1, 2)}
else:  # the default backend's row: JSON bytes
    from airflow.models.xcom import BaseXCom
    before = Row(BaseXCom.serialize_value((1, 2)))
    assert XComBusBackend.deserialize_value(before) == (1, 2)
    assert XComBusBackend.orm_deserialize_value(Row(b'{"a": 1}')) == {"a": 1}
XComBusBackend.purge(stored(api))
XComBusBackend.purge(stored("just a string"))
print("ok")
"""
    assert _python(airflow, code, env).strip().endswith("ok")


def _push_script(map_index: int = -1) -> str:
    return f"""
import pendulum
from xcombus.errors import XComSerializationError
ident = dict(dag_id="d", run_id="manual__1", task_id="t", map_index={map_index})
ref = XComBusBackend.serialize_value({{"a": (1, 2)}}, key="plain", **ident)
assert XComBusBackend.deserialize_value(as_stored(ref)) == {{"a": (1, 2)}}
# A pendulum datetime (what Airflow's context hands out): xcombus's codec refuses it, so it
# is written with Airflow's own serde and comes back as Airflow's default would give it.
when = pendulum.datetime(2026, 1, 2, 3, 4, 5, tz="Europe/Paris")
ref_p = XComBusBackend.serialize_value(when, key="when", **ident)
back = XComBusBackend.deserialize_value(as_stored(ref_p))
assert back == when and isinstance(back, pendulum.DateTime), (back, type(back))
# A tampered reference is refused, never handed over.
raw = dict(ref) if AF3 else json.loads(ref)
raw["sha256"] = "0" * 64
try:
    XComBusBackend.deserialize_value(stored(raw))
except XComSerializationError as exc:
    assert "SHA-256" in str(exc), exc
else:
    raise AssertionError("a tampered reference was resolved")
if not AF3:  # Airflow 2's UI listing: the label with the preview, never a fetch
    label = XComBusBackend.orm_deserialize_value(Row(ref))
    assert label.startswith("[xcombus reference: dict") and "'a': (1, 2)" in label, label
# Three purges of the same try's keys: one clear on the topic.
for r in (ref, ref_p, ref):
    XComBusBackend.purge(as_stored(r))
print("RESULT", json.dumps({{"plain": ref if AF3 else json.loads(ref),
                  "when": ref_p if AF3 else json.loads(ref_p)}}))
"""


def test_references_resolve_from_the_log_and_fail_clearly_once_gone(
        airflow: AirflowEnv, topic: Settings, tmp_path: Path) -> None:
    settings = topic.replace(view_path=str(tmp_path / "none.db"), pull_timeout=10.0)
    env = airflow.env(settings)
    out = _python(airflow, _push_script(), env)
    refs = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    plain, when = parse_reference(refs["plain"]), parse_reference(refs["when"])
    assert plain is not None and when is not None
    assert plain.codec == "msgspec-json/1" and when.codec == "airflow-serde/1"
    assert plain.preview == "{'a': (1, 2)}" and plain.type == "dict"
    events = asyncio.run(history(settings, "d", "manual__1", "t", "plain"))
    assert [e.kind for e in events] == ["push", "clear"]
    # Outside a task the running try is unknown: the clear names the purged try, which can
    # never fence the try that purges (a guess above it would fence a re-run keeping its try).
    assert events[1].try_number == 1

    async def expire() -> None:  # what retention does to old events
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
        await admin.start()
        try:
            tp = TopicPartition(settings.topic, plain.partition)
            await admin.delete_records({tp: RecordsToDelete(plain.offset + 1)}, timeout_ms=10_000)
        finally:
            await admin.close()

    asyncio.run(expire())
    code = f"""
from xcombus.errors import XComNotFoundError
try:
    XComBusBackend.deserialize_value(stored({json.dumps(refs["plain"])}))
except XComNotFoundError as exc:
    print("ERROR", exc)
"""
    started = time.monotonic()
    out = _python(airflow, code, env)
    assert "ERROR" in out and "'plain'" in out and "retention" in out, out
    assert time.monotonic() - started < 60  # a clear error, not a wait until a timeout


@pytest.mark.parametrize("problem", ["unreachable broker", "missing topic", "unknown codec"])
def test_misconfiguration_fails_the_task_with_what_to_set(airflow: AirflowEnv, topic: Settings,
                                                          tmp_path: Path, problem: str) -> None:
    changes, expected = {
        "unreachable broker": ({"XCOMBUS_BOOTSTRAP_SERVERS": UNREACHABLE, "XCOMBUS_CONNECT_TIMEOUT": "3"},
                               "XCOMBUS_BOOTSTRAP_SERVERS"),
        "missing topic": ({"XCOMBUS_TOPIC": topic.topic + ".typo"}, "xcombus topic create"),
        "unknown codec": ({"XCOMBUS_XCOM_BACKEND": "xcombus.backends.NoSuchCodec"},
                          "XCOMBUS_XCOM_BACKEND"),
    }[problem]
    env = airflow.env(topic.replace(view_path=str(tmp_path / "none.db")), **changes)
    started = time.monotonic()
    done = airflow.run("dags", "test", "xcombus_smoke", env=env, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode != 0, f"the DAG succeeded despite the {problem}:\n{tail(output)}"
    assert expected in output, tail(output)
    print(f"{problem}: failed in {time.monotonic() - started:.1f}s")


def test_threads_share_one_connection_and_forged_references_are_refused(
        airflow: AirflowEnv, topic: Settings, tmp_path: Path) -> None:
    """Several threads pushing at first use share one started connection; a reference stored
    under another XCom, or naming another topic, is refused; purging a reference that names
    another task instance clears nothing; after close, calls fail at once."""
    settings = topic.replace(view_path=str(tmp_path / "none.db"))
    code = """
import threading
from xcombus.airflow import _runtime
from xcombus.errors import XComClosedError, XComSerializationError
errors, refs = [], []
def push(i):
    try:
        refs.append(XComBusBackend.serialize_value(i, key=f"k{i}", dag_id="d", run_id="r",
                                                   task_id="t", map_index=-1))
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=push, args=(i,)) for i in range(6)]
for t in threads: t.start()
for t in threads: t.join()
assert not errors and len(refs) == 6, errors

mine = XComBusBackend.serialize_value("secret", key="other", dag_id="d", run_id="r", task_id="t",
                                      map_index=-1)
raw = dict(mine) if AF3 else json.loads(mine)
elsewhere = {**raw, "topic": "some.other.topic"}
for forged, expected in ((elsewhere, "another topic"),):
    try:
        XComBusBackend.deserialize_value(stored(forged))
    except XComSerializationError as exc:
        assert expected in str(exc), exc
    else:
        raise AssertionError("a reference to another topic was resolved")
if AF3:  # Airflow 3 says under which key it read the value
    from airflow.sdk.execution_time.comms import XComResult
    try:
        XComBusBackend.deserialize_value(XComResult(key="innocent", value=raw))
    except XComSerializationError as exc:
        assert "refusing to read another XCom" in str(exc), exc
    else:
        raise AssertionError("a reference stored under another key was resolved")
else:  # Airflow 2.10's rows name their task instance
    class Row2:
        dag_id, run_id, task_id, map_index, value = "d", "r", "victim", -1, mine
    try:
        XComBusBackend.deserialize_value(Row2())
    except XComSerializationError as exc:
        assert "refusing to read another XCom" in str(exc), exc
    else:
        raise AssertionError("a reference stored under another task was resolved")
    # Purging it from the victim's row clears nothing (the reference names task t).
    XComBusBackend.purge(Row2(), None)
rt = _runtime()
print("RESULT", json.dumps({"clears": rt.counts["clears"], "pushes": rt.counts["pushes"]}))
rt.close()
rt.close()  # twice: nothing happens
try:
    XComBusBackend.serialize_value(1, key="late", dag_id="d", run_id="r", task_id="t", map_index=-1)
except XComClosedError:
    print("CLOSED")
"""
    out = _python(airflow, code, airflow.env(settings))
    result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    assert result == {"clears": 0, "pushes": 7}, result
    assert "CLOSED" in out
    assert out.count("xcombus: publishing XComs to topic") <= 1


def test_pushes_from_async_code_and_forked_children_resolve(
        airflow: AirflowEnv, topic: Settings, tmp_path: Path) -> None:
    """The calling thread drives the runtime's loop: a push from inside a running event loop
    (async code calling Airflow's sync API) and a push from a child forked after pushing both
    publish and resolve; the parent's connection keeps working after the fork."""
    settings = topic.replace(view_path=str(tmp_path / "none.db"))
    code = """
import asyncio, os
def push(value, key):
    return XComBusBackend.serialize_value(value, key=key, dag_id="d", run_id="r", task_id="t",
                                          map_index=-1)
def pull(returned):
    return XComBusBackend.deserialize_value(as_stored(returned))
first = push({"n": 1}, "before")
async def inside_a_loop():
    return push({"n": 2}, "async")  # blocks this loop: xcombus's must run elsewhere
from_async = asyncio.run(inside_a_loop())
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    try:
        child = push({"n": 3}, "child")
        os.write(w, json.dumps([child if AF3 else child.decode(), pull(child)]).encode())
    finally:
        os._exit(0)
os.close(w)
child, child_pulled = json.loads(os.read(r, 65536))
os.waitpid(pid, 0)
if not AF3:
    child = child.encode()
after = push({"n": 4}, "after")
print("RESULT", json.dumps([pull(first), pull(from_async), child_pulled, pull(child), pull(after)]))
"""
    out = _python(airflow, code, airflow.env(settings))
    result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    assert result == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 3}, {"n": 4}], result


def test_values_only_airflow_can_serialize_still_follow_the_offload(
        airflow: AirflowEnv, topic: Settings, tmp_path: Path) -> None:
    """4.6 MB of pendulum datetimes (xcombus's codec refuses the type): written with Airflow's
    serde *and* offloaded to object storage, then read back exactly."""
    objects = tmp_path / "objects"
    settings = topic.replace(view_path=str(tmp_path / "none.db"),
                             xcom_backend="xcombus.backends.ObjectStorageXCom",
                             object_storage_path=str(objects), object_storage_threshold=65536)
    code = """
import pendulum
value = [pendulum.datetime(2026, 1, 1, tz="UTC").add(minutes=i) for i in range(20_000)]
ref = XComBusBackend.serialize_value(value, key="times", dag_id="d", run_id="r", task_id="t",
                                     map_index=-1)
back = XComBusBackend.deserialize_value(as_stored(ref))
assert back == value and isinstance(back[0], pendulum.DateTime)
print("RESULT", json.dumps(ref if AF3 else json.loads(ref)))
"""
    out = _python(airflow, code, airflow.env(settings))
    ref = parse_reference(json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:]))
    assert ref is not None and ref.codec == "airflow-serde/1"
    assert ref.size < 1024 < 1_000_000 < ref.value_size  # the event carries a pointer only
    assert len(list(objects.rglob("*.json"))) == 1


def test_an_override_made_after_a_push_is_what_an_airflow_task_pulls(
        airflow: AirflowEnv, topic: Settings, tmp_path: Path) -> None:
    """Airflow's table keeps the reference to the pushed version; `xcombus set` / `delete`
    made since are what a task pulls on a host with a view, as outside Airflow."""
    settings = topic.replace(view_path=str(tmp_path / "view.db"))
    mat = start_materializer(settings)
    try:
        push = """
ident = dict(dag_id="d", run_id="manual__1", task_id="t", map_index=-1)
refs = {k: XComBusBackend.serialize_value({"v": k}, key=k, **ident) for k in ("kept", "fixed", "gone")}
print("RESULT", json.dumps({k: r if AF3 else r.decode() for k, r in refs.items()}))
"""
        out = _python(airflow, push, airflow.env(settings))
        refs = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])

        async def override() -> None:
            async with XComBus(settings) as bus:
                ti = TaskInstanceKey("d", "manual__1", "t", -1)
                await bus.set_xcom(ti, "fixed", {"v": "by hand"}, actor="alice", reason="INC-42")
                await bus.delete_xcom(ti, "gone", actor="alice", reason="leaked secret")
                await bus.wait_visible(range(settings.partitions))

        asyncio.run(override())
        pull = f"""
refs = {refs!r}
print("RESULT", json.dumps({{k: XComBusBackend.deserialize_value(as_stored(r if AF3 else r.encode()))
                             for k, r in refs.items()}}))
"""
        out = _python(airflow, pull, airflow.env(settings))
    finally:
        stop_process(mat)
    pulled = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    assert pulled == {"kept": {"v": "kept"}, "fixed": {"v": "by hand"}, "gone": None}, pulled
    assert "was deleted by alice" in out
