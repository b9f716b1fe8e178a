"""The baseline: a relational XCom table as Airflow 2.10 keeps it, on SQLite, with SQLAlchemy.

    python -m benchmarks.baseline_sql [--quick]     # the baseline alone (no broker needed)

``benchmarks/run.py`` runs it in the same run as xcombus, on the same machine, and reports
xcombus/baseline ratios. What is modelled, after Airflow 2.10's ``airflow.models.xcom``:

- **the tables**: ``dag_run`` (integer id, unique ``(dag_id, run_id)``), ``task_instance``
  (primary key ``(dag_id, task_id, run_id, map_index)``) and ``xcom`` with Airflow's
  columns ``dag_run_id, task_id, map_index, key, dag_id, run_id, value BLOB, timestamp``,
  primary key ``(dag_run_id, task_id, map_index, key)``, indexes ``idx_xcom_key`` and
  ``idx_xcom_task_instance (dag_id, task_id, run_id, map_index)``, and the foreign key to
  ``task_instance`` (``ON DELETE CASCADE``) enforced with ``PRAGMA foreign_keys=ON`` as
  Airflow does on SQLite;
- **push** (``XCom.set``): one session; look the run's ``dag_run.id`` up, serialize the value
  as JSON, ``DELETE`` the previous row of ``(key, run_id, task_id, dag_id, map_index)``,
  ``INSERT`` the new one, flush, **commit** (what ``@provide_session`` does): one committed
  transaction per push;
- **pull one key** (``XCom.get_one`` through ``get_many(...).with_entities(value).first()``):
  one session, one ``SELECT`` joined to ``dag_run`` ordered by logical date and timestamp,
  ``LIMIT 1``, then ``json.loads``;
- **fan-in** (``ti.xcom_pull(task_ids='mapped', map_indexes=[0..999])``): one session, one
  ``SELECT value ... WHERE task_id = ? AND map_index IN (...)`` ordered by map index, then
  ``json.loads`` per row.

**The database file** is SQLite with its *default* settings, as Airflow's SQLite metadata
database is: rollback journal (``journal_mode=delete``, not WAL) and ``synchronous=FULL``,
so every commit is made durable with fsyncs. SQLAlchemy 2's default pool for a file DB keeps
connections open (Airflow 2.10 on SQLAlchemy 1.4 opened one per session with ``NullPool``),
which favours the baseline. Airflow's own code (DAG parsing, ``provide_session`` plumbing,
``XComEncoder``, the task-instance lookups around a push) is not run, which favours it too.

Sizes match xcombus's figures: throughput over pushes from 200 task instances, 2,000 timed
pulls after 200 untimed, a fan-in over 1,000 map indexes timed 200 times after 20 untimed.
Pushes run one after another: a single-file SQLite database has one writer at a time, so
concurrent writers would only queue behind its lock; sequential pushes are its best case.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    select,
)
from sqlalchemy.orm import DeclarativeBase, sessionmaker

ID_LEN = 250  # airflow.models.base.ID_LEN

__all__ = ["SqlXCom", "bench_fanin", "bench_pull", "bench_push"]


class Base(DeclarativeBase):
    pass


class DagRun(Base):
    __tablename__ = "dag_run"
    id = Column(Integer, primary_key=True)
    dag_id = Column(String(ID_LEN), nullable=False)
    run_id = Column(String(ID_LEN), nullable=False)
    logical_date = Column(DateTime(timezone=True), nullable=False)
    __table_args__ = (UniqueConstraint("dag_id", "run_id", name="dag_run_dag_id_run_id_key"),)


class TaskInstance(Base):
    __tablename__ = "task_instance"
    dag_id = Column(String(ID_LEN), nullable=False)
    task_id = Column(String(ID_LEN), nullable=False)
    run_id = Column(String(ID_LEN), nullable=False)
    map_index = Column(Integer, nullable=False, server_default="-1")
    state = Column(String(20))
    __table_args__ = (PrimaryKeyConstraint("dag_id", "task_id", "run_id", "map_index",
                                           name="task_instance_pkey"),)


class XCom(Base):
    """Airflow 2.10's ``xcom`` table."""

    __tablename__ = "xcom"
    dag_run_id = Column(Integer, nullable=False)
    task_id = Column(String(ID_LEN), nullable=False)
    map_index = Column(Integer, nullable=False, server_default="-1")
    key = Column(String(512), nullable=False)
    dag_id = Column(String(ID_LEN), nullable=False)
    run_id = Column(String(ID_LEN), nullable=False)
    value = Column(LargeBinary)
    timestamp = Column(DateTime(timezone=True), nullable=False)
    __table_args__ = (
        PrimaryKeyConstraint("dag_run_id", "task_id", "map_index", "key", name="xcom_pkey"),
        Index("idx_xcom_key", "key"),
        Index("idx_xcom_task_instance", "dag_id", "task_id", "run_id", "map_index"),
        ForeignKeyConstraint(["dag_id", "task_id", "run_id", "map_index"],
                             ["task_instance.dag_id", "task_instance.task_id",
                              "task_instance.run_id", "task_instance.map_index"],
                             name="xcom_task_instance_fkey", ondelete="CASCADE"),
    )


