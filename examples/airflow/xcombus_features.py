"""An ordinary Airflow DAG (Airflow 3.3 and 2.10) that exercises every way tasks use XComs.

Nothing here knows about xcombus: with AIRFLOW__CORE__XCOM_BACKEND=xcombus.airflow.XComBusBackend
every XCom it pushes becomes an event on Kafka, and every pull is served by xcombus. Each
consumer checks what it received and fails the run on any difference, so
``airflow dags test xcombus_features`` exits 0 only when every value round-tripped.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

try:  # Airflow 3
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.sdk import dag, get_current_context, task
except ImportError:  # Airflow 2.10
    from airflow.decorators import dag, task
    from airflow.operators.bash import BashOperator
    from airflow.operators.python import get_current_context

MAPPED = 100
BIG = 200 * 1024

RECORD = {
    "when": dt.datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC),
    "naive": dt.datetime(2026, 5, 6, 7, 8, 9),
    "day": dt.date(2026, 5, 6),
    "price": Decimal("1234.5678"),
    "pair": (1, "two"),
    "nested": {"t": (3, (4, 5)), "items": [1, 2.5, None, True]},
}


def _check(what: str, got: object, expected: object) -> None:
    if got != expected or type(got) is not type(expected):
        raise AssertionError(f"{what}: got {got!r} ({type(got).__name__}), expected {expected!r}")


@dag(dag_id="xcombus_features", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False,
     tags=["xcombus"], default_args={"retries": 0})
def xcombus_features():
    @task
    def typed_record() -> dict:
        return RECORD

    @task
    def check_record(record: dict) -> None:
        _check("typed record", record, RECORD)
        _check("tuple inside", record["nested"]["t"], (3, (4, 5)))
        _check("decimal", record["price"], Decimal("1234.5678"))

    @task(multiple_outputs=True)
    def split() -> dict:
        return {"rows": 42, "label": "forty-two"}

    @task
    def check_split(rows: int, label: str, whole: dict) -> None:
        _check("multiple_outputs rows", rows, 42)
        _check("multiple_outputs label", label, "forty-two")
        _check("multiple_outputs whole", whole, {"rows": 42, "label": "forty-two"})

    @task
    def items() -> list:
        return list(range(MAPPED))

    @task
    def square(n: int) -> dict:
        return {"n": n, "sq": n * n}

    @task
    def reduce(results) -> int:
        got = list(results)
        _check("mapped count", len(got), MAPPED)
        for i, item in enumerate(got):  # map-index order, nothing missing
            _check(f"mapped item {i}", item, {"n": i, "sq": i * i})
        return sum(item["sq"] for item in got)

    @task
    def check_total(total: int) -> None:
        _check("reduced total", total, sum(i * i for i in range(MAPPED)))

    bash = BashOperator(task_id="bash_push", bash_command="echo hello-from-bash")

    @task
    def explicit_push() -> None:
        ti = get_current_context()["ti"]
        ti.xcom_push(key="custom_key", value={"k": [1, 2], "t": (1, 2)})

    @task
    def explicit_pull() -> None:
        ti = get_current_context()["ti"]
        _check("custom key", ti.xcom_pull(task_ids="explicit_push", key="custom_key"),
               {"k": [1, 2], "t": (1, 2)})
        _check("bash auto-push", ti.xcom_pull(task_ids="bash_push"), "hello-from-bash")

    @task(retries=1, retry_delay=dt.timedelta(seconds=1))
    def flaky() -> str:
        ti = get_current_context()["ti"]
        ti.xcom_push(key="progress", value=f"try-{ti.try_number}")
        if ti.try_number == 1:
            ti.xcom_push(key="first_try_only", value="gone after the retry")
            raise RuntimeError("failing the first try on purpose")
        return f"ok-on-try-{ti.try_number}"

    @task
    def after_retry(result: str) -> None:
        ti = get_current_context()["ti"]
        _check("retry's return value", result, "ok-on-try-2")
        _check("retry's progress", ti.xcom_pull(task_ids="flaky", key="progress"), "try-2")
        _check("failed try's key", ti.xcom_pull(task_ids="flaky", key="first_try_only"), None)

    @task.branch
    def choose() -> str:  # Airflow's scheduler reads this decision from its own table
        return "left"

    @task
    def left() -> str:
        return "taken"

    @task
    def right() -> str:
        raise AssertionError("the branch not chosen ran")

    @task
    def big() -> str:
        return "x" * BIG

    @task
    def check_big(value: str) -> None:
        _check("200 KB value", value, "x" * BIG)

    check_record(typed_record())
    parts = split()
    check_split(parts["rows"], parts["label"], parts)
    check_total(reduce(square.expand(n=items())))
    explicit_push() >> bash >> explicit_pull()
    after_retry(flaky())
    check_big(big())
    choose() >> [left(), right()]


xcombus_features()
