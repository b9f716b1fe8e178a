"""An Airflow DAG (3.3 and 2.10) that hands a 2 MB value from one task to the next.

Above XCOMBUS_MAX_VALUE_BYTES a value cannot ride inside a Kafka event: with
XCOMBUS_XCOM_BACKEND=xcombus.backends.ObjectStorageXCom it is written to object storage and
the event (and Airflow's table, through the reference) carries only where it is.
"""

from __future__ import annotations

import datetime as dt
import hashlib

try:  # Airflow 3
    from airflow.sdk import dag, task
except ImportError:  # Airflow 2.10
    from airflow.decorators import dag, task

SIZE = 2 * 1024 * 1024


def payload() -> str:
    block = hashlib.sha256(b"xcombus").hexdigest()  # 64 characters, not one repeated byte
    return (block * (SIZE // len(block) + 1))[:SIZE]


@dag(dag_id="xcombus_large", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False,
     tags=["xcombus"])
def xcombus_large():
    @task
    def produce() -> str:
        return payload()

    @task
    def consume(value: str) -> int:
        if value != payload():
            raise AssertionError(f"the 2 MB value came back different ({len(value)} characters)")
        return len(value)

    consume(produce())


xcombus_large()
