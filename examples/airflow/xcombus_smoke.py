"""A small Airflow DAG (3.3 and 2.10): a push, a pull, a mapped fan-in and a retry.

Used to check a deployment end to end (scheduler, executor, task processes) and to see
what a misconfigured xcombus does to a task; ``xcombus_features`` covers every shape.
"""

from __future__ import annotations

import datetime as dt

try:  # Airflow 3
    from airflow.sdk import dag, get_current_context, task
except ImportError:  # Airflow 2.10
    from airflow.decorators import dag, task
    from airflow.operators.python import get_current_context


@dag(dag_id="xcombus_smoke", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False,
     tags=["xcombus"])
def xcombus_smoke():
    @task
    def produce() -> list:
        return [1, 2, 3, 4, 5]

    @task
    def double(n: int) -> int:
        return 2 * n

    @task
    def total(values) -> int:
        got = list(values)
        if got != [2, 4, 6, 8, 10]:
            raise AssertionError(f"mapped results: {got!r}")
        return sum(got)

    @task(retries=1, retry_delay=dt.timedelta(seconds=1))
    def flaky() -> str:
        ti = get_current_context()["ti"]
        if ti.try_number == 1:
            ti.xcom_push(key="checkpoint", value="job-123")
            raise RuntimeError("failing the first try on purpose")
        return "ok"

    @task
    def check(result: int, flaky_result: str) -> None:
        if (result, flaky_result) != (30, "ok"):
            raise AssertionError(f"got {(result, flaky_result)!r}")

    check(total(double.expand(n=produce())), flaky())


xcombus_smoke()
