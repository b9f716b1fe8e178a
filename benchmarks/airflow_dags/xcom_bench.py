"""DAGs that time XCom operations from inside Airflow tasks (used only by bench_airflow.py).

Nothing here knows which XCom backend runs: ``benchmarks/bench_airflow.py`` runs the same
DAGs under Airflow's default backend, the common-io object-storage backend and xcombus
(``AIRFLOW__CORE__XCOM_BACKEND``). Each task times its own ``ti.xcom_push`` /
``ti.xcom_pull`` calls with ``time.perf_counter`` and appends one JSON line per figure to
the file named by ``XCOMBUS_BENCH_OUT``:

    {"dag": ..., "task": ..., "figure": ..., "seconds": [one sample per operation], ...}

Sizes come from the environment so ``--quick`` can shrink them:

- ``XCOMBUS_BENCH_SMALL_N`` (200): 1 KB values pushed one by one, then pulled one by one
  in a downstream task (``xcom_bench_small``);
- ``XCOMBUS_BENCH_SIZE_REPS`` ("1024:10,1048576:5,10485760:3"): size in bytes : how many
  values of that size are pushed, then pulled (``xcom_bench_sizes``);
- ``xcom_bench_ab`` pushes (then pulls) ``XCOMBUS_BENCH_AB_N`` (100) 1 KB values through
  Airflow's default backend class, the common-io object-storage class and the configured
  backend, alternating within one task, and times each one's ``serialize_value`` /
  ``deserialize_value`` alone as well; then the large values of ``XCOMBUS_BENCH_SIZE_REPS``
  alternating between object storage and the configured backend (the object-storage class
  reads ``AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_*`` under every configuration);
- ``XCOMBUS_BENCH_FANOUT`` (1000): mapped instances whose 1 KB return values a reducer
  reads through Airflow's lazy sequence (``xcom_bench_fanin``); the reducer times
  ``len()``, iterating the sequence (one item at a time, as a ``for`` loop does) and one
  slice ``values[:]``.

With ``XCOMBUS_BENCH_PROFILE`` set, the small DAG's tasks and the reducer do their work
untimed under cProfile instead (after one untimed push/pull that opens the connections) and
dump the stats to ``<that path>.push``, ``.pull`` and ``.fanin``.

A value "of N bytes" is a list of 100-character strings whose JSON is about N bytes long
(lines of a file, say): every backend serializes it element by element, as it would a
real payload, rather than one opaque string.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time

try:  # Airflow 3
    from airflow.sdk import dag, get_current_context, task
except ImportError:  # Airflow 2.10
    from airflow.decorators import dag, task
    from airflow.operators.python import get_current_context

SMALL_N = int(os.environ.get("XCOMBUS_BENCH_SMALL_N", "200"))
AB_N = int(os.environ.get("XCOMBUS_BENCH_AB_N", str(max(1, SMALL_N // 2))))
FANOUT = int(os.environ.get("XCOMBUS_BENCH_FANOUT", "1000"))
SIZE_REPS = [tuple(int(x) for x in part.split(":")) for part in
             os.environ.get("XCOMBUS_BENCH_SIZE_REPS", "1024:10,1048576:5,10485760:3").split(",")]
LINE = 100


def make_value(nbytes: int, seed: int = 0) -> list[str]:
    """A list of 100-character strings whose JSON is about ``nbytes`` long."""
    count = max(1, round(nbytes / (LINE + 4)))  # '"' + 100 chars + '"' + ', '
    stem = f"{seed:08d}-" + "abcdefghij" * 10
    return [f"{i:09d}{stem}"[:LINE] for i in range(count)]


def _record(figure: str, seconds: list[float], **extra: object) -> None:
    out = os.environ.get("XCOMBUS_BENCH_OUT")
    if not out:
        return
    ti = get_current_context()["ti"]
    line = {"dag": ti.dag_id, "task": ti.task_id, "figure": figure, "seconds": seconds, **extra}
    with open(out, "a") as f:  # tasks of `airflow dags test` run one after the other
        f.write(json.dumps(line) + "\n")


def _ti():
    return get_current_context()["ti"]


PROFILE = os.environ.get("XCOMBUS_BENCH_PROFILE", "")


def _profiled(suffix: str, work) -> None:
    """Run ``work()`` (untimed) under cProfile and dump its stats to
    ``<XCOMBUS_BENCH_PROFILE>.<suffix>``."""
    import cProfile

    prof = cProfile.Profile()
    prof.enable()
    work()
    prof.disable()
    prof.dump_stats(f"{PROFILE}.{suffix}")


# -- many small values: per push, per pull ---------------------------------------------------
@dag(dag_id="xcom_bench_small", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False,
     default_args={"retries": 0}, tags=["benchmark"])
def xcom_bench_small():
    @task
    def push_many() -> None:
        ti, value, samples = _ti(), make_value(1024), []
        if PROFILE:
            ti.xcom_push(key="warm", value=value)  # connect first: profile the steady state
            _profiled("push", lambda: [ti.xcom_push(key=f"k{i:04d}", value=value) for i in range(SMALL_N)])
            return
        for i in range(SMALL_N):
            started = time.perf_counter()
            ti.xcom_push(key=f"k{i:04d}", value=value)
            samples.append(time.perf_counter() - started)
        _record("push_1k", samples, nbytes=len(json.dumps(value)))

    @task
    def pull_many() -> None:
        ti, expected, samples = _ti(), make_value(1024), []
        if PROFILE:
            ti.xcom_pull(task_ids="push_many", key="warm")
            _profiled("pull", lambda: [ti.xcom_pull(task_ids="push_many", key=f"k{i:04d}")
                                       for i in range(SMALL_N)])
            return
        for i in range(SMALL_N):
            started = time.perf_counter()
            got = ti.xcom_pull(task_ids="push_many", key=f"k{i:04d}")
            samples.append(time.perf_counter() - started)
            if got != expected:
                raise AssertionError(f"pull k{i:04d}: got {str(got)[:200]}")
        _record("pull_1k", samples)

    push_many() >> pull_many()


xcom_bench_small()


# -- the configured backend against the others, paired in one task -------------------------
def _arms():
    """name -> XCom class: Airflow's default, common-io object storage, the configured one."""
    from airflow.providers.common.io.xcom.backend import XComObjectStorageBackend
    from airflow.sdk.bases.xcom import BaseXCom
    from airflow.sdk.execution_time.xcom import XCom

    return {"default": BaseXCom, "objstore": XComObjectStorageBackend, "backend": XCom}