class SqlXCom:
    """An Airflow-style XCom store in one SQLite file (default journal, default sync)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.engine = create_engine(f"sqlite:///{self.path}",
                                    connect_args={"check_same_thread": False})

        @event.listens_for(self.engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:  # what Airflow sets on SQLite
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        Base.metadata.create_all(self.engine)
        self.Session = sessionmaker(self.engine, expire_on_commit=False)

    def pragmas(self) -> dict[str, Any]:
        with self.engine.connect() as conn:
            return {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                    for name in ("journal_mode", "synchronous", "foreign_keys")}

    def add_run(self, dag_id: str, run_id: str, task_instances: list[tuple[str, int]]) -> None:
        """Create the DAG run and its task instances (what the scheduler did before any push)."""
        with self.Session() as session, session.begin():
            session.add(DagRun(dag_id=dag_id, run_id=run_id, logical_date=datetime.now(UTC)))
            session.add_all(TaskInstance(dag_id=dag_id, task_id=t, run_id=run_id, map_index=m,
                                         state="running") for t, m in task_instances)

    def push(self, dag_id: str, run_id: str, task_id: str, key: str, value: Any,
             map_index: int = -1) -> None:
        """``XCom.set``: delete-then-insert in one committed transaction."""
        with self.Session() as session:
            dag_run_id = session.execute(select(DagRun.id).where(
                DagRun.dag_id == dag_id, DagRun.run_id == run_id)).scalar()
            if dag_run_id is None:
                raise ValueError(f"DAG run not found: {dag_id} {run_id}")
            data = json.dumps(value).encode()
            session.execute(delete(XCom).where(
                XCom.key == key, XCom.run_id == run_id, XCom.task_id == task_id,
                XCom.dag_id == dag_id, XCom.map_index == map_index))
            session.add(XCom(dag_run_id=dag_run_id, key=key, value=data, run_id=run_id,
                             task_id=task_id, dag_id=dag_id, map_index=map_index,
                             timestamp=datetime.now(UTC)))
            session.flush()
            session.commit()

    def _query(self, dag_id: str, run_id: str, task_id: str, key: str) -> Any:
        return (select(XCom.value)
                .join(DagRun, XCom.dag_run_id == DagRun.id)
                .where(XCom.key == key, XCom.task_id == task_id, XCom.dag_id == dag_id,
                       XCom.run_id == run_id))

    def pull_one(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value",
                 map_index: int = -1) -> Any:
        """``XCom.get_one``: the latest matching row, deserialized; None if there is none."""
        with self.Session() as session:
            stmt = (self._query(dag_id, run_id, task_id, key)
                    .where(XCom.map_index == map_index)
                    .order_by(DagRun.logical_date.desc(), XCom.timestamp.desc()).limit(1))
            data = session.execute(stmt).scalar()
            return None if data is None else json.loads(data)

    def pull_many(self, dag_id: str, run_id: str, task_id: str, map_indexes: list[int],
                  key: str = "return_value") -> list[Any]:
        """Fan-in: every listed map index of a task in one ``IN`` query, in map-index order."""
        with self.Session() as session:
            stmt = (self._query(dag_id, run_id, task_id, key)
                    .where(XCom.map_index.in_(map_indexes)).order_by(XCom.map_index))
            return [json.loads(data) for data in session.execute(stmt).scalars()]

    def close(self) -> None:
        self.engine.dispose()


# -- the figures (synchronous; times in seconds) ------------------------------------------
DAG, RUN = "bench_dag", "manual__2026-01-01T00:00:00+00:00"
SMALL_STR = "s3://bucket/key-0001"


def bench_push(workdir: Path, pushes: int, task_instances: int = 200) -> dict[str, Any]:
    """Sequential pushes of small ints from ``task_instances`` task instances (key 'value').

    Returns throughput and the per-push latencies (each push is one committed transaction).
    """
    store = SqlXCom(workdir / f"baseline-push-{time.monotonic_ns()}.db")
    try:
        tis = [(f"worker_{w}", -1) for w in range(task_instances)]
        store.add_run(DAG, RUN, tis)
        for w in range(task_instances):  # the first push of each: untimed, like xcombus's
            store.push(DAG, RUN, tis[w][0], "value", w)
        lat: list[float] = []
        start = time.perf_counter()
        for i in range(pushes):
            t = time.perf_counter()
            store.push(DAG, RUN, tis[i % task_instances][0], "value", i)
            lat.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - start
        pragmas = store.pragmas()
    finally:
        store.close()
    return {"throughput": pushes / elapsed, "latencies": lat, "pragmas": pragmas}


def _timed(op: Any, samples: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        op()
    out = []
    for _ in range(samples):
        t = time.perf_counter()
        op()
        out.append(time.perf_counter() - t)
    return out


def bench_pull(workdir: Path, samples: int = 2_000, warmup: int = 200) -> list[float]:
    """One key of one task instance, read back ``samples`` times."""
    store = SqlXCom(workdir / f"baseline-pull-{time.monotonic_ns()}.db")
    try:
        store.add_run(DAG, RUN, [("extract", -1), ("load", -1)])
        store.push(DAG, RUN, "extract", "value", SMALL_STR)

        def pull() -> None:
            assert store.pull_one(DAG, RUN, "extract", "value") == SMALL_STR

        return _timed(pull, samples, warmup)
    finally:
        store.close()


def bench_fanin(workdir: Path, width: int = 1_000, samples: int = 200, warmup: int = 20) -> list[float]:
    """``return_value`` of map indexes 0..width-1 of task 'mapped', pulled in one IN query."""
    store = SqlXCom(workdir / f"baseline-fanin-{time.monotonic_ns()}.db")
    try:
        store.add_run(DAG, RUN, [("mapped", i) for i in range(width)] + [("reduce", -1)])
        for i in range(width):
            store.push(DAG, RUN, "mapped", "return_value", i, map_index=i)
        indexes = list(range(width))

        def pull() -> None:
            assert store.pull_many(DAG, RUN, "mapped", indexes) == indexes

        return _timed(pull, samples, warmup)
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="the Airflow-style SQLAlchemy/SQLite XCom baseline")
    parser.add_argument("--quick", action="store_true", help="fewer pushes (1,000 instead of 5,000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xcombus-baseline-") as tmp:
        push = bench_push(Path(tmp), 1_000 if args.quick else 5_000)
        lat = sorted(push["latencies"])
        print(f"pragmas: {push['pragmas']}")
        print(f"push throughput: {push['throughput']:,.0f} pushes/s; latency p50 "
              f"{lat[len(lat) // 2] * 1e3:.2f} ms, p99 {lat[int(len(lat) * 0.99)] * 1e3:.2f} ms")
        pull = bench_pull(Path(tmp))
        print(f"pull one key p50: {statistics.median(pull) * 1e3:.3f} ms")
        fan = bench_fanin(Path(tmp))
        print(f"fan-in over 1,000 map indexes p50: {statistics.median(fan) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