def _rotated(names: list[str], i: int) -> list[str]:
    i %= len(names)
    return names[i:] + names[:i]


@dag(dag_id="xcom_bench_ab", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False,
     default_args={"retries": 0}, tags=["benchmark"])
def xcom_bench_ab():
    """Alternate, in one task, the same push (pull) through Airflow's default class, the
    common-io object-storage class and the configured backend: one process, one moment of
    a shared machine, so the differences are the backends' and not the machine's. Small
    values go through all three arms (``XCOMBUS_BENCH_AB_N`` rounds, default half of
    ``XCOMBUS_BENCH_SMALL_N``); the large values of
    ``XCOMBUS_BENCH_SIZE_REPS`` through object storage and the configured backend."""

    @task
    def ab_push() -> None:
        ti, arms, small = _ti(), _arms(), make_value(1024)
        where = {"dag_id": ti.dag_id, "task_id": ti.task_id, "run_id": ti.run_id, "map_index": -1}
        push: dict[str, list[float]] = {name: [] for name in arms}
        ser: dict[str, list[float]] = {name: [] for name in arms}
        for i in range(AB_N):
            for name in _rotated(list(arms), i):
                started = time.perf_counter()
                arms[name].set(f"{name}{i:04d}", small, **where)
                push[name].append(time.perf_counter() - started)
                started = time.perf_counter()  # the backend's share alone (not stored)
                arms[name].serialize_value(small, key=f"s{name}{i:04d}", **where)
                ser[name].append(time.perf_counter() - started)
        for name in arms:
            _record(f"ab_push_{name}", push[name], backend=arms[name].__qualname__)
            _record(f"ab_serialize_{name}", ser[name])
        for nbytes, reps in SIZE_REPS:
            if nbytes < 65_536:
                continue
            big: dict[str, list[float]] = {"objstore": [], "backend": []}
            for r in range(reps):
                value = make_value(nbytes, r)
                for name in _rotated(list(big), r):
                    started = time.perf_counter()
                    arms[name].set(f"{name}_{nbytes}_{r}", value, **where)
                    big[name].append(time.perf_counter() - started)
            for name in big:
                _record(f"ab_push_{nbytes}_{name}", big[name])

    @task
    def ab_pull() -> None:
        ti, arms, expected = _ti(), _arms(), make_value(1024)
        where = {"dag_id": ti.dag_id, "task_id": "ab_push", "run_id": ti.run_id}
        pull: dict[str, list[float]] = {name: [] for name in arms}
        deser: dict[str, list[float]] = {name: [] for name in arms}
        for i in range(AB_N):
            for name in _rotated(list(arms), i):
                started = time.perf_counter()
                got = arms[name].get_all(key=f"{name}{i:04d}", **where)  # what ti.xcom_pull calls
                pull[name].append(time.perf_counter() - started)
                if got != [expected]:
                    raise AssertionError(f"{name}{i:04d}: got {str(got)[:200]}")
                stored = arms[name]._get_xcom_db_ref(key=f"{name}{i:04d}", map_index=-1, **where)
                started = time.perf_counter()  # the backend's share alone
                arms[name].deserialize_value(stored)
                deser[name].append(time.perf_counter() - started)
        for name in arms:
            _record(f"ab_pull_{name}", pull[name])
            _record(f"ab_deserialize_{name}", deser[name])
        for nbytes, reps in SIZE_REPS:
            if nbytes < 65_536:
                continue
            big: dict[str, list[float]] = {"objstore": [], "backend": []}
            for r in range(reps):
                last = make_value(nbytes, r)[-1]
                for name in _rotated(list(big), r):
                    started = time.perf_counter()
                    got = arms[name].get_all(key=f"{name}_{nbytes}_{r}", **where)
                    big[name].append(time.perf_counter() - started)
                    if len(got) != 1 or got[0][-1] != last:
                        raise AssertionError(f"{name}_{nbytes}_{r}: wrong value {str(got)[:200]}")
            for name in big:
                _record(f"ab_pull_{nbytes}_{name}", big[name])

    ab_push() >> ab_pull()


xcom_bench_ab()


# -- one value each of 1 KB, 1 MB, 10 MB -----------------------------------------------------
@dag(dag_id="xcom_bench_sizes", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False,
     default_args={"retries": 0}, tags=["benchmark"])
def xcom_bench_sizes():
    @task
    def push_sizes() -> None:
        ti = _ti()
        for nbytes, reps in SIZE_REPS:
            samples = []
            for r in range(reps):
                value = make_value(nbytes, r)  # built outside the clock
                started = time.perf_counter()
                ti.xcom_push(key=f"v{nbytes}_{r}", value=value)
                samples.append(time.perf_counter() - started)
            _record(f"push_{nbytes}", samples, nbytes=len(json.dumps(value)))

    @task
    def pull_sizes() -> None:
        ti = _ti()
        for nbytes, reps in SIZE_REPS:
            samples = []
            for r in range(reps):
                started = time.perf_counter()
                got = ti.xcom_pull(task_ids="push_sizes", key=f"v{nbytes}_{r}")
                samples.append(time.perf_counter() - started)
                expected = make_value(nbytes, r)
                if not isinstance(got, list) or len(got) != len(expected) or got[-1] != expected[-1]:
                    raise AssertionError(f"pull v{nbytes}_{r}: wrong value {str(got)[:200]}")
            _record(f"pull_{nbytes}", samples)

    push_sizes() >> pull_sizes()


xcom_bench_sizes()


# -- a mapped fan-out of FANOUT instances and its reducer --------------------------------------
@dag(dag_id="xcom_bench_fanin", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False,
     default_args={"retries": 0}, tags=["benchmark"], max_active_tasks=64)
def xcom_bench_fanin():
    @task
    def make() -> list[int]:
        return list(range(FANOUT))

    @task(max_active_tis_per_dag=None)
    def mapped(i: int) -> list[str]:
        return make_value(1024, i)

    @task
    def reduce(values) -> None:
        if PROFILE:  # where one iteration's time goes, connections already open
            values[0]
            _profiled("fanin", lambda: [item for item in values])
            return
        started = time.perf_counter()
        n = len(values)
        length = time.perf_counter() - started
        it, per_item = iter(values), []
        started = time.perf_counter()
        for _ in range(n):
            t = time.perf_counter()
            item = next(it)
            per_item.append(time.perf_counter() - t)
            if not isinstance(item, list):
                raise AssertionError(f"mapped item: {str(item)[:200]}")
        iterate = time.perf_counter() - started
        started = time.perf_counter()
        whole = values[:]
        slice_s = time.perf_counter() - started
        if len(whole) != n or whole[-1] != make_value(1024, n - 1):
            raise AssertionError("slice of the lazy sequence differs")
        _record("fanin_len", [length], items=n)
        _record("fanin_iterate", [iterate], items=n)
        _record("fanin_item", per_item, items=n)
        _record("fanin_slice", [slice_s], items=n)

    reduce(mapped.expand(i=make()))


xcom_bench_fanin()
